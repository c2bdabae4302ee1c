package proxy

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"reflect"
	"strings"
	"testing"

	"github.com/claudeflare/claudeflare/config"
	"github.com/claudeflare/claudeflare/internal/apierr"
	"github.com/claudeflare/claudeflare/internal/fakeapi"
	"github.com/claudeflare/claudeflare/store"
)

func TestForwardJSON(t *testing.T) {
	h := newHarness(t)
	h.addOAuth("work", 0, false)
	h.reload()

	rep := h.do(context.Background(), http.MethodPost, "/v1/messages?beta=true", msgBody, http.Header{
		"Authorization":   {"Bearer client-secret"},
		"X-Api-Key":       {"client-key"},
		"Anthropic-Beta":  {"claude-code-20250219"},
		"Accept-Encoding": {"gzip, deflate, br, zstd"},
	})
	if rep.err != nil || rep.status != 200 {
		t.Fatalf("status %d err %v: %s", rep.status, rep.err, rep.body)
	}
	id := rep.header.Get("X-Claudeflare-Request-Id")
	if len(id) != 26 {
		t.Fatalf("request id %q", id)
	}
	if rep.header.Get("Request-Id") == "" {
		t.Fatal("upstream headers not passed through")
	}
	var msg struct {
		Model string `json:"model"`
		Usage struct {
			InputTokens int `json:"input_tokens"`
		} `json:"usage"`
	}
	if err := json.Unmarshal(rep.body, &msg); err != nil || msg.Usage.InputTokens != fakeapi.DefaultUsage.InputTokens {
		t.Fatalf("body: %s", rep.body)
	}
	if !bytes.Equal(rep.body, h.tee.bodies[0].Bytes()) {
		t.Fatal("body differs from the upstream's")
	}

	reqs := h.apiRequests()
	if len(reqs) != 1 {
		t.Fatalf("%d upstream requests", len(reqs))
	}
	up := reqs[0]
	if up.RawQuery != "beta=true" || up.Account != "work" || up.Status != 200 {
		t.Fatalf("upstream saw %+v", up)
	}
	if got := up.Header.Get("Authorization"); !strings.HasPrefix(got, "Bearer sk-ant-oat01-") {
		t.Fatalf("authorization %q", got)
	}
	if up.Header.Get("X-Api-Key") != "" {
		t.Fatal("client x-api-key forwarded")
	}
	if got := up.Header.Get("Anthropic-Beta"); got != "claude-code-20250219,"+OAuthBeta {
		t.Fatalf("anthropic-beta %q", got)
	}
	if ae := up.Header.Get("Accept-Encoding"); strings.Contains(ae, "br") || strings.Contains(ae, "zstd") {
		t.Fatalf("client accept-encoding forwarded: %q", ae)
	}
	if string(up.Body) != msgBody {
		t.Fatal("body changed")
	}

	row := h.lastRow()
	// claude-sonnet-4-5: $3 in, $15 out, $0.30 cache reads, $3.75 cache writes (5m: the answer did not split them).
	cost := (25*3 + 12*15 + 50*3.75 + 100*0.30) / 1e6
	want := store.Request{ID: id, Method: "POST", Path: "/v1/messages?beta=true", Model: "claude-sonnet-4-5", Account: "work",
		Status: 200, Attempts: 1, InputTokens: 25, OutputTokens: 12, CacheReadInputTokens: 100, CacheCreationInputTokens: 50,
		EndState: EndComplete, AccountsTried: store.Names{"work"}, CostUSD: &cost}
	if row.UpstreamRequestID == "" || len(row.Session) != 12 {
		t.Errorf("upstream request id %q, session %q", row.UpstreamRequestID, row.Session)
	}
	row.Seq, row.TS, row.DurationMS, row.TTFBMS, row.Client, row.UpstreamRequestID, row.Session = 0, 0, 0, 0, "", "", ""
	if !reflect.DeepEqual(row, want) {
		t.Fatalf("row\n got %+v\nwant %+v", row, want)
	}

	// The payload is sealed, redacted and complete.
	var p struct {
		KeyID     int64  `db:"key_id"`
		Sealed    []byte `db:"sealed"`
		Truncated bool   `db:"truncated"`
	}
	if err := h.ldb.R.Get(&p, `SELECT key_id, sealed, truncated FROM payloads`); err != nil {
		t.Fatal(err)
	}
	plain, err := h.vault.OpenPayload(p.KeyID, id, p.Sealed)
	if err != nil {
		t.Fatal(err)
	}
	c, err := store.UnmarshalCapture(plain)
	if err != nil {
		t.Fatal(err)
	}
	if c.Request.Headers["Authorization"][0] != Redacted || c.Request.Headers["X-Api-Key"][0] != Redacted {
		t.Fatalf("credentials not redacted: %v", c.Request.Headers)
	}
	if string(c.Request.Body) != msgBody || !bytes.Equal(c.Response.Body, rep.body) || c.Response.Status != 200 || p.Truncated {
		t.Fatalf("capture: %+v", c)
	}
}

