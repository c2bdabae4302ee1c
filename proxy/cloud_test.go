package proxy

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/claudeflare/claudeflare/cloud"
	"github.com/claudeflare/claudeflare/config"
	"github.com/claudeflare/claudeflare/internal/fakeapi"
	"github.com/claudeflare/claudeflare/internal/fakecloud"
	"github.com/claudeflare/claudeflare/store"
	"github.com/claudeflare/claudeflare/vault"
)

func TestClassifyCloud(t *testing.T) {
	now := time.Now()
	for _, tc := range []struct {
		status     int
		code       string
		class      Class
		limited    bool
		keyRefused bool
	}{
		{429, "ThrottlingException", ClassLimited, true, false},
		{400, "ServiceQuotaExceededException", ClassLimited, true, false},
		{429, "RESOURCE_EXHAUSTED", ClassLimited, true, false},
		{429, "ModelNotReadyException", ClassTransient, false, false},
		{503, "ServiceUnavailableException", ClassTransient, false, false},
		{503, "UNAVAILABLE", ClassTransient, false, false},
		{408, "ModelTimeoutException", ClassTransient, false, false},
		{403, "InvalidSignatureException", ClassAccount, false, true},
		{403, "UnrecognizedClientException", ClassAccount, false, true},
		{403, "ExpiredTokenException", ClassAccount, false, true},
		{401, "UNAUTHENTICATED", ClassAccount, false, true},
		{403, "AccessDeniedException", ClassQuarantine, false, false},
		{403, "PERMISSION_DENIED", ClassQuarantine, false, false},
		{404, "ResourceNotFoundException", ClassScoped, false, false},
		{404, "NOT_FOUND", ClassScoped, false, false},
		{400, "ValidationException", ClassRequest, false, false},
		{400, "INVALID_ARGUMENT", ClassRequest, false, false},
		{500, "SomethingNew", ClassTransient, false, false},
	} {
		v := classify(answer{status: tc.status, header: http.Header{}, cloud: tc.code, message: "m"}, now)
		if v.Class != tc.class || v.Limited != tc.limited || v.KeyRefused != tc.keyRefused || !v.Learn {
			t.Errorf("%d %s: class %v limited %v key refused %v learn %v", tc.status, tc.code, v.Class, v.Limited, v.KeyRefused, v.Learn)
		}
		if v.Retry != (tc.class != ClassRequest && tc.class != ClassOK) {
			t.Errorf("%d %s: retry %v", tc.status, tc.code, v.Retry)
		}
		if tc.limited && !v.Until.IsZero() {
			t.Errorf("%d %s: a throttle names no reset, but until %v", tc.status, tc.code, v.Until)
		}
	}
	// Without a code, a 429 reads as Anthropic's (no rate-limit header:
	// request-scoped): the cloud code is what makes a throttle limit.
	if v := classify(answer{status: 429, header: http.Header{}}, now); v.Class != ClassScoped {
		t.Errorf("429 without a cloud code: %v", v.Class)
	}
}

// addCloud adds a cloud account to the harness's vault.
func (h *harness) addCloud(name, kind string, priority int, st cloud.Settings, key []byte) {
	h.t.Helper()
	doc, err := cloud.CheckKey(kind, key)
	if err != nil {
		h.t.Fatal(err)
	}
	if _, err := h.vault.AddAccount(context.Background(), vault.NewAccount{Name: name, Kind: kind, Priority: priority, Tier: 1,
		Upstream: st.JSON()}, vault.Secrets{CloudKey: doc}); err != nil {
		h.t.Fatal(err)
	}
}

