package fakeapi

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

const msgBody = `{"model":"claude-sonnet-4-5","max_tokens":64,"messages":[{"role":"user","content":"hi"}]}`
const streamBody = `{"model":"claude-sonnet-4-5","max_tokens":64,"stream":true,"messages":[{"role":"user","content":"hi"}]}`

func newServer(t testing.TB) *Server {
	t.Helper()
	s := New()
	t.Cleanup(s.Close)
	return s
}

func do(t testing.TB, s *Server, req *http.Request) (*http.Response, []byte) {
	t.Helper()
	resp, err := s.Client().Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	return resp, b
}

func tokenReq(t testing.TB, s *Server, body map[string]string) *http.Request {
	t.Helper()
	b, _ := json.Marshal(body)
	req, err := http.NewRequest(http.MethodPost, s.TokenURL(), bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	return req
}

type tokenResp struct {
	AccessToken  string `json:"access_token"`
	RefreshToken string `json:"refresh_token"`
	ExpiresIn    int64  `json:"expires_in"`
	TokenType    string `json:"token_type"`
	Error        string `json:"error"`
}

func refresh(t testing.TB, s *Server, rt string) (int, tokenResp) {
	t.Helper()
	resp, b := do(t, s, tokenReq(t, s, map[string]string{
		"grant_type": "refresh_token", "client_id": "test-client", "refresh_token": rt,
	}))
	var tr tokenResp
	if err := json.Unmarshal(b, &tr); err != nil {
		t.Fatalf("token answer %q: %v", b, err)
	}
	return resp.StatusCode, tr
}

func msgReq(t testing.TB, s *Server, body string, auth func(http.Header)) *http.Request {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, s.URL+"/v1/messages?beta=true", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("anthropic-version", "2023-06-01")
	if auth != nil {
		auth(req.Header)
	}
	return req
}

func bearer(tok string) func(http.Header) {
	return func(h http.Header) {
		h.Set("Authorization", "Bearer "+tok)
		h.Set("anthropic-beta", "claude-code-20250219, "+OAuthBeta)
	}
}

func apiKey(key string) func(http.Header) {
	return func(h http.Header) { h.Set("x-api-key", key) }
}

type event struct {
	name string
	data map[string]any
}

// faultedStream injects f, sends a streamed message request with API key
// key and returns the events read and how the stream ended.
func faultedStream(t testing.TB, s *Server, key string, f Fault) ([]event, error) {
	t.Helper()
	s.Inject(f)
	resp, err := s.Client().Do(msgReq(t, s, streamBody, apiKey(key)))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	return parseSSE(t, resp.Body)
}

func parseSSE(t testing.TB, r io.Reader) ([]event, error) {
	t.Helper()
	var evs []event
	var name, data string
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if name == "" && data == "" {
				continue
			}
			var m map[string]any
			if err := json.Unmarshal([]byte(data), &m); err != nil {
				t.Fatalf("event %s data %q: %v", name, data, err)
			}
			if m["type"] != name {
				t.Errorf("event %s has type %v", name, m["type"])
			}
			evs = append(evs, event{name, m})
			name, data = "", ""
		case strings.HasPrefix(line, "event: "):
			name = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			data = strings.TrimPrefix(line, "data: ")
		default:
			t.Fatalf("unexpected SSE line %q", line)
		}
	}
	return evs, sc.Err()
}

