package proxy

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/claudeflare/claudeflare/config"
	"github.com/claudeflare/claudeflare/internal/fakeapi"
)

// withRelay makes a request a relay request when its x-claudeflare-key
// is "cf_relay" (the daemon asks the access guard instead).
func withRelay(h *harness) {
	h.beforeServe = func(s *Server) {
		s.relayOf = func(r *http.Request) bool { return r.Header.Get("X-Claudeflare-Key") == "cf_relay" }
	}
}

const relayBody = `{"model":"claude-sonnet-4-5","max_tokens":10,"messages":[{"role":"user","content":"hi"}]}`

// A relay request goes upstream with the client's own credentials,
// exactly as sent (bearer with its own anthropic-beta, or x-api-key),
// never with the pool's, and without the client key header; the row names
// the account "relay". A request without a relay key on the same server
// is served from the pool.
func TestRelayForwardsTheClientsOwnCredentials(t *testing.T) {
	h := newHarness(t, withRelay)
	h.addOAuth("pool", 0, false)
	h.reload()
	poolTok := h.api.CurrentAccessToken("pool")
	devTok := h.api.NewAccessToken("dev")
	devKey := h.api.NewAPIKey("dev-api")

	for _, tc := range []struct {
		name, header, value, account string
	}{
		{"bearer", "Authorization", "Bearer " + devTok, "dev"},
		{"api key", "X-Api-Key", devKey, "dev-api"},
	} {
		h.api.ResetRequests()
		beta := "claude-code-20250219,oauth-2025-04-20,interleaved-thinking-2025-05-14"
		r := h.do(context.Background(), http.MethodPost, "/v1/messages?beta=true", relayBody, http.Header{
			"X-Claudeflare-Key": {"cf_relay"}, tc.header: {tc.value}, "Anthropic-Beta": {beta},
		})
		if r.status != http.StatusOK {
			t.Fatalf("%s: status %d %s", tc.name, r.status, r.body)
		}
		got := h.apiRequests()
		if len(got) != 1 {
			t.Fatalf("%s: the fake saw %d requests", tc.name, len(got))
		}
		up := got[0]
		if up.Account != tc.account || up.Header.Get(tc.header) != tc.value {
			t.Fatalf("%s: the fake saw account %q, %s %q", tc.name, up.Account, tc.header, up.Header.Get(tc.header))
		}
		for k, vs := range up.Header {
			for _, v := range vs {
				if strings.Contains(v, poolTok) || strings.Contains(v, "cf_relay") {
					t.Fatalf("%s: upstream header %s carries the pool's token or the client key", tc.name, k)
				}
			}
		}
		if tc.header == "Authorization" && up.Header.Get("X-Api-Key") != "" || tc.header == "X-Api-Key" && up.Header.Get("Authorization") != "" {
			t.Fatalf("%s: a credential the client did not send went upstream: %v", tc.name, up.Header)
		}
		if g := up.Header.Values("Anthropic-Beta"); len(g) != 1 || g[0] != beta {
			t.Fatalf("%s: anthropic-beta %q, want the client's %q", tc.name, g, beta)
		}
		row := h.lastRow()
		if row.Account != RelayAccount || row.Status != 200 || row.Attempts != 1 || row.OutputTokens == 0 {
			t.Fatalf("%s: row %+v", tc.name, row)
		}
	}

	// Mixed: a request without the relay key is the pool's.
	h.api.ResetRequests()
	if r := h.post(relayBody); r.status != http.StatusOK {
		t.Fatalf("pooled: %d %s", r.status, r.body)
	}
	if got := h.apiRequests(); len(got) != 1 || got[0].Account != "pool" || got[0].Header.Get("Authorization") != "Bearer "+poolTok {
		t.Fatalf("pooled request: %+v", got)
	}
	if row := h.lastRow(); row.Account != "pool" {
		t.Fatalf("pooled row account %q", row.Account)
	}
}

