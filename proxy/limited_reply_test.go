package proxy

import (
	"encoding/json"
	"math"
	"strconv"
	"testing"
	"time"

	"github.com/claudeflare/claudeflare/internal/apierr"
	"github.com/claudeflare/claudeflare/internal/fakeapi"
)

// checkLimitedReply asserts the proxy's own all-limited 429: the unified
// headers of the account that resets soonest, retry-after to that reset,
// x-should-retry as far as the reset is, and the request id in the body.
func checkLimitedReply(t *testing.T, h *harness, rep reply, reset time.Time, claim, shouldRetry string) {
	t.Helper()
	if rep.err != nil || rep.status != 429 {
		t.Fatalf("status %d %v: %s", rep.status, rep.err, rep.body)
	}
	reset = time.Unix(reset.Unix(), 0) // the fake sends whole seconds
	wantAfter := strconv.Itoa(int(math.Ceil(reset.Sub(h.clock.Now()).Seconds())))
	for k, v := range map[string]string{
		"Anthropic-Ratelimit-Unified-Status":               "rejected",
		"Anthropic-Ratelimit-Unified-Reset":                strconv.FormatInt(reset.Unix(), 10),
		"Anthropic-Ratelimit-Unified-Representative-Claim": claim,
		"Retry-After":    wantAfter,
		"X-Should-Retry": shouldRetry,
	} {
		if got := rep.header.Get(k); got != v {
			t.Errorf("%s = %q, want %q", k, got, v)
		}
	}
	var b struct {
		Type      string `json:"type"`
		RequestID string `json:"request_id"`
		Error     struct {
			Type string `json:"type"`
		} `json:"error"`
	}
	if err := json.Unmarshal(rep.body, &b); err != nil {
		t.Fatalf("%v: %s", err, rep.body)
	}
	id := rep.header.Get(apierr.RequestIDHeader)
	if b.Type != "error" || b.Error.Type != apierr.RateLimit || id == "" || b.RequestID != id {
		t.Fatalf("body %s, header id %q", rep.body, id)
	}
	if row := h.lastRow(); row.ID != id || row.Status != 429 {
		t.Fatalf("row %+v, want id %s", row, id)
	}
}

func TestAllLimitedReplyOneAccount(t *testing.T) {
	h := newHarness(t)
	h.addOAuth("a", 0, false)
	h.reload()
	reset := h.clock.Now().Add(2 * time.Minute)
	h.api.Inject(fakeapi.Fault{Account: "a", Kind: fakeapi.FaultStatus, Status: 429,
		Headers: fakeapi.RateLimitHeaders("rejected", reset)})
	// The upstream's 429 limits the only account: the client gets the
	// proxy's 429 with what that answer said. Two minutes away: the
	// client's own retry rule applies (no x-should-retry).
	checkLimitedReply(t, h, h.post(msgBody), reset, "five_hour", "")
	// A later request, refused without reaching the upstream, says the same.
	n := len(h.apiRequests())
	checkLimitedReply(t, h, h.post(msgBody), reset, "five_hour", "")
	if len(h.apiRequests()) != n {
		t.Fatal("a limited account was tried")
	}
}

func TestAllLimitedReplyNamesTheSoonestAccount(t *testing.T) {
	h := newHarness(t)
	h.addOAuth("a", 0, false)
	h.addOAuth("b", 1, false)
	h.reload()
	now := h.clock.Now()
	resetA := now.Add(3 * time.Hour)
	resetB := now.Add(40 * time.Minute)
	hb := fakeapi.RateLimitHeaders("rejected", resetB)
	hb[fakeapi.UnifiedPrefix+"representative-claim"] = "seven_day"
	h.api.Inject(fakeapi.Fault{Account: "a", Kind: fakeapi.FaultStatus, Status: 429,
		Headers: fakeapi.RateLimitHeaders("rejected", resetA)})
	h.api.Inject(fakeapi.Fault{Account: "b", Kind: fakeapi.FaultStatus, Status: 429, Headers: hb})
	// Both accounts answer rejected: b resets first, so the 429 carries
	// b's reset and claim; 40 minutes away, retrying cannot help.
	checkLimitedReply(t, h, h.post(msgBody), resetB, "seven_day", "false")
	checkLimitedReply(t, h, h.post(msgBody), resetB, "seven_day", "false")
}