func TestRefreshRotation(t *testing.T) {
	s := newServer(t)
	rt := s.NewOAuthAccount("work")
	if !strings.HasPrefix(rt, "sk-ant-ort01-") {
		t.Fatalf("refresh token %q lacks prefix", rt)
	}
	if got := s.CurrentRefreshToken("work"); got != rt {
		t.Fatalf("CurrentRefreshToken = %q, want the issued one", got)
	}
	status, tr := refresh(t, s, rt)
	if status != 200 {
		t.Fatalf("refresh: status %d", status)
	}
	if !strings.HasPrefix(tr.AccessToken, "sk-ant-oat01-") || !strings.HasPrefix(tr.RefreshToken, "sk-ant-ort01-") {
		t.Fatalf("bad token shapes: %+v", tr)
	}
	if tr.RefreshToken == rt || tr.ExpiresIn != int64(DefaultExpiresIn/time.Second) || tr.TokenType != "Bearer" {
		t.Fatalf("unexpected answer %+v", tr)
	}
	if s.RefreshLive(rt) || !s.RefreshLive(tr.RefreshToken) {
		t.Fatal("old refresh token should be dead and the new one live")
	}
	status, bad := refresh(t, s, rt)
	if status != 400 || bad.Error != "invalid_grant" {
		t.Fatalf("reused refresh token: %d %+v, want 400 invalid_grant", status, bad)
	}
	status, tr2 := refresh(t, s, tr.RefreshToken)
	if status != 200 || tr2.RefreshToken == tr.RefreshToken {
		t.Fatalf("second refresh: %d %+v", status, tr2)
	}
	if status, _ := refresh(t, s, "sk-ant-ort01-unknown"); status != 400 {
		t.Fatalf("unknown token: status %d", status)
	}
	if n := s.RefreshCount("work"); n != 2 {
		t.Fatalf("RefreshCount = %d, want 2", n)
	}
	if n := s.TotalRefreshes(); n != 2 {
		t.Fatalf("TotalRefreshes = %d, want 2", n)
	}
	if n := s.TokenRequests(); n != 4 {
		t.Fatalf("TokenRequests = %d, want 4", n)
	}
	if s.CurrentRefreshToken("work") != tr2.RefreshToken || s.CurrentAccessToken("work") != tr2.AccessToken {
		t.Fatal("current tokens not updated")
	}
	all := strings.Join(s.AllTokens(), " ")
	for _, tok := range []string{rt, tr.AccessToken, tr.RefreshToken, tr2.AccessToken, tr2.RefreshToken} {
		if !strings.Contains(all, tok) {
			t.Errorf("AllTokens misses %q", tok)
		}
	}
	// The access token of the first refresh still works (tokens live until expiry).
	resp, _ := do(t, s, msgReq(t, s, msgBody, bearer(tr.AccessToken)))
	if resp.StatusCode != 200 {
		t.Fatalf("older access token: status %d", resp.StatusCode)
	}
	recs := s.Requests()
	if len(recs) != 5 || recs[0].Account != "work" || recs[0].Path != TokenPath || recs[0].Status != 200 {
		t.Fatalf("recorded %+v", recs)
	}
}

func TestTokenEndpointValidation(t *testing.T) {
	s := newServer(t)
	rt := s.NewOAuthAccount("a")
	for name, body := range map[string]map[string]string{
		"no client":     {"grant_type": "refresh_token", "refresh_token": rt},
		"no grant":      {"client_id": "c", "refresh_token": rt},
		"unknown grant": {"grant_type": "password", "client_id": "c"},
		"no token":      {"grant_type": "refresh_token", "client_id": "c"},
	} {
		resp, b := do(t, s, tokenReq(t, s, body))
		if resp.StatusCode != 400 || !bytes.Contains(b, []byte(`"error"`)) {
			t.Errorf("%s: %d %s", name, resp.StatusCode, b)
		}
	}
	req, _ := http.NewRequest(http.MethodPost, s.TokenURL(), strings.NewReader("grant_type=refresh_token"))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if resp, _ := do(t, s, req); resp.StatusCode != 400 {
		t.Errorf("form body: status %d", resp.StatusCode)
	}
	if !s.RefreshLive(rt) {
		t.Fatal("a refused request killed the refresh token")
	}
}

func TestAuthorizationCode(t *testing.T) {
	s := newServer(t)
	verifier := "a-verifier-of-enough-length-0123456789abcdefghijklmnop"
	sum := sha256.Sum256([]byte(verifier))
	challenge := base64.RawURLEncoding.EncodeToString(sum[:])
	code := s.NewAuthCode("new")
	s.ExpectChallenge(code, challenge)
	exchange := func(code, verifier string) (int, tokenResp) {
		resp, b := do(t, s, tokenReq(t, s, map[string]string{
			"grant_type": "authorization_code", "client_id": "c", "code": code, "state": "st",
			"redirect_uri": "https://platform.claude.com/oauth/code/callback", "code_verifier": verifier,
		}))
		var tr tokenResp
		_ = json.Unmarshal(b, &tr)
		return resp.StatusCode, tr
	}
	if st, _ := exchange(code, ""); st != 400 {
		t.Fatalf("missing verifier: %d", st)
	}
	if st, tr := exchange(code, "wrong-verifier"); st != 400 || tr.Error != "invalid_grant" {
		t.Fatalf("wrong verifier: %d %+v", st, tr)
	}
	st, tr := exchange(code, verifier)
	if st != 200 || tr.AccessToken == "" || tr.RefreshToken == "" {
		t.Fatalf("exchange: %d %+v", st, tr)
	}
	if s.CurrentRefreshToken("new") != tr.RefreshToken {
		t.Fatal("exchange did not issue the account's refresh token")
	}
	if st, tr := exchange(code, verifier); st != 400 || tr.Error != "invalid_grant" {
		t.Fatalf("reused code: %d %+v", st, tr)
	}
	// Without ExpectChallenge any verifier goes.
	if st, _ := exchange(s.NewAuthCode("other"), "anything"); st != 200 {
		t.Fatalf("exchange without challenge: %d", st)
	}
}

