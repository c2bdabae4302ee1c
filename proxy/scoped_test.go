package proxy

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/claudeflare/claudeflare/internal/fakeapi"
)

// hasRateLimitHeader reports whether h carries a rate-limit header.
func hasRateLimitHeader(h http.Header) bool {
	for k := range h {
		if strings.HasPrefix(strings.ToLower(k), "anthropic-ratelimit-") || strings.EqualFold(k, "retry-after") {
			return true
		}
	}
	return false
}

// A 429 without any rate-limit header (Anthropic refusing the request
// itself) never rests a one-account pool: the upstream's 429 reaches the
// client unchanged, and the next request is forwarded and served, not
// answered by claudeflare's own "all accounts limited".
func TestScoped429OneAccountKeepsServing(t *testing.T) {
	h := newHarness(t)
	h.addOAuth("only", 0, false)
	h.reload()
	const body = `{"type":"error","error":{"type":"rate_limit_error","message":"Extra usage is required for long context requests."}}`
	for round := range 3 {
		h.api.Inject(fakeapi.Fault{Kind: fakeapi.FaultStatus, Status: 429, Bare: true, Body: body})
		rep := h.post(msgBody)
		if rep.status != 429 || string(rep.body) != body || hasRateLimitHeader(rep.header) {
			t.Fatalf("round %d: %d %v %s", round, rep.status, rep.header, rep.body)
		}
		if row := h.lastRow(); row.Attempts != 1 {
			t.Fatalf("round %d: tried again on the same account: %+v", round, row)
		}
		if l := h.limit("only"); !l.Until.IsZero() || l.Cooldown != 0 {
			t.Fatalf("round %d: the account rests: %+v", round, l)
		}
		rep = h.post(msgBody)
		if rep.status != 200 {
			t.Fatalf("round %d: next request %d %s", round, rep.status, rep.body)
		}
	}
	if len(h.sleeps) != 0 {
		t.Fatalf("sleeps %v", h.sleeps)
	}
}

// With more accounts, a request-scoped 429 is tried once more, on another
// account: served there, or that account's 429 passes through; no
// account rests.
func TestScoped429TriedOnceElsewhere(t *testing.T) {
	h := newHarness(t)
	h.addOAuth("a", 0, false)
	h.addOAuth("b", 1, false)
	h.addOAuth("c", 2, false)
	h.reload()
	h.api.Inject(fakeapi.Fault{Account: "a", Kind: fakeapi.FaultStatus, Status: 429, Bare: true})
	if rep := h.post(msgBody); rep.status != 200 {
		t.Fatalf("%d %s", rep.status, rep.body)
	}
	if row := h.lastRow(); row.Attempts != 2 || row.Account != "b" {
		t.Fatalf("row %+v", row)
	}

	h.api.Inject(fakeapi.Fault{Kind: fakeapi.FaultStatus, Status: 429, Bare: true, Count: 3})
	rep := h.post(msgBody)
	if rep.status != 429 || hasRateLimitHeader(rep.header) || strings.Contains(string(rep.body), "claudeflare") {
		t.Fatalf("%d %v %s", rep.status, rep.header, rep.body)
	}
	if row := h.lastRow(); row.Attempts != 2 {
		t.Fatalf("tried %d times, want 2: %+v", row.Attempts, row)
	}
	now := h.clock.Now()
	for _, name := range []string{"a", "b", "c"} {
		if l := h.limit(name); l.Blocked(now) || l.Cooldown != 0 {
			t.Fatalf("%s rests: %+v", name, l)
		}
	}
	h.api.ClearFaults()
	if rep := h.post(msgBody); rep.status != 200 {
		t.Fatalf("next request: %d %s", rep.status, rep.body)
	}
	if len(h.sleeps) != 0 {
		t.Fatalf("sleeps %v", h.sleeps)
	}
}

// A one-account pool whose first answer is 529 and second 200: the
// client gets the 200, after one RETRY_DELAY_MS backoff.
func TestOverloadedOneAccountRetried(t *testing.T) {
	h := newHarness(t)
	h.addOAuth("only", 0, false)
	h.reload()
	h.api.Inject(fakeapi.Fault{Kind: fakeapi.FaultStatus, Status: 529})
	rep := h.post(msgBody)
	if rep.status != 200 {
		t.Fatalf("%d %s", rep.status, rep.body)
	}
	if row := h.lastRow(); row.Attempts != 2 || row.Status != 200 {
		t.Fatalf("row %+v", row)
	}
	if len(h.sleeps) != 1 || h.sleeps[0] != time.Second {
		t.Fatalf("sleeps %v, want [1s]", h.sleeps)
	}
	if l := h.limit("only"); l.Blocked(h.clock.Now()) {
		t.Fatalf("rests: %+v", l)
	}
}
