package proxy

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/claudeflare/claudeflare/config"
	"github.com/claudeflare/claudeflare/internal/fakeapi"
	"github.com/claudeflare/claudeflare/store"
)

// TestRefreshBlockedKeepsTokenAndBacksOff: the token endpoint answers an
// expired account's refresh with a 403 HTML page. Requests fail over to
// the other account; the blocked account is not needs_login, its stored
// refresh token is unchanged, it shows refresh_blocked with an until, the
// endpoint sees one attempt within the backoff however many requests
// come, one warning is logged, and after the backoff the same refresh
// token works.
func TestRefreshBlockedKeepsTokenAndBacksOff(t *testing.T) {
	h := newHarness(t, withConfig(func(c *config.Config) { c.LBStrategy = config.StrategyRoundRobin }))
	idA := h.addOAuth("a", 0, true) // needs a refresh
	h.addOAuth("b", 1, false)
	h.reload()
	before, err := h.vault.Secrets(context.Background(), idA)
	if err != nil {
		t.Fatal(err)
	}
	h.api.BlockTokenEndpoint(100)
	for i := range 5 {
		rep := h.post(msgBody)
		if rep.status != 200 || h.lastRow().Account != "b" {
			t.Fatalf("request %d: %d %+v", i, rep.status, h.lastRow())
		}
		h.clock.Add(11 * time.Second) // past the old 30 s rest, within the 1 min backoff
	}
	if n := h.api.TokenRequests(); n != 1 {
		t.Fatalf("token endpoint got %d refresh attempts within the backoff, want 1", n)
	}
	if a := h.account("a"); a.Status != store.StatusOK {
		t.Fatalf("a blocked refresh marked a %s (%s)", a.Status, a.StatusReason)
	}
	after, err := h.vault.Secrets(context.Background(), idA)
	if err != nil {
		t.Fatal(err)
	}
	if after.RefreshToken != before.RefreshToken || after.Version != before.Version {
		t.Fatal("a blocked refresh changed the stored tokens")
	}
	l := h.limit("a")
	if l.Reason != LimitRefreshBlocked || !l.Blocked(h.clock.Now()) {
		t.Fatalf("limit of a = %+v, want %s", l, LimitRefreshBlocked)
	}
	for _, st := range h.srv.Accounts() { // what /api and metrics show
		if st.Name == "a" && (st.Usable || st.NeedsLogin || !strings.Contains(st.Reason, LimitRefreshBlocked) || !st.BlockedUntil.Equal(l.Until)) {
			t.Errorf("status of a = %+v, want refresh_blocked until %s", st, l.Until)
		}
	}
	logs := h.logs.String()
	if n := strings.Count(logs, `msg="token refresh blocked by`); n != 1 {
		t.Errorf("%d warnings about the blocked refresh, want 1:\n%s", n, logs)
	}
	if strings.Contains(logs, "Sorry, you have been blocked") || strings.Contains(logs, "<html") || strings.Contains(logs, fakeapi.BlockedPage[:40]) {
		t.Error("the HTML page reached the log")
	}
	if strings.Contains(logs, before.RefreshToken) {
		t.Error("the refresh token reached the log")
	}

	// After the backoff, with the endpoint healthy again, the same
	// refresh token succeeds and a serves again.
	h.api.ClearTokenFaults()
	h.clock.Add(2 * time.Minute)
	for i := 0; i < 3 && h.lastRow().Account != "a"; i++ {
		if rep := h.post(msgBody); rep.status != 200 {
			t.Fatalf("after the backoff: %d", rep.status)
		}
	}
	if h.lastRow().Account != "a" {
		t.Fatalf("a not used after the backoff: %+v", h.lastRow())
	}
	if n := h.api.TokenRequests(); n != 2 {
		t.Fatalf("token requests = %d, want 2", n)
	}
	now, err := h.vault.Secrets(context.Background(), idA)
	if err != nil {
		t.Fatal(err)
	}
	if now.RefreshToken == before.RefreshToken {
		t.Fatal("the refresh after the backoff did not rotate the token")
	}
}

// TestRefreshBlockedAloneHonoursRetryAfter: a lone account whose refresh
// gets a 429 with retry-after: the client is told why, the account rests
// for the retry-after (longer than the 1 min step), with no second
// attempt before it.
func TestRefreshBlockedAloneHonoursRetryAfter(t *testing.T) {
	h := newHarness(t)
	h.addOAuth("a", 0, true)
	h.reload()
	h.api.RateLimitTokenEndpoint(100, 10*time.Minute)
	start := h.clock.Now()
	rep := h.post(msgBody)
	if rep.status == 200 {
		t.Fatal("served without a token")
	}
	h.clock.Add(2 * time.Minute)
	rep2 := h.post(msgBody)
	if !strings.Contains(string(rep2.body), LimitRefreshBlocked) {
		t.Errorf("answer %d does not name %s: %s", rep2.status, LimitRefreshBlocked, rep2.body)
	}
	if n := h.api.TokenRequests(); n != 1 {
		t.Fatalf("token requests = %d, want 1", n)
	}
	if a := h.account("a"); a.Status != store.StatusOK {
		t.Fatalf("a = %s", a.Status)
	}
	if l := h.limit("a"); l.Until.Before(start.Add(10*time.Minute)) || l.Reason != LimitRefreshBlocked {
		t.Fatalf("limit = %+v, want refresh_blocked for the retry-after", l)
	}
}

// `accounts unblock` ends a blocked refresh's backoff in a running proxy:
// the next request tries the refresh again at once.
func TestUnblockEndsRefreshBackoff(t *testing.T) {
	h := newHarness(t)
	h.addOAuth("a", 0, true) // needs a refresh
	h.reload()
	h.api.BlockTokenEndpoint(1)
	if rep := h.post(msgBody); rep.status == 200 {
		t.Fatalf("served with the token endpoint blocked: %+v", h.lastRow())
	}
	if l := h.limit("a"); l.Reason != LimitRefreshBlocked {
		t.Fatalf("limit %+v", l)
	}
	if _, err := store.Unblock(context.Background(), h.vdb, "a", h.clock.Now()); err != nil {
		t.Fatal(err)
	}
	h.reload()
	if rep := h.post(msgBody); rep.status != 200 {
		t.Fatalf("after unblock: %d %s", rep.status, rep.body)
	}
	if n := h.api.TokenRequests(); n != 2 {
		t.Fatalf("%d token requests, want 2", n)
	}
}