func TestConcurrentRefreshOneWins(t *testing.T) {
	s := newServer(t)
	rt := s.NewOAuthAccount("a")
	s.SetTokenDelay(50 * time.Millisecond)
	var ok, bad atomic.Int32
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			st, _ := refresh(t, s, rt)
			if st == 200 {
				ok.Add(1)
			} else {
				bad.Add(1)
			}
		})
	}
	wg.Wait()
	if ok.Load() != 1 || bad.Load() != 7 {
		t.Fatalf("%d successes, %d failures; want 1 and 7", ok.Load(), bad.Load())
	}
	if s.RefreshCount("a") != 1 {
		t.Fatalf("RefreshCount = %d", s.RefreshCount("a"))
	}
}

func TestFailTokenEndpoint(t *testing.T) {
	s := newServer(t)
	rt := s.NewOAuthAccount("a")
	s.FailTokenEndpoint(503, 2)
	for range 2 {
		if st, tr := refresh(t, s, rt); st != 503 || tr.Error != "server_error" {
			t.Fatalf("failing endpoint: %d %+v", st, tr)
		}
	}
	if st, _ := refresh(t, s, rt); st != 200 {
		t.Fatalf("after the failures: %d", st)
	}
	s.InjectTokenFault(TokenFault{Status: 200, Body: "<html>hi</html>", Headers: map[string]string{"Content-Type": "text/html"}})
	resp, b := do(t, s, tokenReq(t, s, map[string]string{"grant_type": "refresh_token", "client_id": "c", "refresh_token": "x"}))
	if resp.StatusCode != 200 || string(b) != "<html>hi</html>" || resp.Header.Get("Content-Type") != "text/html" {
		t.Fatalf("custom token fault: %d %q %v", resp.StatusCode, b, resp.Header)
	}
	s.InjectTokenFault(TokenFault{Status: 503, Headers: map[string]string{"Content-Type": "application/problem+json"}})
	if resp, _ := do(t, s, tokenReq(t, s, map[string]string{})); resp.StatusCode != 503 || resp.Header.Get("Content-Type") != "application/problem+json" {
		t.Fatalf("fault header: %d %v", resp.StatusCode, resp.Header)
	}
	s.InjectTokenFault(TokenFault{Reset: true})
	if _, err := s.Client().Do(tokenReq(t, s, map[string]string{"grant_type": "refresh_token"})); err == nil {
		t.Fatal("reset token fault: no error")
	}
}

func TestCreateAPIKey(t *testing.T) {
	s := newServer(t)
	access := s.NewAccessToken("a")
	req, _ := http.NewRequest(http.MethodPost, s.URL+CreateAPIKeyPath, nil)
	req.Header.Set("Authorization", "Bearer "+access)
	resp, b := do(t, s, req)
	var out struct {
		RawKey string `json:"raw_key"`
	}
	if err := json.Unmarshal(b, &out); err != nil || resp.StatusCode != 200 || !strings.HasPrefix(out.RawKey, "sk-ant-api03-") {
		t.Fatalf("create_api_key: %d %s %v", resp.StatusCode, b, err)
	}
	resp, _ = do(t, s, msgReq(t, s, msgBody, apiKey(out.RawKey)))
	if resp.StatusCode != 200 {
		t.Fatalf("created key refused: %d", resp.StatusCode)
	}
	if got := s.Requests()[1].Account; got != "a" {
		t.Fatalf("created key resolved to %q", got)
	}
	req, _ = http.NewRequest(http.MethodPost, s.URL+CreateAPIKeyPath, nil)
	req.Header.Set("Authorization", "Bearer sk-ant-oat01-nope")
	if resp, _ := do(t, s, req); resp.StatusCode != 401 {
		t.Fatalf("bad bearer: %d", resp.StatusCode)
	}
}

