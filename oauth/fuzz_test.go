package oauth

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"
)

// Fuzz tests for what the token endpoint may answer. Seeds are in
// testdata/fuzz/.

// answer is a canned HTTP answer, served without a network.
type answer struct {
	status      int
	contentType string
	retryAfter  string
	body        []byte
}

func (a answer) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Body != nil {
		io.Copy(io.Discard, req.Body)
		req.Body.Close()
	}
	h := http.Header{}
	if a.contentType != "" {
		h.Set("Content-Type", a.contentType)
	}
	if a.retryAfter != "" {
		h.Set("Retry-After", a.retryAfter)
	}
	return &http.Response{StatusCode: a.status, Header: h, Body: io.NopCloser(bytes.NewReader(a.body)), Request: req}, nil
}

// secretLike is true for strings the checks below can look for without
// matching the error template by chance.
func secretLike(s string) bool {
	return len(s) >= 20 && strings.ContainsAny(s, "0123456789") && strings.IndexFunc(s, unicode.IsUpper) >= 0 &&
		strings.IndexFunc(s, func(r rune) bool { return r > unicode.MaxASCII || !unicode.IsPrint(r) }) < 0
}

// FuzzRefreshAnswer: whatever the token endpoint answers (status,
// content type, retry-after, body), Refresh never panics; an error is an
// *Error whose text holds neither the refresh token sent nor a token the
// answer carried; a success has an access token and an expiry in the
// future, and never forgets the refresh token.
func FuzzRefreshAnswer(f *testing.F) {
	f.Add(200, "application/json", "", []byte(`{"access_token":"sk-ant-oat01-AAAAAAAAAAAAAAAAAAAA1","refresh_token":"sk-ant-ort01-BBBBBBBBBBBBBBBBBBBBB2","expires_in":28800,"token_type":"Bearer"}`))
	f.Add(200, "application/json", "", []byte(`{"access_token":"sk-ant-oat01-AAAAAAAAAAAAAAAAAAAA1","expires_in":1e308}`))
	f.Add(200, "application/json; charset=utf-8", "", []byte(`{"access_token":"","expires_in":-1}`))
	f.Add(400, "application/json", "", []byte(`{"error":"invalid_grant","error_description":"Refresh token sk-ant-ort01-OLDTOKEN0123456789ABCDEF is invalid"}`))
	f.Add(429, "application/json", "30", []byte(`{"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}`))
	f.Add(503, "text/html", "Wed, 21 Oct 2015 07:28:00 GMT", []byte(`<html>upstream sk-ant-ort01-OLDTOKEN0123456789ABCDEF</html>`))
	f.Add(200, "", "", []byte(`{"access_token":1,"refresh_token":{"x":"sk-ant-ort01-CCCCCCCCCCCCCCCCCCCC3"}}`))
	f.Add(302, "application/json", "-1", []byte(`{}`))
	const old = "sk-ant-ort01-OLDTOKEN0123456789ABCDEF"
	now := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, status int, contentType, retry string, body []byte) {
		if status < 100 || status > 999 {
			status = 100 + (status%900+900)%900
		}
		c := &Client{TokenURL: "http://token.invalid/v1/oauth/token", HTTP: &http.Client{Transport: answer{status, contentType, retry, body}}, Now: func() time.Time { return now }}
		tok, err := c.Refresh(context.Background(), old)
		var answered struct {
			AccessToken  any `json:"access_token"`
			RefreshToken any `json:"refresh_token"`
		}
		json.Unmarshal(body, &answered)
		var secrets []string
		for _, s := range []any{answered.AccessToken, answered.RefreshToken} {
			if str, ok := s.(string); ok && secretLike(str) {
				secrets = append(secrets, str)
			}
		}
		if err != nil {
			var oe *Error
			if !errors.As(err, &oe) {
				t.Fatalf("error %T is not an *oauth.Error: %v", err, err)
			}
			msg := err.Error()
			if strings.Contains(msg, old) {
				t.Fatalf("error quotes the refresh token sent: %q", msg)
			}
			for _, s := range secrets {
				if strings.Contains(msg, s) {
					t.Fatalf("error quotes a token of the answer %q: %q", s, msg)
				}
			}
			if oe.RetryAfter < 0 {
				t.Fatalf("negative retry-after %v", oe.RetryAfter)
			}
			if !utf8.ValidString(msg) {
				t.Fatalf("error is not UTF-8: %q", msg)
			}
			return
		}
		if status < 200 || status > 299 {
			t.Fatalf("status %d accepted", status)
		}
		if tok.AccessToken == "" || tok.RefreshToken == "" {
			t.Fatalf("token without access or refresh token: %+v", tok)
		}
		if !tok.ExpiresAt.After(now) || tok.ExpiresAt.After(now.AddDate(11, 0, 0)) {
			t.Fatalf("expiry %v out of range", tok.ExpiresAt)
		}
	})
}

// FuzzSanitize: the result is valid UTF-8 without control characters, at
// most MaxDescription characters, and holds no printable secret it was
// given.
func FuzzSanitize(f *testing.F) {
	f.Add("invalid_grant: token sk-ant-ort01-abc123 rejected", "sk-ant-ort01-abc123")
	f.Add("line\nbreak\x00\u202e and a long run QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo=", "")
	f.Add("claude_cli/create_api_key not found", "create")
	f.Add(strings.Repeat("é", 300), "éé")
	f.Add("abcabc", "bca")
	f.Fuzz(func(t *testing.T, msg, secret string) {
		out := Sanitize(msg, secret)
		if !utf8.ValidString(out) {
			t.Fatalf("not UTF-8: %q", out)
		}
		if n := utf8.RuneCountInString(out); n > MaxDescription {
			t.Fatalf("%d characters", n)
		}
		for _, r := range out {
			if unicode.IsControl(r) || unicode.In(r, unicode.Cf) {
				t.Fatalf("control character %U in %q", r, out)
			}
		}
		printable := len(secret) >= 4 && utf8.ValidString(secret) && strings.IndexFunc(secret, func(r rune) bool {
			return unicode.IsControl(r) || unicode.In(r, unicode.Cf) || unicode.IsSpace(r)
		}) < 0
		if printable && strings.Contains(out, secret) && !strings.Contains(Redacted+"...", secret) {
			t.Fatalf("Sanitize(%q, %q) = %q keeps the secret", msg, secret, out)
		}
	})
}

// TestSanitizeSecretsCleanedLikeTheMessage: a secret is matched as the
// message's cleaning leaves it (found by FuzzSanitize: a secret that was
// the first byte of "é" cut every "é" in half, leaving invalid UTF-8).
func TestSanitizeSecretsCleanedLikeTheMessage(t *testing.T) {
	if got := Sanitize("ééé", "\xc3"); got != "ééé" {
		t.Errorf("half-character secret: %q", got)
	}
	if got := Sanitize("token was ab\ncd0123456789", "ab\ncd0123456789"); strings.Contains(got, "cd0123456789") {
		t.Errorf("secret with a line break kept: %q", got)
	}
}
