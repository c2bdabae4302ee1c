package proxy

import (
	"context"
	"testing"

	"github.com/claudeflare/claudeflare/internal/fakeapi"
)

// An idle OAuth account's utilization is refreshed from the usage
// endpoint; one near its limit takes no new session. A used account is
// not asked; an endpoint that refuses changes nothing.
func TestUsageRefreshSteersNewSessions(t *testing.T) {
	h := newHarness(t)
	h.addOAuth("a", 0, false)
	h.addOAuth("b", 0, false)
	h.reload()
	h.api.SetUnified("a", map[string]string{fakeapi.UnifiedPrefix + "5h-utilization": "0.97"})
	h.srv.refreshUsage(context.Background())
	if got := h.api.UsageCalls("a") + h.api.UsageCalls("b"); got != 2 {
		t.Fatalf("usage calls %d, want one per idle account", got)
	}
	if l := h.limit("a"); l.Util5h != 0.97 || !l.Reset5h.After(h.clock.Now()) {
		t.Fatalf("a after the refresh: util %v reset %v", l.Util5h, l.Reset5h)
	}
	if rep := h.post(msgBody); rep.status != 200 || h.lastRow().Account != "b" {
		t.Fatalf("a new session went to %s (a is at 0.97)", h.lastRow().Account)
	}
	// b just served: only a is idle.
	h.srv.refreshUsage(context.Background())
	if h.api.UsageCalls("b") != 1 || h.api.UsageCalls("a") != 2 {
		t.Fatalf("calls a %d b %d", h.api.UsageCalls("a"), h.api.UsageCalls("b"))
	}
	// Ten idle minutes later b is asked again.
	h.clock.Add(usageInterval)
	h.srv.refreshUsage(context.Background())
	if h.api.UsageCalls("b") != 2 {
		t.Fatalf("b not asked after %s idle", usageInterval)
	}
	// An endpoint that refuses changes nothing.
	before := h.limit("b")
	h.api.SetUnified("b", map[string]string{fakeapi.UnifiedPrefix + "5h-utilization": "0.5"})
	h.api.RefuseAccessTokens("b")
	h.clock.Add(usageInterval)
	h.srv.refreshUsage(context.Background())
	if after := h.limit("b"); after.Util5h != before.Util5h {
		t.Fatalf("a refused usage request changed b: %v -> %v", before.Util5h, after.Util5h)
	}
}
