package oauth_test

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/claudeflare/claudeflare/internal/fakeapi"
	"github.com/claudeflare/claudeflare/oauth"
)

var clock = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func setup(t *testing.T) (*fakeapi.Server, *oauth.Client) {
	t.Helper()
	s := fakeapi.New()
	t.Cleanup(s.Close)
	s.Now = func() time.Time { return clock }
	c := &oauth.Client{
		TokenURL: s.TokenURL(),
		ClientID: "test-client-id",
		APIBase:  s.URL,
		HTTP:     s.Client(),
		Now:      func() time.Time { return clock },
	}
	return s, c
}

// noSecrets fails when err's text contains any of secrets.
func noSecrets(t *testing.T, err error, secrets ...string) {
	t.Helper()
	if err == nil {
		t.Fatal("want an error, got nil")
	}
	msg := err.Error()
	for _, s := range secrets {
		if s != "" && strings.Contains(msg, s) {
			t.Fatalf("error %q contains a secret", msg)
		}
	}
}

func TestParseMode(t *testing.T) {
	for in, want := range map[string]oauth.Mode{"max": oauth.ModeMax, "": oauth.ModeMax, "Console": oauth.ModeConsole} {
		got, err := oauth.ParseMode(in)
		if err != nil || got != want {
			t.Errorf("ParseMode(%q) = %q, %v", in, got, err)
		}
	}
	if _, err := oauth.ParseMode("pro"); err == nil {
		t.Error("ParseMode(pro) accepted")
	}
}

func TestNewPKCE(t *testing.T) {
	p, err := oauth.NewPKCE()
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte(p.Verifier))
	if want := base64.RawURLEncoding.EncodeToString(sum[:]); p.Challenge != want {
		t.Fatalf("challenge %q, want %q", p.Challenge, want)
	}
	if p.State == p.Verifier || p.State == p.Challenge {
		t.Fatal("state is derived from the verifier")
	}
	for _, v := range []string{p.Verifier, p.State} {
		b, err := base64.RawURLEncoding.DecodeString(v)
		if err != nil || len(b) < 32 {
			t.Fatalf("%q is not 32+ bytes of unpadded base64url: %v", v, err)
		}
	}
	q, _ := oauth.NewPKCE()
	if q.Verifier == p.Verifier || q.State == p.State {
		t.Fatal("two PKCEs share values")
	}
}

func TestAuthorizeURL(t *testing.T) {
	p, _ := oauth.NewPKCE()
	for mode, host := range map[oauth.Mode]string{oauth.ModeMax: "claude.ai", oauth.ModeConsole: "console.anthropic.com"} {
		u, err := url.Parse(oauth.AuthorizeURL(mode, "cid", p))
		if err != nil {
			t.Fatal(err)
		}
		if u.Scheme != "https" || u.Host != host || u.Path != "/oauth/authorize" {
			t.Errorf("%s: authorize at %s", mode, u)
		}
		q := u.Query()
		want := map[string]string{
			"code":                  "true",
			"client_id":             "cid",
			"response_type":         "code",
			"redirect_uri":          oauth.RedirectURI,
			"scope":                 oauth.Scope,
			"code_challenge":        p.Challenge,
			"code_challenge_method": "S256",
			"state":                 p.State,
		}
		for k, v := range want {
			if q.Get(k) != v {
				t.Errorf("%s: %s = %q, want %q", mode, k, q.Get(k), v)
			}
		}
		if len(q) != len(want) {
			t.Errorf("%s: extra parameters in %v", mode, q)
		}
	}
}

