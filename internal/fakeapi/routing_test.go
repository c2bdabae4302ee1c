package fakeapi

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

const opusBody = `{"model":"claude-opus-4-5","max_tokens":64,"messages":[{"role":"user","content":"hi"}]}`

// apiError reads an Anthropic-shaped error body.
func apiError(t *testing.T, body []byte) (typ, msg string) {
	t.Helper()
	var e struct {
		Type  string `json:"type"`
		Error struct {
			Type    string `json:"type"`
			Message string `json:"message"`
		} `json:"error"`
		RequestID string `json:"request_id"`
	}
	if err := json.Unmarshal(body, &e); err != nil || e.Type != "error" || e.RequestID == "" {
		t.Fatalf("not an Anthropic error: %s", body)
	}
	return e.Error.Type, e.Error.Message
}

func unix(t time.Time) string { return strconv.FormatInt(t.Unix(), 10) }

// A model-scoped limit refuses that family only, on that account only,
// with the headers of a weekly model limit; clearing it serves again.
func TestModelLimit(t *testing.T) {
	s := newServer(t)
	a := s.NewAPIKey("a")
	b := s.NewAPIKey("b")
	reset := time.Now().Add(3 * 24 * time.Hour).Truncate(time.Second)
	s.SetModelLimit("a", "opus", reset)

	resp, body := do(t, s, msgReq(t, s, opusBody, apiKey(a)))
	if typ, _ := apiError(t, body); resp.StatusCode != 429 || typ != "rate_limit_error" {
		t.Fatalf("opus on a: %d %s", resp.StatusCode, body)
	}
	for k, want := range map[string]string{
		"status": "rejected", "reset": unix(reset), "representative-claim": "seven_day_opus",
		"5h-status": "allowed", "7d-status": "allowed",
	} {
		if got := resp.Header.Get(UnifiedPrefix + k); got != want {
			t.Errorf("opus on a: %s = %q, want %q", k, got, want)
		}
	}
	if resp.Header.Get("retry-after") != "" {
		t.Errorf("opus on a: retry-after %q", resp.Header.Get("retry-after"))
	}
	// Other families on a, and opus on b, are served as usual.
	resp, body = do(t, s, msgReq(t, s, msgBody, apiKey(a)))
	if resp.StatusCode != 200 || resp.Header.Get(UnifiedPrefix+"status") != "allowed" {
		t.Fatalf("sonnet on a: %d %v %s", resp.StatusCode, resp.Header, body)
	}
	if resp, body := do(t, s, msgReq(t, s, opusBody, apiKey(b))); resp.StatusCode != 200 {
		t.Fatalf("opus on b: %d %s", resp.StatusCode, body)
	}
	// The fault queue is not used up by a refused request.
	s.Inject(Fault{Kind: FaultStatus, Status: 529})
	if resp, _ := do(t, s, msgReq(t, s, opusBody, apiKey(a))); resp.StatusCode != 429 {
		t.Fatalf("opus on a with a fault queued: %d", resp.StatusCode)
	}
	if resp, _ := do(t, s, msgReq(t, s, msgBody, apiKey(a))); resp.StatusCode != 529 {
		t.Fatalf("the queued fault: %d", resp.StatusCode)
	}
	s.ClearModelLimit("a", "OPUS")
	if resp, body := do(t, s, msgReq(t, s, opusBody, apiKey(a))); resp.StatusCode != 200 {
		t.Fatalf("opus on a after ClearModelLimit: %d %s", resp.StatusCode, body)
	}
	if recs := s.Requests(); recs[0].Account != "a" || recs[0].Status != 429 {
		t.Fatalf("recorded %+v", recs[0])
	}
}

