package oauth

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// TestRefreshAnswerClassification: a 403 or 429 from the token endpoint
// (an HTML page or JSON) is a blocked refresh, not a dead grant; a 400
// invalid_grant is a dead grant; a 500 is transient. No HTML reaches the
// error text, and neither does the refresh token.
func TestRefreshAnswerClassification(t *testing.T) {
	const refresh = "rt-secret-refresh-token-0123456789abcdef"
	html := "<!DOCTYPE html><html><head><title>Attention Required! | Cloudflare</title></head><body><script>var x=1</script>Sorry, you have been blocked</body></html>"
	cases := []struct {
		name        string
		status      int
		ctype, body string
		retryAfter  string
		blocked     bool
		invalid     bool
		temporary   bool
		wantRetry   time.Duration
	}{
		{"403 html", 403, "text/html; charset=UTF-8", html, "", true, false, false, 0},
		{"429 json retry-after", 429, "application/json", `{"error":"rate_limit_exceeded","error_description":"slow down"}`, "120", true, false, true, 120 * time.Second},
		{"429 html", 429, "text/html", html, "", true, false, true, 0},
		{"403 invalid_grant", 403, "application/json", `{"error":"invalid_grant","error_description":"revoked"}`, "", false, true, false, 0},
		{"400 invalid_grant", 400, "application/json", `{"error":"invalid_grant","error_description":"Invalid refresh token"}`, "", false, true, false, 0},
		{"500", 500, "application/json", `{"error":"server_error"}`, "", false, false, true, 0},
		{"502 html", 502, "text/html", html, "", false, false, true, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", tc.ctype)
				if tc.retryAfter != "" {
					w.Header().Set("Retry-After", tc.retryAfter)
				}
				w.WriteHeader(tc.status)
				_, _ = w.Write([]byte(tc.body))
			}))
			defer srv.Close()
			c := &Client{TokenURL: srv.URL}
			_, err := c.Refresh(context.Background(), refresh)
			if err == nil {
				t.Fatal("no error")
			}
			var oe *Error
			if !errors.As(err, &oe) || oe.Status != tc.status {
				t.Fatalf("err = %#v", err)
			}
			if got := errors.Is(err, ErrRefreshBlocked); got != tc.blocked {
				t.Errorf("blocked = %v, want %v (%v)", got, tc.blocked, err)
			}
			if got := errors.Is(err, ErrInvalidGrant); got != tc.invalid {
				t.Errorf("invalid_grant = %v, want %v (%v)", got, tc.invalid, err)
			}
			if got := oe.Temporary(); got != tc.temporary {
				t.Errorf("temporary = %v, want %v", got, tc.temporary)
			}
			if oe.RetryAfter != tc.wantRetry {
				t.Errorf("retry-after = %v, want %v", oe.RetryAfter, tc.wantRetry)
			}
			msg := err.Error()
			for _, bad := range []string{"<", "Cloudflare", "blocked</", "script", refresh} {
				if strings.Contains(msg, bad) {
					t.Errorf("error quotes %q: %s", bad, msg)
				}
			}
		})
	}
}