func TestParseCallback(t *testing.T) {
	const code, state = "the-code-0123456789", "the-state-abcdefgh"
	good := []string{
		code + "#" + state,
		"  " + code + "#" + state + "\n",
		oauth.RedirectURI + "?code=" + code + "&state=" + state,
		"\t" + oauth.RedirectURI + "?state=" + state + "&code=" + code + " ",
	}
	for _, in := range good {
		got, err := oauth.ParseCallback(in, state)
		if err != nil || got != code {
			t.Errorf("ParseCallback(%q) = %q, %v", in, got, err)
		}
	}
	bad := map[string]error{
		code:                                oauth.ErrNoState,
		code + "#":                          oauth.ErrNoState,
		"#" + state:                         oauth.ErrNoCode,
		"":                                  oauth.ErrNoCode,
		code + "#other-state":               oauth.ErrStateMismatch,
		code + "#" + state + "x":            oauth.ErrStateMismatch,
		oauth.RedirectURI + "?code=" + code: oauth.ErrNoState,
		oauth.RedirectURI + "?code=" + code + "&state=nope": oauth.ErrStateMismatch,
	}
	for in, want := range bad {
		_, err := oauth.ParseCallback(in, state)
		if !errors.Is(err, want) {
			t.Errorf("ParseCallback(%q) = %v, want %v", in, err, want)
		}
		noSecrets(t, err, code, state)
	}
	if _, err := oauth.ParseCallback(code+"#"+state, ""); !errors.Is(err, oauth.ErrStateMismatch) {
		t.Errorf("empty wanted state: %v", err)
	}
}

func TestExchange(t *testing.T) {
	s, c := setup(t)
	p, _ := oauth.NewPKCE()
	code := s.NewAuthCode("alice")
	s.ExpectChallenge(code, p.Challenge)

	got, err := oauth.ParseCallback(code+"#"+p.State, p.State)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := c.Exchange(context.Background(), got, p)
	if err != nil {
		t.Fatal(err)
	}
	if tok.AccessToken != s.CurrentAccessToken("alice") || tok.RefreshToken != s.CurrentRefreshToken("alice") {
		t.Fatal("exchange returned other tokens than the endpoint issued")
	}
	if want := clock.Add(fakeapi.DefaultExpiresIn); !tok.ExpiresAt.Equal(want) {
		t.Fatalf("ExpiresAt %v, want %v", tok.ExpiresAt, want)
	}
	if tok.AccountEmail != "alice@example.com" || tok.AccountUUID == "" || tok.Scope != oauth.Scope {
		t.Fatalf("account details %q %q %q", tok.AccountEmail, tok.AccountUUID, tok.Scope)
	}

	rec := s.Requests()[0]
	if rec.Method != http.MethodPost || rec.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("request %s %v", rec.Method, rec.Header)
	}
	var body map[string]string
	if err := json.Unmarshal(rec.Body, &body); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"grant_type": "authorization_code", "client_id": "test-client-id", "code": code,
		"state": p.State, "redirect_uri": oauth.RedirectURI, "code_verifier": p.Verifier,
	}
	for k, v := range want {
		if body[k] != v {
			t.Errorf("body %s = %q, want %q", k, body[k], v)
		}
	}

	// A used code, and a wrong verifier, are invalid grants.
	_, err = c.Exchange(context.Background(), code, p)
	if !errors.Is(err, oauth.ErrInvalidGrant) {
		t.Fatalf("reused code: %v", err)
	}
	noSecrets(t, err, code, p.Verifier, p.State)
	code2 := s.NewAuthCode("bob")
	s.ExpectChallenge(code2, p.Challenge)
	q, _ := oauth.NewPKCE()
	_, err = c.Exchange(context.Background(), code2, q)
	if !errors.Is(err, oauth.ErrInvalidGrant) {
		t.Fatalf("wrong verifier: %v", err)
	}
	noSecrets(t, err, code2, p.Verifier, q.Verifier, q.State)
}