func TestMessagesAuth(t *testing.T) {
	s := newServer(t)
	now := time.Unix(1_800_000_000, 0)
	var mu sync.Mutex
	s.Now = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	access := s.NewAccessToken("oauth")
	key := s.NewAPIKey("keyed")

	cases := []struct {
		name    string
		auth    func(http.Header)
		status  int
		message string
	}{
		{"bearer", bearer(access), 200, ""},
		{"api key", apiKey(key), 200, ""},
		{"no beta", func(h http.Header) { h.Set("Authorization", "Bearer "+access) }, 401, "OAuth authentication is currently not supported."},
		{"unknown bearer", bearer("sk-ant-oat01-nope"), 401, "Invalid bearer token"},
		{"unknown key", apiKey("sk-ant-api03-nope"), 401, "invalid x-api-key"},
		{"nothing", nil, 401, "x-api-key header is required"},
	}
	for _, c := range cases {
		resp, b := do(t, s, msgReq(t, s, msgBody, c.auth))
		if resp.StatusCode != c.status {
			t.Errorf("%s: status %d, want %d (%s)", c.name, resp.StatusCode, c.status, b)
			continue
		}
		if resp.Header.Get("request-id") == "" || resp.Header.Get(UnifiedPrefix+"status") == "" {
			t.Errorf("%s: missing request-id or unified headers: %v", c.name, resp.Header)
		}
		if c.status != 200 {
			var e struct {
				Type  string `json:"type"`
				Error struct{ Type, Message string }
			}
			if err := json.Unmarshal(b, &e); err != nil || e.Type != "error" || e.Error.Type != "authentication_error" || e.Error.Message != c.message {
				t.Errorf("%s: error body %s", c.name, b)
			}
		}
	}
	mu.Lock()
	now = now.Add(DefaultExpiresIn)
	mu.Unlock()
	resp, b := do(t, s, msgReq(t, s, msgBody, bearer(access)))
	if resp.StatusCode != 401 || !bytes.Contains(b, []byte("expired")) {
		t.Fatalf("expired token: %d %s", resp.StatusCode, b)
	}
	fresh := s.NewAccessToken("oauth")
	s.ExpireAccessTokens("oauth")
	if resp, _ := do(t, s, msgReq(t, s, msgBody, bearer(fresh))); resp.StatusCode != 401 {
		t.Fatalf("revoked token: %d", resp.StatusCode)
	}
	rec := s.Requests()
	if rec[0].Account != "oauth" || rec[1].Account != "keyed" || rec[5].Account != "" {
		t.Fatalf("accounts recorded: %q %q %q", rec[0].Account, rec[1].Account, rec[5].Account)
	}
	if rec[0].RawQuery != "beta=true" || rec[0].Header.Get("anthropic-version") != "2023-06-01" || string(rec[0].Body) != msgBody {
		t.Fatalf("recorded request %+v", rec[0])
	}
}

func TestRevokeAccount(t *testing.T) {
	s := newServer(t)
	rt := s.NewOAuthAccount("a")
	access := s.NewAccessToken("a")
	s.RevokeAccount("a")
	if st, tr := refresh(t, s, rt); st != 400 || tr.Error != "invalid_grant" {
		t.Fatalf("refresh after revoke: %d %+v", st, tr)
	}
	if resp, _ := do(t, s, msgReq(t, s, msgBody, bearer(access))); resp.StatusCode != 401 {
		t.Fatalf("access after revoke: %d", resp.StatusCode)
	}
}

func TestMessagesJSON(t *testing.T) {
	s := newServer(t)
	key := s.NewAPIKey("k")
	u := Usage{InputTokens: 7, OutputTokens: 9, CacheReadInputTokens: 3, CacheCreationInputTokens: 4}
	s.SetUsage(u)
	resp, b := do(t, s, msgReq(t, s, msgBody, apiKey(key)))
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("status %d, %v", resp.StatusCode, resp.Header)
	}
	var m struct {
		ID, Type, Role, Model string
		StopReason            string `json:"stop_reason"`
		Content               []struct{ Type, Text string }
		Usage                 Usage
	}
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(m.ID, "msg_") || m.Type != "message" || m.Role != "assistant" || m.Model != "claude-sonnet-4-5" || m.StopReason != "end_turn" {
		t.Fatalf("message %s", b)
	}
	if len(m.Content) != 1 || m.Content[0].Type != "text" || m.Content[0].Text != s.ResponseText() || m.Usage != u {
		t.Fatalf("message %s", b)
	}
	for _, bad := range []string{"", "not json", `{"messages":[]}`, `{"model":"m"}`, `{"model":"m","messages":"x"}`} {
		resp, b := do(t, s, msgReq(t, s, bad, apiKey(key)))
		if resp.StatusCode != 400 || !bytes.Contains(b, []byte("invalid_request_error")) {
			t.Errorf("body %q: %d %s", bad, resp.StatusCode, b)
		}
	}
}

