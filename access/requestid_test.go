package access_test

import (
	"encoding/json"
	"testing"

	"github.com/claudeflare/claudeflare/access"
	"github.com/claudeflare/claudeflare/config"
	"github.com/claudeflare/claudeflare/internal/apierr"
)

// The guard's refusals carry the request id in the body, as Anthropic's
// errors do, equal to the x-claudeflare-request-id header.
func TestGuardRefusalsCarryTheRequestID(t *testing.T) {
	h := newHarness(t, func(c *config.Config) { c.AllowedOrigins = []string{"*"} })
	h.key("keep", access.RoleAPI)
	for _, r := range []reply{
		h.do("POST", "/v1/messages"),
		h.do("POST", "/v1/messages", "x-api-key", "cf_nope"),
		h.do("POST", "/v1/messages", "Origin", "https://evil.example"),
	} {
		if r.status < 400 {
			t.Fatalf("not refused: %d %s", r.status, r.body)
		}
		var b struct {
			Type      string `json:"type"`
			RequestID string `json:"request_id"`
		}
		if err := json.Unmarshal([]byte(r.body), &b); err != nil {
			t.Fatalf("%v: %s", err, r.body)
		}
		id := r.header.Get(apierr.RequestIDHeader)
		if b.Type != "error" || id == "" || b.RequestID != id {
			t.Fatalf("%d: body %s, header id %q", r.status, r.body, id)
		}
	}
}