func TestRefreshRotates(t *testing.T) {
	s, c := setup(t)
	rt := s.NewOAuthAccount("work")
	s.SetExpiresIn(time.Hour)
	tok, err := c.Refresh(context.Background(), rt)
	if err != nil {
		t.Fatal(err)
	}
	if tok.RefreshToken == rt || tok.RefreshToken != s.CurrentRefreshToken("work") || tok.AccessToken == "" {
		t.Fatal("refresh did not rotate")
	}
	if !tok.ExpiresAt.Equal(clock.Add(time.Hour)) {
		t.Fatalf("ExpiresAt %v", tok.ExpiresAt)
	}
	var body map[string]string
	_ = json.Unmarshal(s.Requests()[0].Body, &body)
	if body["grant_type"] != "refresh_token" || body["client_id"] != "test-client-id" || body["refresh_token"] != rt || len(body) != 3 {
		t.Fatalf("refresh body %v", body)
	}

	// The old refresh token is dead now.
	_, err = c.Refresh(context.Background(), rt)
	if !errors.Is(err, oauth.ErrInvalidGrant) {
		t.Fatalf("used refresh token: %v", err)
	}
	var oe *oauth.Error
	if !errors.As(err, &oe) || oe.Status != 400 || oe.Code != "invalid_grant" || oe.Temporary() {
		t.Fatalf("used refresh token: %#v", err)
	}
	noSecrets(t, err, s.AllTokens()...)

	tok2, err := c.Refresh(context.Background(), tok.RefreshToken)
	if err != nil || tok2.RefreshToken == tok.RefreshToken {
		t.Fatalf("second refresh: %v", err)
	}
	if s.RefreshCount("work") != 2 {
		t.Fatalf("RefreshCount %d", s.RefreshCount("work"))
	}
}

func TestRefreshKeepsOldTokenWhenNoneReturned(t *testing.T) {
	s, c := setup(t)
	s.InjectTokenFault(fakeapi.TokenFault{Status: 200, Body: `{"access_token":"sk-ant-oat01-new","expires_in":60}`})
	tok, err := c.Refresh(context.Background(), "sk-ant-ort01-old")
	if err != nil {
		t.Fatal(err)
	}
	if tok.RefreshToken != "sk-ant-ort01-old" || tok.AccessToken != "sk-ant-oat01-new" || !tok.ExpiresAt.Equal(clock.Add(time.Minute)) {
		t.Fatalf("token %+v", tok.ExpiresAt)
	}
}

func TestTemporary(t *testing.T) {
	s, c := setup(t)
	rt := s.NewOAuthAccount("a")
	for _, st := range []int{500, 502, 503, 529, 429, 408} {
		s.FailTokenEndpoint(st, 1)
		_, err := c.Refresh(context.Background(), rt)
		var oe *oauth.Error
		if !errors.As(err, &oe) || oe.Status != st || !oe.Temporary() || errors.Is(err, oauth.ErrInvalidGrant) {
			t.Errorf("status %d: %v", st, err)
		}
		noSecrets(t, err, rt)
	}
	for _, st := range []int{400, 401, 403} {
		s.FailTokenEndpoint(st, 1)
		_, err := c.Refresh(context.Background(), rt)
		var oe *oauth.Error
		if !errors.As(err, &oe) || oe.Status != st || oe.Temporary() {
			t.Errorf("status %d: %v", st, err)
		}
	}
	s.InjectTokenFault(fakeapi.TokenFault{Status: 429, Headers: map[string]string{"Retry-After": "7"}})
	_, err := c.Refresh(context.Background(), rt)
	var oe *oauth.Error
	if !errors.As(err, &oe) || oe.RetryAfter != 7*time.Second {
		t.Errorf("retry-after: %v", err)
	}
	if !s.RefreshLive(rt) {
		t.Fatal("failures killed the refresh token")
	}

	// Network failures are temporary; a cancelled context is not.
	s.InjectTokenFault(fakeapi.TokenFault{Reset: true})
	_, err = c.Refresh(context.Background(), rt)
	if !errors.As(err, &oe) || oe.Status != 0 || !oe.Temporary() {
		t.Errorf("reset connection: %#v", err)
	}
	noSecrets(t, err, rt)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = c.Refresh(ctx, rt)
	if !errors.As(err, &oe) || oe.Temporary() || !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: %#v", err)
	}
	dead := httptest.NewServer(http.NotFoundHandler())
	dead.Close()
	c2 := *c
	c2.TokenURL = dead.URL + "/v1/oauth/token"
	_, err = c2.Refresh(context.Background(), rt)
	if !errors.As(err, &oe) || !oe.Temporary() {
		t.Errorf("refused connection: %#v", err)
	}
	noSecrets(t, err, rt)
}