func TestModelsAndEcho(t *testing.T) {
	s := newServer(t)
	key := s.NewAPIKey("k")
	req, _ := http.NewRequest(http.MethodGet, s.URL+"/v1/models?limit=2", nil)
	req.Header.Set("x-api-key", key)
	resp, b := do(t, s, req)
	var list struct {
		Data []struct{ ID string }
	}
	if err := json.Unmarshal(b, &list); err != nil || resp.StatusCode != 200 || len(list.Data) == 0 {
		t.Fatalf("models: %d %s", resp.StatusCode, b)
	}
	req, _ = http.NewRequest(http.MethodDelete, s.URL+"/v1/files/abc?x=1&y=2", nil)
	req.Header.Set("x-api-key", key)
	resp, b = do(t, s, req)
	var echo map[string]string
	if err := json.Unmarshal(b, &echo); err != nil || resp.StatusCode != 200 {
		t.Fatalf("echo: %d %s", resp.StatusCode, b)
	}
	want := map[string]string{"method": "DELETE", "path": "/v1/files/abc", "query": "x=1&y=2", "account": "k"}
	for k, v := range want {
		if echo[k] != v {
			t.Errorf("echo %s = %q, want %q", k, echo[k], v)
		}
	}
	req, _ = http.NewRequest(http.MethodPost, s.URL+CountTokensPath, strings.NewReader(msgBody))
	req.Header.Set("x-api-key", key)
	if resp, b := do(t, s, req); resp.StatusCode != 200 || !bytes.Contains(b, []byte(`"input_tokens":25`)) {
		t.Fatalf("count_tokens: %d %s", resp.StatusCode, b)
	}
	req, _ = http.NewRequest(http.MethodGet, s.URL+"/nothing", nil)
	if resp, _ := do(t, s, req); resp.StatusCode != 404 {
		t.Fatalf("unknown path: %d", resp.StatusCode)
	}
}

func checkStream(t *testing.T, evs []event, u Usage, deltas int, text string) {
	t.Helper()
	var names []string
	for _, e := range evs {
		names = append(names, e.name)
	}
	want := []string{"message_start", "content_block_start", "ping"}
	for range deltas {
		want = append(want, "content_block_delta")
	}
	want = append(want, "content_block_stop", "message_delta", "message_stop")
	if strings.Join(names, ",") != strings.Join(want, ",") {
		t.Fatalf("events %v, want %v", names, want)
	}
	usage := evs[0].data["message"].(map[string]any)["usage"].(map[string]any)
	if usage["input_tokens"] != float64(u.InputTokens) ||
		usage["cache_read_input_tokens"] != float64(u.CacheReadInputTokens) ||
		usage["cache_creation_input_tokens"] != float64(u.CacheCreationInputTokens) {
		t.Errorf("message_start usage %v", usage)
	}
	md := evs[len(evs)-2].data
	if md["usage"].(map[string]any)["output_tokens"] != float64(u.OutputTokens) {
		t.Errorf("message_delta %v", md)
	}
	var got strings.Builder
	for _, e := range evs[3 : 3+deltas] {
		got.WriteString(e.data["delta"].(map[string]any)["text"].(string))
	}
	if got.String() != text {
		t.Errorf("streamed text %q, want %q", got.String(), text)
	}
}

func TestStream(t *testing.T) {
	s := newServer(t)
	access := s.NewAccessToken("a")
	s.SetStreamShape(5, 100)
	resp, err := s.Client().Do(msgReq(t, s, streamBody, bearer(access)))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		t.Fatalf("status %d %v", resp.StatusCode, resp.Header)
	}
	for _, h := range []string{"status", "reset", "5h-status", "5h-reset", "5h-utilization", "7d-status", "7d-reset", "7d-utilization"} {
		if resp.Header.Get(UnifiedPrefix+h) == "" {
			t.Errorf("missing header %s", UnifiedPrefix+h)
		}
	}
	evs, err := parseSSE(t, resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	text := s.ResponseText()
	if len(text) != 500 {
		t.Fatalf("ResponseText has %d bytes, want 500", len(text))
	}
	checkStream(t, evs, DefaultUsage, 5, text)
}

// TestStreamFlushesEachEvent reads the first event while the server still
// waits before the second: nothing may be held back in a buffer.
func TestStreamFlushesEachEvent(t *testing.T) {
	s := newServer(t)
	access := s.NewAccessToken("a")
	s.SetEventDelay(time.Hour)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req := msgReq(t, s, streamBody, bearer(access)).WithContext(ctx)
	resp, err := s.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if n := s.InFlight(); n != 1 {
		t.Errorf("InFlight = %d during a stream, want 1", n)
	}
	br := bufio.NewReader(resp.Body)
	line, err := br.ReadString('\n')
	if err != nil || line != "event: message_start\n" {
		t.Fatalf("first line %q, %v", line, err)
	}
}