// Overage served is a 200 with the limit reached and overage allowed;
// refused is a 429 or 400 naming extra usage; off answers as usual.
func TestOverage(t *testing.T) {
	s := newServer(t)
	a := s.NewAPIKey("a")
	b := s.NewAPIKey("b")
	reset := time.Now().Add(2 * time.Hour).Truncate(time.Second)

	s.SetOverage("a", OverageServed, reset)
	for _, body := range []string{msgBody, streamBody} {
		resp, got := do(t, s, msgReq(t, s, body, apiKey(a)))
		if resp.StatusCode != 200 {
			t.Fatalf("served: %d %s", resp.StatusCode, got)
		}
		for k, want := range map[string]string{
			"status": "rejected", "reset": unix(reset), "overage-status": "allowed", "overage-reset": unix(reset),
		} {
			if got := resp.Header.Get(UnifiedPrefix + k); got != want {
				t.Errorf("served: %s = %q, want %q", k, got, want)
			}
		}
	}
	if resp, _ := do(t, s, msgReq(t, s, msgBody, apiKey(b))); resp.Header.Get(UnifiedPrefix+"status") != "allowed" ||
		resp.Header.Get(UnifiedPrefix+"overage-status") != "" {
		t.Fatalf("b under a's overage: %v", resp.Header)
	}

	for _, tc := range []struct {
		mode   OverageMode
		status int
		typ    string
	}{{OverageRefused, 429, "rate_limit_error"}, {OverageRefused400, 400, "invalid_request_error"}} {
		s.SetOverage("a", tc.mode, reset)
		resp, body := do(t, s, msgReq(t, s, msgBody, apiKey(a)))
		typ, msg := apiError(t, body)
		if resp.StatusCode != tc.status || typ != tc.typ || !strings.Contains(strings.ToLower(msg), "extra usage") {
			t.Fatalf("refused %d: %d %s", tc.mode, resp.StatusCode, body)
		}
		if resp.Header.Get(UnifiedPrefix+"reset") != unix(reset) || resp.Header.Get(UnifiedPrefix+"overage-status") != "rejected" {
			t.Fatalf("refused %d headers: %v", tc.mode, resp.Header)
		}
	}
	s.SetOverage("a", OverageOff, time.Time{})
	if resp, _ := do(t, s, msgReq(t, s, msgBody, apiKey(a))); resp.StatusCode != 200 || resp.Header.Get(UnifiedPrefix+"status") != "allowed" {
		t.Fatalf("after OverageOff: %d %v", resp.StatusCode, resp.Header)
	}
}

// An account refusal answers every API request of the account, without
// rate-limit headers, until cleared.
func TestAccountRefusal(t *testing.T) {
	s := newServer(t)
	rt := s.NewOAuthAccount("a")
	b := s.NewAPIKey("b")
	_, tr := refresh(t, s, rt)
	for _, tc := range []struct {
		status    int
		typ, msg  string
		substring string
	}{
		{403, "permission_error", MsgOAuthNotAllowed, "not allowed for this organization"},
		{403, "permission_error", MsgOrgDisabled, "organization has been disabled"},
		{400, "invalid_request_error", MsgCreditTooLow, "credit balance is too low"},
	} {
		s.SetAccountRefusal("a", tc.status, tc.typ, tc.msg)
		resp, body := do(t, s, msgReq(t, s, msgBody, bearer(tr.AccessToken)))
		typ, msg := apiError(t, body)
		if resp.StatusCode != tc.status || typ != tc.typ || !strings.Contains(msg, tc.substring) {
			t.Fatalf("refusal %q: %d %s", tc.msg, resp.StatusCode, body)
		}
		for k := range resp.Header {
			if strings.HasPrefix(strings.ToLower(k), "anthropic-ratelimit-") {
				t.Fatalf("refusal carries %s", k)
			}
		}
		req, _ := http.NewRequest(http.MethodGet, s.URL+ModelsPath, nil)
		bearer(tr.AccessToken)(req.Header)
		if resp, _ := do(t, s, req); resp.StatusCode != tc.status {
			t.Fatalf("models under a refusal: %d", resp.StatusCode)
		}
	}
	if resp, _ := do(t, s, msgReq(t, s, msgBody, apiKey(b))); resp.StatusCode != 200 {
		t.Fatalf("b under a's refusal: %d", resp.StatusCode)
	}
	// Refreshes still work (the refusal is of API requests).
	if code, _ := refresh(t, s, tr.RefreshToken); code != 200 {
		t.Fatalf("refresh under a refusal: %d", code)
	}
	s.ClearAccountRefusal("a")
	if resp, body := do(t, s, msgReq(t, s, msgBody, bearer(s.CurrentAccessToken("a")))); resp.StatusCode != 200 {
		t.Fatalf("after ClearAccountRefusal: %d %s", resp.StatusCode, body)
	}
}

// LongContextFault answers once with a bare refusal naming long context.
func TestLongContextFault(t *testing.T) {
	s := newServer(t)
	a := s.NewAPIKey("a")
	for _, status := range []int{400, 429} {
		s.Inject(LongContextFault("a", status))
		resp, body := do(t, s, msgReq(t, s, msgBody, apiKey(a)))
		_, msg := apiError(t, body)
		if resp.StatusCode != status || msg != MsgLongContext {
			t.Fatalf("long context %d: %d %s", status, resp.StatusCode, body)
		}
		for k := range resp.Header {
			if strings.HasPrefix(strings.ToLower(k), "anthropic-ratelimit-") || strings.EqualFold(k, "retry-after") {
				t.Fatalf("long context %d carries %s", status, k)
			}
		}
		if resp, _ := do(t, s, msgReq(t, s, msgBody, apiKey(a))); resp.StatusCode != 200 {
			t.Fatalf("after the fault: %d", resp.StatusCode)
		}
	}
}