// TestCloudAccountsTakeOverWhenAnthropicIsLimited: the Anthropic account
// answers 429 (unified limit); the request goes to the Bedrock account,
// then, with Bedrock throttled, to the Vertex account; the client gets
// Anthropic JSON and SSE with its model id, the log has the usage.
func TestCloudAccountsTakeOverWhenAnthropicIsLimited(t *testing.T) {
	h := newHarness(t)
	br := fakecloud.NewBedrock("us-east-1")
	defer br.Close()
	vx := fakecloud.NewVertex("claudeflare-test", "us-east5")
	defer vx.Close()
	h.addOAuth("anth", 0, false)
	h.addCloud("bed", store.KindBedrock, 1, cloud.Settings{Region: br.Region, Endpoint: br.URL}, br.Keys.JSON())
	h.addCloud("vtx", store.KindVertex, 2, cloud.Settings{Region: vx.Region, Project: vx.Project, Endpoint: vx.URL}, vx.KeyJSON())
	h.reload()
	reset := h.clock.Now().Add(3 * time.Hour)
	h.api.Inject(fakeapi.Fault{Account: "anth", Kind: fakeapi.FaultStatus, Status: 429, Headers: fakeapi.RateLimitHeaders("rejected", reset)})

	r := h.post(msgBody)
	if r.status != 200 {
		t.Fatalf("status %d: %s", r.status, r.body)
	}
	var m map[string]any
	json.Unmarshal(r.body, &m)
	if m["model"] != "claude-sonnet-4-5" || !strings.Contains(string(r.body), "Hello from bedrock.") {
		t.Fatalf("answer %s", r.body)
	}
	row := h.lastRow()
	if row.Account != "bed" || row.InputTokens != 31 || row.OutputTokens != 17 || row.Status != 200 {
		t.Errorf("row %+v", row)
	}
	if got := br.Requests(); len(got) != 1 || got[0].Rejects != "" {
		t.Fatalf("bedrock saw %+v", got)
	}

	r = h.post(streamBody)
	if r.status != 200 || !strings.Contains(string(r.body), "event: message_stop") || !strings.Contains(string(r.body), `"model":"claude-sonnet-4-5"`) {
		t.Fatalf("stream %d: %s", r.status, r.body)
	}
	if strings.Contains(string(r.body), cloud.BedrockMetricsField) {
		t.Error("Bedrock's metrics reached the client")
	}
	if row := h.lastRow(); row.Account != "bed" || row.OutputTokens != 17 || !row.Streamed {
		t.Errorf("stream row %+v", row)
	}

	// Bedrock throttles: the account cools down, Vertex answers.
	br.Throttle(1)
	r = h.post(streamBody)
	if r.status != 200 || !strings.Contains(string(r.body), "Hello ") || !strings.Contains(string(r.body), "vertex.") {
		t.Fatalf("after the throttle %d: %s", r.status, r.body)
	}
	if row := h.lastRow(); row.Account != "vtx" || strings.Join(row.AccountsTried, ",") != "bed,vtx" || row.OutputTokens != 17 {
		t.Errorf("row %+v", row)
	}
	if l := h.limit("bed"); !l.Blocked(h.clock.Now()) {
		t.Errorf("bedrock not resting after a ThrottlingException: %+v", l)
	}
	r = h.post(msgBody)
	if r.status != 200 || !strings.Contains(string(r.body), "Hello from vertex.") {
		t.Fatalf("vertex JSON %d: %s", r.status, r.body)
	}

	// count_tokens: Vertex cannot; with Bedrock resting, no account can.
	// Nothing secret in the logs either way.
	h.do(context.Background(), http.MethodPost, "/v1/messages/count_tokens", msgBody, nil)
	logs := h.logs.String()
	for _, s := range append([]string{br.Keys.SecretAccessKey, br.Keys.SessionToken, "PRIVATE KEY"}, vx.Tokens()...) {
		if strings.Contains(logs, s) {
			t.Errorf("a cloud secret is in the log: %q", s[:10])
		}
	}
}

// TestCloudKeyRefused: Bedrock refusing the signature marks the account
// key_refused and the request moves on.
func TestCloudKeyRefused(t *testing.T) {
	h := newHarness(t)
	br := fakecloud.NewBedrock("us-east-1")
	defer br.Close()
	bad := br.Keys
	bad.SecretAccessKey = "not" + bad.SecretAccessKey
	h.addCloud("bed", store.KindBedrock, 0, cloud.Settings{Region: br.Region, Endpoint: br.URL}, bad.JSON())
	h.addAPIKey("k", 1)
	h.reload()
	r := h.post(msgBody)
	if r.status != 200 {
		t.Fatalf("status %d: %s", r.status, r.body)
	}
	if row := h.lastRow(); row.Account != "k" {
		t.Errorf("answered by %s", row.Account)
	}
	waitFor(t, "bed key_refused", func() bool { return h.account("bed").Status == store.StatusKeyRefused })
	if strings.Contains(h.logs.String(), bad.SecretAccessKey) {
		t.Error("the secret key is in the log")
	}
}