func TestGzip(t *testing.T) {
	s := newServer(t)
	key := s.NewAPIKey("a")
	s.SetContentEncoding("gzip")
	for _, body := range []string{msgBody, streamBody} {
		req := msgReq(t, s, body, apiKey(key))
		req.Header.Set("Accept-Encoding", "gzip, deflate, br, zstd")
		resp, b := do(t, s, req)
		if resp.Header.Get("Content-Encoding") != "gzip" {
			t.Fatalf("Content-Encoding %q", resp.Header.Get("Content-Encoding"))
		}
		zr, err := gzip.NewReader(bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		plain, err := io.ReadAll(zr)
		if err != nil {
			t.Fatal(err)
		}
		if body == streamBody {
			evs, err := parseSSE(t, bytes.NewReader(plain))
			if err != nil {
				t.Fatal(err)
			}
			checkStream(t, evs, DefaultUsage, DefaultDeltas, s.ResponseText())
		} else if !json.Valid(plain) {
			t.Fatalf("decoded body %q", plain)
		}
	}
	req := msgReq(t, s, msgBody, apiKey(key))
	req.Header.Set("Accept-Encoding", "identity")
	if resp, _ := do(t, s, req); resp.Header.Get("Content-Encoding") != "" {
		t.Fatal("compressed although not accepted")
	}
}

func TestUnifiedHeaders(t *testing.T) {
	s := newServer(t)
	now := time.Unix(1_800_000_000, 0)
	s.Now = func() time.Time { return now }
	a := s.NewAPIKey("a")
	b := s.NewAPIKey("b")
	reset := now.Add(2 * time.Hour)
	h := RateLimitHeaders("rejected", reset)
	h[UnifiedPrefix+"7d-utilization"] = ""
	s.SetUnified("a", h)
	resp, _ := do(t, s, msgReq(t, s, msgBody, apiKey(a)))
	if resp.Header.Get(UnifiedPrefix+"status") != "rejected" ||
		resp.Header.Get(UnifiedPrefix+"reset") != strconv.FormatInt(reset.Unix(), 10) ||
		resp.Header.Get(UnifiedPrefix+"7d-utilization") != "" ||
		resp.Header.Get(UnifiedPrefix+"7d-status") != "allowed" {
		t.Fatalf("account a headers %v", resp.Header)
	}
	resp, _ = do(t, s, msgReq(t, s, msgBody, apiKey(b)))
	r5, _ := strconv.ParseInt(resp.Header.Get(UnifiedPrefix+"5h-reset"), 10, 64)
	if resp.Header.Get(UnifiedPrefix+"status") != "allowed" || r5 != now.Add(5*time.Hour).Unix() {
		t.Fatalf("account b headers %v", resp.Header)
	}
	u, err := strconv.ParseFloat(resp.Header.Get(UnifiedPrefix+"5h-utilization"), 64)
	if err != nil || u < 0 || u > 1 {
		t.Fatalf("utilization %q", resp.Header.Get(UnifiedPrefix+"5h-utilization"))
	}
}

func TestFaultStatus(t *testing.T) {
	s := newServer(t)
	a := s.NewAPIKey("a")
	b := s.NewAPIKey("b")
	hdr := RateLimitHeaders("rejected", time.Now().Add(time.Hour))
	hdr["retry-after"] = "42"
	s.Inject(Fault{Account: "a", Count: 2, Kind: FaultStatus, Status: 429, Headers: hdr})
	s.Inject(Fault{Kind: FaultStatus, Status: 529})
	s.Inject(Fault{Kind: FaultStatus, Status: 500, Body: `{"custom":true}`})

	// b is not a's fault: it takes the 529.
	resp, body := do(t, s, msgReq(t, s, msgBody, apiKey(b)))
	if resp.StatusCode != 529 || !bytes.Contains(body, []byte("overloaded_error")) {
		t.Fatalf("b: %d %s", resp.StatusCode, body)
	}
	for range 2 {
		resp, body := do(t, s, msgReq(t, s, msgBody, apiKey(a)))
		if resp.StatusCode != 429 || resp.Header.Get("retry-after") != "42" ||
			resp.Header.Get(UnifiedPrefix+"status") != "rejected" || !bytes.Contains(body, []byte("rate_limit_error")) {
			t.Fatalf("a: %d %v %s", resp.StatusCode, resp.Header, body)
		}
	}
	resp, body = do(t, s, msgReq(t, s, msgBody, apiKey(a)))
	if resp.StatusCode != 500 || string(body) != `{"custom":true}` {
		t.Fatalf("custom body: %d %s", resp.StatusCode, body)
	}
	if resp, _ := do(t, s, msgReq(t, s, msgBody, apiKey(a))); resp.StatusCode != 200 {
		t.Fatalf("after faults: %d", resp.StatusCode)
	}
	// Unauthenticated requests do not use faults up.
	s.Inject(Fault{Kind: FaultStatus, Status: 500})
	if resp, _ := do(t, s, msgReq(t, s, msgBody, nil)); resp.StatusCode != 401 {
		t.Fatalf("unauthenticated: %d", resp.StatusCode)
	}
	if resp, _ := do(t, s, msgReq(t, s, msgBody, apiKey(a))); resp.StatusCode != 500 {
		t.Fatalf("queued fault: %d", resp.StatusCode)
	}
	// Path filter and an unlimited count.
	s.Inject(Fault{Path: ModelsPath, Count: -1, Kind: FaultStatus, Status: 503})
	for range 3 {
		req, _ := http.NewRequest(http.MethodGet, s.URL+ModelsPath, nil)
		req.Header.Set("x-api-key", a)
		if resp, _ := do(t, s, req); resp.StatusCode != 503 {
			t.Fatalf("models fault: %d", resp.StatusCode)
		}
	}
	if resp, _ := do(t, s, msgReq(t, s, msgBody, apiKey(a))); resp.StatusCode != 200 {
		t.Fatalf("messages under a models fault: %d", resp.StatusCode)
	}
	s.ClearFaults()
	req, _ := http.NewRequest(http.MethodGet, s.URL+ModelsPath, nil)
	req.Header.Set("x-api-key", a)
	if resp, _ := do(t, s, req); resp.StatusCode != 200 {
		t.Fatalf("after ClearFaults: %d", resp.StatusCode)
	}
}

func TestFaultResetBeforeHeaders(t *testing.T) {
	s := newServer(t)
	a := s.NewAPIKey("a")
	s.Inject(Fault{Kind: FaultResetBeforeHeaders})
	_, err := s.Client().Do(msgReq(t, s, msgBody, apiKey(a)))
	if err == nil {
		t.Fatal("no error from a dropped connection")
	}
	if recs := s.Requests(); recs[0].Status != 0 || recs[0].Account != "a" {
		t.Fatalf("recorded %+v", recs[0])
	}
	if resp, _ := do(t, s, msgReq(t, s, msgBody, apiKey(a))); resp.StatusCode != 200 {
		t.Fatalf("next request: %d", resp.StatusCode)
	}
}

func TestFaultResetMidStream(t *testing.T) {
	s := newServer(t)
	a := s.NewAPIKey("a")
	s.Inject(Fault{Kind: FaultResetMidStream, AfterEvents: 4})
	resp, err := s.Client().Do(msgReq(t, s, streamBody, apiKey(a)))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	evs, err := parseSSE(t, resp.Body)
	if err == nil {
		t.Fatal("stream ended cleanly")
	}
	if len(evs) != 4 || evs[3].name != "content_block_delta" {
		t.Fatalf("got %d events before the reset: %v", len(evs), evs)
	}

	s.Inject(Fault{Kind: FaultResetMidStream})
	resp, err = s.Client().Do(msgReq(t, s, msgBody, apiKey(a)))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if b, err := io.ReadAll(resp.Body); err == nil || json.Valid(b) {
		t.Fatalf("non-streamed reset: %q, %v", b, err)
	}
}

func TestFaultStreamError(t *testing.T) {
	s := newServer(t)
	a := s.NewAPIKey("a")
	evs, err := faultedStream(t, s, a, Fault{Kind: FaultStreamError, AfterEvents: 3})
	if err != nil {
		t.Fatalf("stream error should end the stream cleanly: %v", err)
	}
	if len(evs) != 4 || evs[3].name != "error" || evs[3].data["error"].(map[string]any)["type"] != "overloaded_error" {
		t.Fatalf("events %v", evs)
	}
	s.Inject(Fault{Kind: FaultStreamError})
	if resp, _ := do(t, s, msgReq(t, s, msgBody, apiKey(a))); resp.StatusCode != 529 {
		t.Fatalf("non-streamed stream error: %d", resp.StatusCode)
	}
}

func TestFaultSlowFirstByte(t *testing.T) {
	s := newServer(t)
	a := s.NewAPIKey("a")
	s.Inject(Fault{Kind: FaultSlowFirstByte, Delay: 30 * time.Millisecond})
	start := time.Now()
	if resp, _ := do(t, s, msgReq(t, s, msgBody, apiKey(a))); resp.StatusCode != 200 {
		t.Fatalf("slow request: %d", resp.StatusCode)
	}
	if time.Since(start) < 30*time.Millisecond {
		t.Fatal("answered before the delay")
	}
	// A cancelled request stops the wait: the handler records no status
	// and the server stays usable.
	s.Inject(Fault{Kind: FaultSlowFirstByte, Delay: time.Hour})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err := s.Client().Do(msgReq(t, s, msgBody, apiKey(a)).WithContext(ctx))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want deadline exceeded", err)
	}
	if resp, _ := do(t, s, msgReq(t, s, msgBody, apiKey(a))); resp.StatusCode != 200 {
		t.Fatalf("after cancel: %d", resp.StatusCode)
	}
}

