package apierr_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/claudeflare/claudeflare/internal/apierr"
)

// Every answer claudeflare makes itself carries its request id in the body,
// as Anthropic's errors do, equal to the x-claudeflare-request-id header:
// a fresh one, or the one the header already held.
func TestWriteBodyCarriesTheRequestID(t *testing.T) {
	replies := []apierr.Reply{
		{Status: http.StatusUnauthorized, Type: apierr.Authentication, Message: "bad key", Retry: apierr.RetryNo},
		{Status: http.StatusForbidden, Type: apierr.Permission, Message: "not allowed"},
		{Status: http.StatusTooManyRequests, Type: apierr.RateLimit, Message: "all limited", RetryAfter: 90 * time.Second},
		{Status: http.StatusServiceUnavailable, Type: apierr.API, Message: "no account", Retry: apierr.RetryNo},
		{Status: http.StatusBadGateway, Type: apierr.API, Message: "upstream unreachable"},
		{Status: http.StatusRequestEntityTooLarge, Type: apierr.TooLarge, Message: "too large"},
	}
	for _, preset := range []string{"", "01JCLAUDEFLARE0000000000AB"} {
		for _, r := range replies {
			w := httptest.NewRecorder()
			if preset != "" {
				w.Header().Set(apierr.RequestIDHeader, preset)
			}
			apierr.Write(w, r)
			hdr := w.Result().Header.Get(apierr.RequestIDHeader)
			if hdr == "" || (preset != "" && hdr != preset) {
				t.Fatalf("%d: header id %q (preset %q)", r.Status, hdr, preset)
			}
			var b struct {
				Type      string `json:"type"`
				RequestID string `json:"request_id"`
				Error     struct {
					Type string `json:"type"`
				} `json:"error"`
			}
			if err := json.Unmarshal(w.Body.Bytes(), &b); err != nil {
				t.Fatalf("%d: %v: %s", r.Status, err, w.Body)
			}
			if b.Type != "error" || b.Error.Type != r.Type || b.RequestID != hdr {
				t.Fatalf("%d: body %s, header id %q", r.Status, w.Body, hdr)
			}
		}
	}
}