// A relay request without the client's own credentials is refused (401,
// x-should-retry false) and never reaches the upstream with the pool's;
// one that repeats the client key as its bearer has none either.
func TestRelayWithoutCredentialsIsRefused(t *testing.T) {
	h := newHarness(t, withRelay)
	h.addOAuth("pool", 0, false)
	h.reload()
	for _, hdr := range []http.Header{
		{"X-Claudeflare-Key": {"cf_relay"}},
		{"X-Claudeflare-Key": {"cf_relay"}, "Authorization": {"Bearer cf_relay"}},
		{"X-Claudeflare-Key": {"cf_relay"}, "Authorization": {"Basic abc"}, "X-Api-Key": {" "}},
		// Another client key is not the developer's credential: it must
		// never reach Anthropic.
		{"X-Claudeflare-Key": {"cf_relay"}, "X-Api-Key": {"cf_otherclientkey0123456789"}},
		{"X-Claudeflare-Key": {"cf_relay"}, "Authorization": {"Bearer cf_otherclientkey0123456789"}},
	} {
		h.api.ResetRequests()
		r := h.do(context.Background(), http.MethodPost, "/v1/messages", relayBody, hdr)
		if r.status != http.StatusUnauthorized || r.header.Get("X-Should-Retry") != "false" {
			t.Fatalf("%v: status %d, x-should-retry %q", hdr, r.status, r.header.Get("X-Should-Retry"))
		}
		if e := decodeError(t, r.body); e.Error.Type != "authentication_error" || !strings.Contains(e.Error.Message, "relay key") {
			t.Fatalf("%v: %+v", hdr, e)
		}
		if got := h.apiRequests(); len(got) != 0 {
			t.Fatalf("%v: the upstream was asked: %+v", hdr, got)
		}
		if row := h.lastRow(); row.Account != RelayAccount || row.Status != 401 {
			t.Fatalf("row %+v", row)
		}
	}
}

// The developer's refused token is the developer's business: the 401
// passes through once (x-should-retry false), no pool account is tried,
// rested or refreshed, and the token is scrubbed from what is kept.
func TestRelayRefusedTokenFailsOverToNothing(t *testing.T) {
	h := newHarness(t, withRelay)
	h.addOAuth("pool", 0, false)
	h.reload()
	devTok := h.api.NewAccessToken("dev")
	h.api.RefuseAccessTokens("dev")
	r := h.do(context.Background(), http.MethodPost, "/v1/messages", relayBody, http.Header{
		"X-Claudeflare-Key": {"cf_relay"}, "Authorization": {"Bearer " + devTok}, "Anthropic-Beta": {OAuthBeta},
	})
	if r.status != http.StatusUnauthorized || r.header.Get("X-Should-Retry") != "false" {
		t.Fatalf("status %d, x-should-retry %q: %s", r.status, r.header.Get("X-Should-Retry"), r.body)
	}
	got := h.apiRequests()
	if len(got) != 1 || got[0].Account != "dev" {
		t.Fatalf("the fake saw %+v", got)
	}
	if h.api.RefreshCount("pool") != 0 || h.api.RefreshCount("dev") != 0 {
		t.Fatal("a token was refreshed")
	}
	row := h.lastRow()
	if row.Account != RelayAccount || row.Attempts != 1 || strings.Contains(row.Error, devTok) {
		t.Fatalf("row %+v", row)
	}
	if l := h.limit("pool"); !l.Until.IsZero() || h.account("pool").Status != "ok" {
		t.Fatalf("the pool account was touched: %+v %q", l, h.account("pool").Status)
	}
	if strings.Contains(h.logs.String(), devTok) {
		t.Fatal("the developer's token is in the log")
	}
}