func TestRecorderCap(t *testing.T) {
	s := newServer(t)
	a := s.NewAPIKey("a")
	s.SetMaxRecorded(3)
	for range 10 {
		do(t, s, msgReq(t, s, msgBody, apiKey(a)))
	}
	if n := len(s.Requests()); n != 3 {
		t.Fatalf("%d recorded, want 3", n)
	}
	s.ResetRequests()
	if n := len(s.Requests()); n != 0 {
		t.Fatalf("%d recorded after reset", n)
	}
	s.SetMaxRecorded(0)
	do(t, s, msgReq(t, s, msgBody, apiKey(a)))
	if n := len(s.Requests()); n != 0 {
		t.Fatalf("%d recorded with recording off", n)
	}
}

func TestConcurrency(t *testing.T) {
	s := newServer(t)
	s.SetStreamShape(20, 64)
	var wg sync.WaitGroup
	for i := range 16 {
		name := fmt.Sprintf("acct%d", i%4)
		wg.Go(func() {
			rt := s.NewOAuthAccount(name)
			key := s.NewAPIKey(name)
			for j := range 10 {
				switch j % 4 {
				case 0:
					st, tr := refresh(t, s, rt)
					if st != 200 {
						t.Errorf("refresh: %d", st)
						return
					}
					rt = tr.RefreshToken
					resp, err := s.Client().Do(msgReq(t, s, streamBody, bearer(tr.AccessToken)))
					if err != nil {
						t.Error(err)
						return
					}
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				case 1:
					s.Inject(Fault{Account: name, Kind: FaultStatus, Status: 429})
					do(t, s, msgReq(t, s, msgBody, apiKey(key)))
				case 2:
					s.SetUnified(name, RateLimitHeaders("allowed_warning", time.Now().Add(time.Hour)))
					_ = s.Requests()
					_ = s.AllTokens()
				default:
					do(t, s, msgReq(t, s, msgBody, apiKey(key)))
					_ = s.RefreshCount(name)
				}
			}
		})
	}
	wg.Wait()
	if s.TotalRefreshes() != 16*3 {
		t.Fatalf("TotalRefreshes = %d, want %d", s.TotalRefreshes(), 16*3)
	}
}

