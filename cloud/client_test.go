package cloud_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/claudeflare/claudeflare/cloud"
	"github.com/claudeflare/claudeflare/internal/fakecloud"
)

const askModel = "claude-sonnet-4-5-20250929"

func msgBody(stream bool) []byte {
	b, _ := json.Marshal(map[string]any{"model": askModel, "max_tokens": 64, "stream": stream,
		"messages": []any{map[string]any{"role": "user", "content": "hi"}}})
	return b
}

func betaHeader() http.Header {
	h := http.Header{}
	h.Set("Anthropic-Beta", "oauth-2025-04-20, interleaved-thinking-2025-05-14")
	h.Add("Anthropic-Beta", "claude-code-20250219")
	h.Set("X-Api-Key", "client-key-not-forwarded")
	return h
}

func bedrockClient(t *testing.T, f *fakecloud.Bedrock, keys fakecloud.AWSKeys) *cloud.Client {
	t.Helper()
	key, err := cloud.CheckKey(cloud.Bedrock, keys.JSON())
	if err != nil {
		t.Fatal(err)
	}
	c, err := cloud.New(cloud.Bedrock, cloud.Settings{Region: f.Region, Endpoint: f.URL}, key, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// sseEvents reads an SSE body into its event names and data lines.
func sseEvents(t *testing.T, r io.Reader) (names []string, data []map[string]any) {
	t.Helper()
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		if n, ok := strings.CutPrefix(line, "event: "); ok {
			names = append(names, n)
		}
		if d, ok := strings.CutPrefix(line, "data: "); ok {
			var m map[string]any
			if err := json.Unmarshal([]byte(d), &m); err != nil {
				t.Fatalf("data line %q: %v", d, err)
			}
			data = append(data, m)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return names, data
}

func TestBedrockInvokeJSONAndStream(t *testing.T) {
	f := fakecloud.NewBedrock("us-west-2")
	defer f.Close()
	c := bedrockClient(t, f, f.Keys)
	ctx := context.Background()

	resp, code, err := c.Do(ctx, cloud.MessagesRoute, betaHeader(), msgBody(false))
	if err != nil || code != "" || resp.StatusCode != 200 {
		t.Fatalf("invoke: %v %q %v", resp, code, err)
	}
	var msg map[string]any
	json.NewDecoder(resp.Body).Decode(&msg)
	resp.Body.Close()
	if msg["model"] != askModel || msg["type"] != "message" || msg["usage"].(map[string]any)["output_tokens"] != 17.0 {
		t.Errorf("invoke answer: %v", msg)
	}
	got := f.Requests()
	if len(got) != 1 || got[0].Rejects != "" || got[0].Op != "invoke" || got[0].Model != "anthropic.claude-sonnet-4-5-20250929-v1:0" {
		t.Fatalf("fake saw %+v", got)
	}
	if b := got[0].Body["anthropic_beta"]; len(b.([]any)) != 1 || b.([]any)[0] != "interleaved-thinking-2025-05-14" {
		t.Errorf("anthropic_beta in the body: %v", b)
	}
	if got[0].Header.Get("X-Api-Key") != "" || got[0].Header.Get("Anthropic-Beta") != "" {
		t.Errorf("client headers reached Bedrock: %v", got[0].Header)
	}

	resp, code, err = c.Do(ctx, cloud.MessagesRoute, betaHeader(), msgBody(true))
	if err != nil || code != "" || resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		t.Fatalf("stream: %v %q %v", resp, code, err)
	}
	names, data := sseEvents(t, resp.Body)
	resp.Body.Close()
	want := "message_start content_block_start content_block_delta content_block_delta content_block_delta content_block_stop message_delta message_stop"
	if strings.Join(names, " ") != want {
		t.Fatalf("events %v, want %s", names, want)
	}
	if m := data[0]["message"].(map[string]any); m["model"] != askModel {
		t.Errorf("message_start model %v", m["model"])
	}
	if _, ok := data[len(data)-1][cloud.BedrockMetricsField]; ok {
		t.Error("Bedrock's metrics field reached the client")
	}
	if got := f.Requests(); got[1].Op != "invoke-with-response-stream" || got[1].Rejects != "" {
		t.Errorf("stream request: %+v", got[1])
	}
}

func TestBedrockSignatureChecked(t *testing.T) {
	f := fakecloud.NewBedrock("us-east-1")
	defer f.Close()
	bad := f.Keys
	bad.SecretAccessKey = "wrong" + bad.SecretAccessKey
	resp, code, err := bedrockClient(t, f, bad).Do(context.Background(), cloud.MessagesRoute, nil, msgBody(false))
	if err != nil || resp.StatusCode != http.StatusForbidden || code != "InvalidSignatureException" {
		t.Fatalf("wrong secret: %v %q %v", resp, code, err)
	}
	b, _ := io.ReadAll(resp.Body)
	if !strings.Contains(string(b), `"authentication_error"`) || strings.Contains(string(b), bad.SecretAccessKey) {
		t.Errorf("error body %s", b)
	}
}

func TestBedrockErrorsAndCountTokens(t *testing.T) {
	f := fakecloud.NewBedrock("eu-central-1")
	defer f.Close()
	c := bedrockClient(t, f, f.Keys)
	ctx := context.Background()
	f.Throttle(1)
	resp, code, err := c.Do(ctx, cloud.MessagesRoute, nil, msgBody(false))
	if err != nil || resp.StatusCode != 429 || code != "ThrottlingException" {
		t.Fatalf("throttled: %v %q %v", resp, code, err)
	}
	var e struct {
		Type  string
		Error struct{ Type, Message string }
	}
	json.NewDecoder(resp.Body).Decode(&e)
	if e.Type != "error" || e.Error.Type != "rate_limit_error" || !strings.Contains(e.Error.Message, "Too many requests") {
		t.Errorf("throttle body %+v", e)
	}

	resp, _, err = c.Do(ctx, cloud.CountTokensRoute, nil, []byte(`{"model":"`+askModel+`","messages":[{"role":"user","content":"hi"}]}`))
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("count tokens: %v %v", resp, err)
	}
	b, _ := io.ReadAll(resp.Body)
	if string(b) != `{"input_tokens":31}` {
		t.Errorf("count tokens answer %s", b)
	}

	f.StreamException("throttlingException")
	resp, _, err = c.Do(ctx, cloud.MessagesRoute, nil, msgBody(true))
	if err != nil {
		t.Fatal(err)
	}
	names, data := sseEvents(t, resp.Body)
	if names[len(names)-1] != "error" || data[len(data)-1]["error"].(map[string]any)["type"] != "rate_limit_error" {
		t.Errorf("in-stream exception became %v %v", names, data[len(data)-1])
	}

	if _, _, err := c.Do(ctx, "/v1/models", nil, nil); !errors.Is(err, cloud.ErrUnsupported) {
		t.Errorf("/v1/models: %v", err)
	}
}

func vertexClient(t *testing.T, f *fakecloud.Vertex, keyJSON []byte) *cloud.Client {
	t.Helper()
	key, err := cloud.CheckKey(cloud.Vertex, keyJSON)
	if err != nil {
		t.Fatal(err)
	}
	c, err := cloud.New(cloud.Vertex, cloud.Settings{Region: f.Region, Project: f.Project, Endpoint: f.URL}, key, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestVertexRawPredictAndStream(t *testing.T) {
	f := fakecloud.NewVertex("claudeflare-test", "us-east5")
	defer f.Close()
	c := vertexClient(t, f, f.KeyJSON())
	ctx := context.Background()
	resp, code, err := c.Do(ctx, cloud.MessagesRoute, betaHeader(), msgBody(false))
	if err != nil || code != "" || resp.StatusCode != 200 {
		t.Fatalf("rawPredict: %v %q %v", resp, code, err)
	}
	var msg map[string]any
	json.NewDecoder(resp.Body).Decode(&msg)
	if msg["model"] != askModel || msg["content"].([]any)[0].(map[string]any)["text"] != "Hello from vertex." {
		t.Errorf("rawPredict answer %v", msg)
	}
	resp, _, err = c.Do(ctx, cloud.MessagesRoute, betaHeader(), msgBody(true))
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("streamRawPredict: %v %v", resp, err)
	}
	names, data := sseEvents(t, resp.Body)
	if len(names) != 8 || names[0] != "message_start" || data[0]["message"].(map[string]any)["model"] != askModel {
		t.Errorf("stream %v %v", names, data[0])
	}
	got := f.Requests()
	if len(got) != 2 || got[0].Rejects != "" || got[1].Rejects != "" || got[0].Model != "claude-sonnet-4-5@20250929" || got[1].Op != "streamRawPredict" {
		t.Fatalf("fake saw %+v", got)
	}
	if got[0].Header.Get("Anthropic-Beta") != "interleaved-thinking-2025-05-14,claude-code-20250219" {
		t.Errorf("anthropic-beta to Vertex: %q", got[0].Header.Get("Anthropic-Beta"))
	}
	if f.Grants() != 1 {
		t.Errorf("%d token grants for two requests: the token is not cached", f.Grants())
	}
	secrets := strings.Join(c.Secrets(), "\n")
	if !strings.Contains(secrets, f.Tokens()[0]) || !strings.Contains(secrets, "PRIVATE KEY") {
		t.Error("Secrets() lacks the access token or the key (the proxy scrubs with it)")
	}

	// A token revoked before its expiry: one new token, one more try.
	f.RevokeTokens()
	resp, code, err = c.Do(ctx, cloud.MessagesRoute, nil, msgBody(false))
	if err != nil || resp.StatusCode != 200 || code != "" || f.Grants() != 2 {
		t.Fatalf("after a revocation: %v %q %v, %d grants", resp, code, err, f.Grants())
	}

	f.Exhaust(1)
	resp, code, err = c.Do(ctx, cloud.MessagesRoute, nil, msgBody(false))
	if err != nil || resp.StatusCode != 429 || code != "RESOURCE_EXHAUSTED" {
		t.Fatalf("exhausted: %v %q %v", resp, code, err)
	}
	if _, _, err := c.Do(ctx, cloud.CountTokensRoute, nil, msgBody(false)); !errors.Is(err, cloud.ErrUnsupported) {
		t.Errorf("count_tokens on Vertex: %v", err)
	}
}

func TestVertexKeyRefused(t *testing.T) {
	f := fakecloud.NewVertex("claudeflare-test", "us-east5")
	defer f.Close()
	other := fakecloud.NewVertex("claudeflare-test", "us-east5")
	defer other.Close()
	// other's key, f's token endpoint: the assertion's signature is wrong.
	var doc map[string]any
	json.Unmarshal(other.KeyJSON(), &doc)
	doc["token_uri"] = f.URL + fakecloud.VertexTokenPath
	doc["client_email"] = f.Email
	kj, _ := json.Marshal(doc)
	resp, code, err := vertexClient(t, f, kj).Do(context.Background(), cloud.MessagesRoute, nil, msgBody(false))
	if err != nil || resp.StatusCode != 401 || code != "UNAUTHENTICATED" {
		t.Fatalf("wrong key: %v %q %v", resp, code, err)
	}
	if len(f.Requests()) != 0 {
		t.Error("a request went out without a token")
	}
}

func TestCheckKeyErrorsHoldNoSecret(t *testing.T) {
	const secret = "SECRETxyz123"
	for _, tc := range []struct{ kind, doc, want string }{
		{cloud.Bedrock, `{"access_key_id":"AKIA1","secret_access_key":"` + secret + ` x"}`, "one line without spaces"},
		{cloud.Bedrock, `{"access_key_id":"AKIA1"}`, "no secret_access_key"},
		{cloud.Bedrock, `{"access_key_id":"AKIA1","secret_access_key":"` + secret + `","extra":"` + secret + `"}`, "nothing else"},
		{cloud.Bedrock, `not json ` + secret, "not a JSON object"},
		{cloud.Bedrock, ``, "no credentials"},
		{cloud.Vertex, `{"type":"authorized_user","private_key":"` + secret + `"}`, "not a service-account key"},
		{cloud.Vertex, `{"type":"service_account","client_email":"a@b","private_key":"` + secret + `","token_uri":"https://oauth2.googleapis.com/token"}`, "not PEM"},
		{cloud.Vertex, `{"type":"service_account","client_email":"a@b","private_key":"` + secret + `","token_uri":"http://evil.example/token"}`, "token_uri"},
	} {
		_, err := cloud.CheckKey(tc.kind, []byte(tc.doc))
		if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), secret) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s %s: %v (want %q, no secret, one line)", tc.kind, tc.doc, err, tc.want)
		}
	}
}