// RefuseAccessTokens: refreshes keep working, every access token, old or
// new, gets 401; RevokeAPIKeys: the account's keys get 401 invalid
// x-api-key, recorded as the account's.
func TestUncurable401(t *testing.T) {
	s := newServer(t)
	rt := s.NewOAuthAccount("a")
	_, tr := refresh(t, s, rt)
	s.RefuseAccessTokens("a")
	for range 2 {
		resp, body := do(t, s, msgReq(t, s, msgBody, bearer(tr.AccessToken)))
		if typ, msg := apiError(t, body); resp.StatusCode != 401 || typ != "authentication_error" || msg != MsgTokenRevoked {
			t.Fatalf("refused token: %d %s", resp.StatusCode, body)
		}
		code, next := refresh(t, s, tr.RefreshToken)
		if code != 200 || next.AccessToken == "" {
			t.Fatalf("refresh of a refused account: %d %+v", code, next)
		}
		tr = next
	}
	if n := s.RefreshCount("a"); n != 3 {
		t.Fatalf("refresh count %d, want 3", n)
	}
	s.AcceptAccessTokens("a")
	if resp, _ := do(t, s, msgReq(t, s, msgBody, bearer(tr.AccessToken))); resp.StatusCode != 200 {
		t.Fatalf("after AcceptAccessTokens: %d", resp.StatusCode)
	}

	k := s.NewAPIKey("k")
	other := s.NewAPIKey("other")
	s.RevokeAPIKeys("k")
	resp, body := do(t, s, msgReq(t, s, msgBody, apiKey(k)))
	if typ, msg := apiError(t, body); resp.StatusCode != 401 || typ != "authentication_error" || msg != "invalid x-api-key" {
		t.Fatalf("revoked key: %d %s", resp.StatusCode, body)
	}
	if recs := s.Requests(); recs[len(recs)-1].Account != "k" {
		t.Fatalf("revoked key recorded as %q", recs[len(recs)-1].Account)
	}
	if resp, _ := do(t, s, msgReq(t, s, msgBody, apiKey(other))); resp.StatusCode != 200 {
		t.Fatalf("another account's key: %d", resp.StatusCode)
	}
}

// A setup token serves for its lifetime and then expires; it comes with
// no refresh token.
func TestSetupToken(t *testing.T) {
	s := newServer(t)
	now := time.Unix(1_800_000_000, 0)
	s.Now = func() time.Time { return now }
	tok := s.NewSetupToken("st", 0)
	if resp, _ := do(t, s, msgReq(t, s, msgBody, bearer(tok))); resp.StatusCode != 200 {
		t.Fatalf("setup token: %d", resp.StatusCode)
	}
	if s.CurrentRefreshToken("st") != "" {
		t.Fatal("a setup token came with a refresh token")
	}
	s.SetNow(func() time.Time { return now.Add(366 * 24 * time.Hour) })
	if resp, _ := do(t, s, msgReq(t, s, msgBody, bearer(tok))); resp.StatusCode != 401 {
		t.Fatalf("setup token after a year: %d", resp.StatusCode)
	}
}

// A fault with a Rate hits about that share of the matching requests,
// independently, until cleared.
func TestFaultRate(t *testing.T) {
	s := newServer(t)
	a := s.NewAPIKey("a")
	s.Inject(Fault{Kind: FaultStatus, Status: 529, Rate: 0.25, Count: -1})
	const n = 400
	hit := 0
	for range n {
		resp, _ := do(t, s, msgReq(t, s, msgBody, apiKey(a)))
		switch resp.StatusCode {
		case 529:
			hit++
		case 200:
		default:
			t.Fatalf("status %d", resp.StatusCode)
		}
	}
	// 100 expected; 40..160 is more than six standard deviations wide.
	if hit < 40 || hit > 160 {
		t.Fatalf("%d of %d requests took a fault of rate 0.25", hit, n)
	}
	s.ClearFaults()
	s.Inject(Fault{Kind: FaultStatus, Status: 529, Rate: 0.5, Count: 2})
	hit = 0
	for range 100 {
		if resp, _ := do(t, s, msgReq(t, s, msgBody, apiKey(a))); resp.StatusCode == 529 {
			hit++
		}
	}
	if hit != 2 {
		t.Fatalf("a rated fault of count 2 hit %d requests", hit)
	}
}