func TestBadAnswers(t *testing.T) {
	s, c := setup(t)
	rt := s.NewOAuthAccount("a")
	html := "<html><body>Bad gateway " + rt + "</body></html>"
	cases := []struct {
		name   string
		fault  fakeapi.TokenFault
		status int
		want   string
	}{
		{"html 200", fakeapi.TokenFault{Status: 200, Body: html, Headers: map[string]string{"Content-Type": "text/html"}}, 200, "not JSON (text/html"},
		{"html 502", fakeapi.TokenFault{Status: 502, Body: html, Headers: map[string]string{"Content-Type": "text/html"}}, 502, "not JSON"},
		{"garbage", fakeapi.TokenFault{Status: 200, Body: "\x00\x01garbage{"}, 200, "not JSON"},
		{"empty", fakeapi.TokenFault{Status: 200, Body: " "}, 200, "not JSON"},
		{"array", fakeapi.TokenFault{Status: 200, Body: `["x"]`}, 200, "not JSON"},
		{"oversized", fakeapi.TokenFault{Status: 200, Body: `{"access_token":"` + strings.Repeat("a", 2<<20) + `"}`}, 200, "larger than 1 MiB"},
		{"no access token", fakeapi.TokenFault{Status: 200, Body: `{"refresh_token":"x","expires_in":10}`}, 200, "no access_token"},
		{"no expiry", fakeapi.TokenFault{Status: 200, Body: `{"access_token":"x"}`}, 200, "expires_in"},
		{"negative expiry", fakeapi.TokenFault{Status: 200, Body: `{"access_token":"x","expires_in":-5}`}, 200, "expires_in"},
		{"wrong types", fakeapi.TokenFault{Status: 200, Body: `{"access_token":42,"expires_in":"soon"}`}, 200, "does not decode"},
		{"redirect", fakeapi.TokenFault{Status: 307, Body: "{}", Headers: map[string]string{"Location": s.URL + "/elsewhere"}}, 307, "307"},
	}
	for _, tc := range cases {
		s.InjectTokenFault(tc.fault)
		_, err := c.Refresh(context.Background(), rt)
		var oe *oauth.Error
		if !errors.As(err, &oe) || oe.Status != tc.status || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if len(err.Error()) > 300 {
			t.Errorf("%s: error is %d bytes long", tc.name, len(err.Error()))
		}
		noSecrets(t, err, rt)
	}
	for _, r := range s.Requests() {
		if r.Path == "/elsewhere" {
			t.Fatal("redirect followed")
		}
	}
	s.SetExpiresIn(0)
	_, err := c.Refresh(context.Background(), rt)
	if err == nil || !strings.Contains(err.Error(), "expires_in") {
		t.Fatalf("expires_in 0: %v", err)
	}
	noSecrets(t, err, s.AllTokens()...)
}

func TestErrorDescriptionsSanitised(t *testing.T) {
	s, c := setup(t)
	rt := s.NewOAuthAccount("a")
	desc := "token " + rt + " is bad\x1b[31m; also sk-ant-oat01-abc and " + strings.Repeat("Zx9", 20) + "\n" + strings.Repeat("long ", 100)
	b, _ := json.Marshal(map[string]string{"error": "invalid_request", "error_description": desc})
	s.InjectTokenFault(fakeapi.TokenFault{Status: 400, Body: string(b)})
	_, err := c.Refresh(context.Background(), rt)
	var oe *oauth.Error
	if !errors.As(err, &oe) || oe.Code != "invalid_request" {
		t.Fatalf("%v", err)
	}
	noSecrets(t, err, rt, "sk-ant-oat01-abc", "Zx9Zx9Zx9Zx9Zx9Zx9Zx9Zx9", "\x1b", "\n")
	if len([]rune(oe.Description)) > oauth.MaxDescription || !strings.Contains(oe.Description, "is bad") {
		t.Fatalf("description %q", oe.Description)
	}

	// Anthropic's error shape is understood too.
	s.InjectTokenFault(fakeapi.TokenFault{Status: 400, Body: `{"type":"error","error":{"type":"invalid_grant","message":"Refresh token ` + rt + ` revoked"}}`})
	_, err = c.Refresh(context.Background(), rt)
	if !errors.Is(err, oauth.ErrInvalidGrant) {
		t.Fatalf("anthropic-shaped invalid_grant: %v", err)
	}
	noSecrets(t, err, rt)

	// An answer echoing the new tokens in a bad field leaks none of them.
	s.InjectTokenFault(fakeapi.TokenFault{Status: 200, Body: `{"access_token":"sk-ant-oat01-short","refresh_token":"rt-short","expires_in":{"x":"rt-short"}}`})
	_, err = c.Refresh(context.Background(), rt)
	noSecrets(t, err, rt, "sk-ant-oat01-short", "rt-short")
}

