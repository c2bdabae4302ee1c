package e2e

import (
	"context"
	"testing"
	"time"

	"github.com/claudeflare/claudeflare/internal/fakeapi"
)

// TestJSONBodyResetMidway: the upstream answers 200 to a non-streamed
// request, sends half of the JSON body and resets the connection. The
// client must see either an error in Anthropic's shape (nothing had
// reached it, so the proxy may still answer, or fail over) or the status
// line followed by a body that breaks off; never a connection dropped
// before any response, which clients report as a network failure of the
// proxy itself.
func TestJSONBodyResetMidway(t *testing.T) {
	w := newWorld(t, storageConfig, "")
	w.addOAuth("one")
	w.addOAuth("two")
	d := w.start()
	c := newClient(20*time.Second, 1)
	for i := range 5 {
		w.fake.Inject(fakeapi.Fault{Path: fakeapi.MessagesPath, Kind: fakeapi.FaultResetMidStream, Delay: 5 * time.Millisecond})
		r := send(context.Background(), c, d.url, false)
		switch r.kind {
		case kComplete, kAPIError, kCut:
			t.Logf("try %d: client saw %s (status %d) %s", i, r.kind, r.status, r.detail)
		default:
			t.Errorf("try %d: client saw %s (status %d): %s", i, r.kind, r.status, r.detail)
		}
	}
}