func BenchmarkStream(b *testing.B) {
	s := newServer(b)
	key := s.NewAPIKey("a")
	s.SetStreamShape(200, 1024)
	s.SetMaxRecorded(0)
	b.SetBytes(200 * 1024)
	for b.Loop() {
		resp, err := s.Client().Do(msgReq(b, s, streamBody, apiKey(key)))
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
}

// A Bare fault answers without any rate-limit header, where the same
// account's other answers carry them.
func TestFaultStatusBare(t *testing.T) {
	s := newServer(t)
	a := s.NewAPIKey("a")
	s.Inject(Fault{Kind: FaultStatus, Status: 429, Bare: true})
	s.Inject(Fault{Kind: FaultStatus, Status: 429})
	ratelimit := func(h http.Header) bool {
		for k := range h {
			if strings.HasPrefix(strings.ToLower(k), "anthropic-ratelimit-") || strings.EqualFold(k, "retry-after") {
				return true
			}
		}
		return false
	}
	resp, body := do(t, s, msgReq(t, s, msgBody, apiKey(a)))
	if resp.StatusCode != 429 || ratelimit(resp.Header) || !bytes.Contains(body, []byte("rate_limit_error")) {
		t.Fatalf("bare: %d %v %s", resp.StatusCode, resp.Header, body)
	}
	if resp, _ := do(t, s, msgReq(t, s, msgBody, apiKey(a))); resp.StatusCode != 429 || !ratelimit(resp.Header) {
		t.Fatalf("not bare: %d %v", resp.StatusCode, resp.Header)
	}
}