func TestCloudCountTokensOnBedrock(t *testing.T) {
	h := newHarness(t, withConfig(func(c *config.Config) {
		c.Cloud.BedrockModels = config.ModelMap{"claude-sonnet-4-5": "us.anthropic.claude-sonnet-4-5-20250929-v1:0"}
	}))
	br := fakecloud.NewBedrock("us-east-1")
	defer br.Close()
	h.addCloud("bed", store.KindBedrock, 0, cloud.Settings{Region: br.Region, Endpoint: br.URL}, br.Keys.JSON())
	h.reload()
	r := h.do(context.Background(), http.MethodPost, "/v1/messages/count_tokens", `{"model":"claude-sonnet-4-5","messages":[{"role":"user","content":"hi"}]}`, nil)
	if r.status != 200 || string(r.body) != `{"input_tokens":31}` {
		t.Fatalf("count_tokens %d: %s", r.status, r.body)
	}
	if got := br.Requests(); len(got) != 1 || got[0].Model != "us.anthropic.claude-sonnet-4-5-20250929-v1:0" || got[0].Op != "count-tokens" {
		t.Errorf("bedrock saw %+v (the config's model table not used?)", got)
	}
}

// A request a cloud account cannot serve skips it: another account
// answers, or, with none, a 503 that says why; the cloud account is not
// tried and does not rest.
func TestCloudSkipsWhatItCannotServe(t *testing.T) {
	h := newHarness(t)
	vx := fakecloud.NewVertex("claudeflare-test", "us-east5")
	defer vx.Close()
	h.addCloud("vtx", store.KindVertex, 0, cloud.Settings{Region: vx.Region, Project: vx.Project, Endpoint: vx.URL}, vx.KeyJSON())
	h.reload()
	r := h.do(context.Background(), http.MethodPost, "/v1/messages/count_tokens", msgBody, nil)
	if r.status != http.StatusServiceUnavailable || !strings.Contains(string(r.body), "serve /v1/messages only") {
		t.Fatalf("count_tokens with only a Vertex account: %d %s", r.status, r.body)
	}
	h.addAPIKey("k", 1)
	h.reload()
	// A model's page (GET /v1/models itself is the proxy's own list, models.go).
	r = h.do(context.Background(), http.MethodGet, "/v1/models/claude-sonnet-4-5", "", nil)
	if r.status != 200 || h.lastRow().Account != "k" || strings.Join(h.lastRow().AccountsTried, ",") != "k" {
		t.Fatalf("/v1/models/claude-sonnet-4-5: %d %s, row %+v", r.status, r.body, h.lastRow())
	}
	if len(vx.Requests()) != 0 || vx.Grants() != 0 {
		t.Error("the Vertex account was tried")
	}
	if h.limit("vtx").Blocked(h.clock.Now()) {
		t.Error("the Vertex account rests")
	}
}

// A Bedrock stream that ends in a throttlingException: the client has
// the events so far and an Anthropic error event; the account rests.
func TestCloudInStreamThrottle(t *testing.T) {
	h := newHarness(t)
	br := fakecloud.NewBedrock("us-east-1")
	defer br.Close()
	h.addCloud("bed", store.KindBedrock, 0, cloud.Settings{Region: br.Region, Endpoint: br.URL}, br.Keys.JSON())
	h.reload()
	br.StreamException("throttlingException")
	r := h.post(streamBody)
	if r.status != 200 || !strings.Contains(string(r.body), "event: message_start") ||
		!strings.Contains(string(r.body), "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"rate_limit_error\"") {
		t.Fatalf("stream %d: %s", r.status, r.body)
	}
	if l := h.limit("bed"); !l.Blocked(h.clock.Now()) {
		t.Errorf("bedrock not resting after an in-stream throttle: %+v", l)
	}
}
