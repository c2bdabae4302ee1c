package proxy

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/claudeflare/claudeflare/internal/fakeapi"
)

// An upstream that cannot be reached gives an error naming the URL; the
// query string the client sent (which may hold a token) must not reach
// the daemon's log with it.
func TestUnreachableUpstreamKeepsQueryOutOfLog(t *testing.T) {
	h := newHarness(t)
	h.addAPIKey("a", 0)
	h.reload()
	h.api.Inject(fakeapi.Fault{Kind: fakeapi.FaultResetBeforeHeaders, Count: -1})
	const secret = "qsecret-9f8e7d6c5b4a"
	rep := h.do(context.Background(), http.MethodPost, "/v1/messages?beta=true&token="+secret, `{"model":"m","max_tokens":1,"messages":[]}`, nil)
	if rep.status != http.StatusBadGateway {
		t.Fatalf("status %d, want 502: %s", rep.status, rep.body)
	}
	if !strings.Contains(h.logs.String(), "upstream request failed") {
		t.Fatalf("no upstream failure logged:\n%s", h.logs.String())
	}
	if strings.Contains(h.logs.String(), secret) {
		t.Fatalf("the query string reached the log:\n%s", h.logs.String())
	}
}