// A gateway with no pool account at all serves relay requests (a team
// where everyone relays needs no shared account).
func TestRelayNeedsNoPoolAccount(t *testing.T) {
	h := newHarness(t, withRelay)
	devTok := h.api.NewAccessToken("dev")
	r := h.do(context.Background(), http.MethodPost, "/v1/messages", `{"model":"claude-sonnet-4-5","max_tokens":10,"stream":true,"messages":[{"role":"user","content":"hi"}]}`, http.Header{
		"X-Claudeflare-Key": {"cf_relay"}, "Authorization": {"Bearer " + devTok}, "Anthropic-Beta": {OAuthBeta},
	})
	if r.status != http.StatusOK || !strings.Contains(string(r.body), "message_stop") {
		t.Fatalf("status %d: %s", r.status, r.body)
	}
	if row := h.lastRow(); row.Account != RelayAccount || !row.Streamed || row.EndState != EndComplete || row.OutputTokens == 0 {
		t.Fatalf("row %+v", row)
	}
	if r := h.post(relayBody); r.status != http.StatusServiceUnavailable {
		t.Fatalf("a pooled request without accounts: %d", r.status)
	}
	// /health: degraded (requests can be served), not down, while relay
	// keys exist; down without them.
	if st, reasons := h.srv.HealthStatus(); st != HealthDown {
		t.Fatalf("health without relay keys: %s %q", st, reasons)
	}
	h.srv.relayKey = func() bool { return true }
	if st, reasons := h.srv.HealthStatus(); st != HealthDegraded || len(reasons) != 2 || !strings.Contains(reasons[1], "relay keys") {
		t.Fatalf("health with relay keys: %s %q", st, reasons)
	}
}

// A relay key's GET /v1/models is relayed with the developer's own
// credentials: it lists what their login offers, and no pool account
// is asked.
func TestRelayListsTheDevelopersModels(t *testing.T) {
	h := newHarness(t, withRelay)
	h.addOAuth("pool", 0, false)
	h.reload()
	devTok := h.api.NewAccessToken("dev")
	h.api.ResetRequests()
	r := h.do(context.Background(), http.MethodGet, "/v1/models", "", http.Header{
		"X-Claudeflare-Key": {"cf_relay"}, "Authorization": {"Bearer " + devTok}, "Anthropic-Beta": {OAuthBeta},
	})
	if r.status != http.StatusOK || !strings.Contains(string(r.body), `"data"`) {
		t.Fatalf("status %d: %s", r.status, r.body)
	}
	got := h.apiRequests()
	if len(got) != 1 || got[0].Account != "dev" || got[0].Path != "/v1/models" {
		t.Fatalf("the fake saw %+v, want one /v1/models with the developer's token", got)
	}
}

// An upstream answer that quotes the developer's own credential is
// scrubbed like one quoting an account's: the client, the log row, the
// log and the payload capture never hold it.
func TestRelayCredentialIsScrubbedFromWhatIsKept(t *testing.T) {
	h := newHarness(t, withRelay, withConfig(func(c *config.Config) { c.Log.Payloads = config.PayloadsFull }))
	h.addOAuth("pool", 0, false)
	h.reload()
	devTok := h.api.NewAccessToken("dev")
	h.api.Inject(fakeapi.Fault{Kind: fakeapi.FaultStatus, Status: 400, Count: 1,
		Body:    `{"type":"error","error":{"type":"invalid_request_error","message":"token ` + devTok + ` is odd"}}`,
		Headers: map[string]string{"x-echo": "Bearer " + devTok}})
	r := h.do(context.Background(), http.MethodPost, "/v1/messages", relayBody, http.Header{
		"X-Claudeflare-Key": {"cf_relay"}, "Authorization": {"Bearer " + devTok}, "Anthropic-Beta": {OAuthBeta},
	})
	if r.status != http.StatusBadRequest || !strings.Contains(string(r.body), "is odd") {
		t.Fatalf("status %d: %s", r.status, r.body)
	}
	if strings.Contains(string(r.body), devTok) || strings.Contains(r.header.Get("X-Echo"), devTok) {
		t.Fatalf("the developer's token reached the client: %v %s", r.header, r.body)
	}
	row := h.lastRow()
	if b, _ := json.Marshal(row); strings.Contains(string(b), devTok) {
		t.Fatalf("the developer's token is in the row: %s", b)
	}
	c := openCapture(t, h, r.header.Get("X-Claudeflare-Request-Id"))
	if b, _ := json.Marshal(c); strings.Contains(string(b), devTok) || len(c.Response.Body) == 0 {
		t.Fatalf("capture: %s", b)
	}
	if strings.Contains(h.logs.String(), devTok) {
		t.Fatal("the developer's token is in the log")
	}
}