func TestGzipUpstreamPlainToClient(t *testing.T) {
	h := newHarness(t)
	h.addAPIKey("pool", 0)
	h.reload()
	h.api.SetContentEncoding("gzip")
	rep := h.do(context.Background(), http.MethodPost, "/v1/messages", msgBody, http.Header{"Accept-Encoding": {"gzip, deflate, br, zstd"}})
	if rep.status != 200 || rep.header.Get("Content-Encoding") != "" || !json.Valid(rep.body) {
		t.Fatalf("status %d encoding %q body %q", rep.status, rep.header.Get("Content-Encoding"), rep.body)
	}
	if up := h.apiRequests()[0]; up.Header.Get("X-Api-Key") == "" || up.Header.Get("Authorization") != "" {
		t.Fatalf("api key account headers: %v", up.Header)
	}
	if row := h.lastRow(); row.InputTokens != 25 || row.OutputTokens != 12 {
		t.Fatalf("usage lost under gzip: %+v", row)
	}
}

func TestSSEByteIdentical(t *testing.T) {
	h := newHarness(t)
	h.addOAuth("work", 0, false)
	h.reload()
	h.api.SetStreamShape(50, 100)
	h.api.SetUsage(fakeapi.Usage{InputTokens: 7, OutputTokens: 321, CacheReadInputTokens: 3, CacheCreationInputTokens: 4})
	rep := h.post(streamBody)
	if rep.status != 200 || !strings.HasPrefix(rep.header.Get("Content-Type"), "text/event-stream") {
		t.Fatalf("status %d %v", rep.status, rep.header)
	}
	if up := h.tee.bodies[0].Bytes(); !bytes.Equal(rep.body, up) {
		t.Fatalf("stream differs: got %d bytes, upstream %d", len(rep.body), len(up))
	}
	row := h.lastRow()
	if !row.Streamed || row.EndState != EndComplete || row.InputTokens != 7 || row.OutputTokens != 321 ||
		row.CacheReadInputTokens != 3 || row.CacheCreationInputTokens != 4 || row.Model != "claude-sonnet-4-5" {
		t.Fatalf("row %+v", row)
	}
}

func TestRootAndHealth(t *testing.T) {
	h := newHarness(t)
	h.addOAuth("work", 0, false)
	h.reload()
	for _, m := range []string{http.MethodGet, http.MethodHead} {
		rep := h.do(context.Background(), m, "/", "", nil)
		if rep.status != 200 || rep.header.Get("X-Claudeflare-Request-Id") == "" {
			t.Fatalf("%s /: %d", m, rep.status)
		}
	}
	rep := h.do(context.Background(), http.MethodGet, "/health", "", nil)
	var hr healthReply
	if err := json.Unmarshal(rep.body, &hr); err != nil || rep.status != 200 || hr.Status != "ok" || hr.Accounts != 1 || hr.UsableAccounts != 1 {
		t.Fatalf("health %d %s", rep.status, rep.body)
	}
	if len(h.apiRequests()) != 0 {
		t.Fatal("root or health reached the upstream")
	}
}

func TestBodyTooLarge(t *testing.T) {
	h := newHarness(t, withConfig(func(c *config.Config) { c.Server.MaxBodyBytes = 1000 }))
	h.addOAuth("work", 0, false)
	h.reload()
	rep := h.post(`{"pad":"` + strings.Repeat("x", 2000) + `"}`)
	if rep.status != http.StatusRequestEntityTooLarge || decodeError(t, rep.body).Error.Type != apierr.TooLarge {
		t.Fatalf("%d %s", rep.status, rep.body)
	}
	// The proxy's own answer on /v1/* carries the security headers, as
	// the guard's refusals there do (the upstream's answers do not).
	for k, v := range map[string]string{"X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer", "X-Should-Retry": "false"} {
		if got := rep.header.Get(k); got != v {
			t.Errorf("%s = %q, want %q", k, got, v)
		}
	}
	if len(h.apiRequests()) != 0 {
		t.Fatal("oversized body forwarded")
	}
}