func TestSettingsAndModels(t *testing.T) {
	for _, tc := range []struct {
		kind string
		st   cloud.Settings
		ok   bool
	}{
		{cloud.Bedrock, cloud.Settings{Region: "us-east-1"}, true},
		{cloud.Bedrock, cloud.Settings{}, false},
		{cloud.Bedrock, cloud.Settings{Region: "US East"}, false},
		{cloud.Bedrock, cloud.Settings{Region: "us-east-1", Endpoint: "http://bedrock.example"}, false},
		{cloud.Bedrock, cloud.Settings{Region: "us-east-1", Endpoint: "http://127.0.0.1:9"}, true},
		{cloud.Vertex, cloud.Settings{Region: "us-east5"}, false},
		{cloud.Vertex, cloud.Settings{Region: "global", Project: "my-project-1"}, true},
	} {
		if err := tc.st.Check(tc.kind); (err == nil) != tc.ok {
			t.Errorf("%s %+v: %v", tc.kind, tc.st, err)
		}
	}
	if u := (cloud.Settings{Region: "eu-west-3"}).BaseURL(cloud.Bedrock); u != "https://bedrock-runtime.eu-west-3.amazonaws.com" {
		t.Error(u)
	}
	if u := (cloud.Settings{Region: "europe-west1", Project: "p"}).BaseURL(cloud.Vertex); u != "https://europe-west1-aiplatform.googleapis.com" {
		t.Error(u)
	}
	m := cloud.NewModels(map[string]string{"claude-sonnet-4-5": "us.anthropic.claude-sonnet-4-5-20250929-v1:0"}, map[string]string{"my-alias": "claude-opus-4-5@20251101"})
	for _, tc := range []struct{ kind, in, want string }{
		{cloud.Bedrock, "claude-sonnet-4-5", "us.anthropic.claude-sonnet-4-5-20250929-v1:0"},
		{cloud.Bedrock, "claude-haiku-4-5-20251001", "anthropic.claude-haiku-4-5-20251001-v1:0"},
		{cloud.Bedrock, "claude-new-9-20300101", "anthropic.claude-new-9-20300101-v1:0"},
		{cloud.Bedrock, "eu.anthropic.claude-x-v1:0", "eu.anthropic.claude-x-v1:0"},
		{cloud.Vertex, "my-alias", "claude-opus-4-5@20251101"},
		{cloud.Vertex, "claude-sonnet-4-5", "claude-sonnet-4-5@20250929"},
		{cloud.Vertex, "claude-new-9-20300101", "claude-new-9@20300101"},
	} {
		if got := m.ID(tc.kind, tc.in); got != tc.want {
			t.Errorf("%s %s: %s, want %s", tc.kind, tc.in, got, tc.want)
		}
	}
}