func TestCreateAPIKey(t *testing.T) {
	s, c := setup(t)
	access := s.NewAccessToken("console")
	key, err := c.CreateAPIKey(context.Background(), access)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(key, "sk-ant-api03-") {
		t.Fatalf("key %q", key[:13])
	}
	rec := s.Requests()[0]
	if rec.Path != oauth.CreateAPIKeyPath || rec.Header.Get("Authorization") != "Bearer "+access || rec.Account != "console" {
		t.Fatalf("request %+v", rec.Path)
	}
	// The key works as x-api-key.
	req, _ := http.NewRequest(http.MethodPost, s.URL+"/v1/messages", strings.NewReader(`{"model":"m","messages":[]}`))
	req.Header.Set("x-api-key", key)
	resp, err := s.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("created key refused: %d", resp.StatusCode)
	}

	_, err = c.CreateAPIKey(context.Background(), "sk-ant-oat01-not-a-real-one")
	var oe *oauth.Error
	if !errors.As(err, &oe) || oe.Status != 401 || oe.Code != "authentication_error" {
		t.Fatalf("bad token: %v", err)
	}
	noSecrets(t, err, "sk-ant-oat01-not-a-real-one", access, key)
}

func TestSanitize(t *testing.T) {
	secret := "my-secret-token"
	cases := []struct{ in, want string }{
		{"plain message", "plain message"},
		{"line\nbreak\ttab\x00nul\x7f", "line break tabnul"},
		{"key sk-ant-api03-abc_DEF-123 here", "key [REDACTED] here"},
		{"hex 0123456789abcdef0123456789abcdef end", "hex [REDACTED] end"},
		{"b64 QUJDREVGR0hJSktMTU5PUFFSU1RVVldY== end", "b64 [REDACTED] end"},
		{"short abc123 ok", "short abc123 ok"},
		{"path /api/oauth/claude_cli/create_api_key kept", "path /api/oauth/claude_cli/create_api_key kept"},
		{"exact my-secret-token and my-secret-token", "exact [REDACTED] and [REDACTED]"},
		{"bidi \u202egnp.exe", "bidi gnp.exe"},
	}
	for _, c := range cases {
		if got := oauth.Sanitize(c.in, secret, ""); got != c.want {
			t.Errorf("Sanitize(%q) = %q, want %q", c.in, got, c.want)
		}
	}
	long := oauth.Sanitize(strings.Repeat("word ", 100))
	if n := len([]rune(long)); n != oauth.MaxDescription || !strings.HasSuffix(long, "...") {
		t.Errorf("long message: %d chars %q", n, long)
	}
	// A secret split at the cap is removed before the cut.
	msg := strings.Repeat("x ", 95) + secret
	if got := oauth.Sanitize(msg, secret); strings.Contains(got, "my-secret") {
		t.Errorf("cut secret survived: %q", got)
	}
}

func TestTokenPrintsNoSecret(t *testing.T) {
	tok := oauth.Token{AccessToken: "sk-ant-oat01-aaaa", RefreshToken: "sk-ant-ort01-bbbb", ExpiresAt: clock}
	for _, f := range []string{"%v", "%+v", "%#v", "%s"} {
		if out := fmt.Sprintf(f, tok); strings.Contains(out, "aaaa") || strings.Contains(out, "bbbb") {
			t.Errorf("%s prints %q", f, out)
		}
	}
}

func TestDefaults(t *testing.T) {
	c := &oauth.Client{}
	_ = c // the zero Client uses the defaults; nothing here may reach the network.
	if oauth.DefaultClientID == "" || !strings.HasPrefix(oauth.DefaultTokenURL, "https://") {
		t.Fatal("defaults missing")
	}
	_, err := c.Refresh(context.Background(), "")
	if err == nil {
		t.Fatal("empty refresh token accepted")
	}
}
