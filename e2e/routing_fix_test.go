package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/claudeflare/claudeflare/internal/fakeapi"
)

// The fixes after issue 14's process tests: what a user sees of an
// account resting after an uncured 401 or a refusal of extra usage, from
// the client's side and in `accounts list --json`, across a restart.

// e, alone, later requests) While the only account rests after a 401 that
// no refresh cured, no wait of the client's cures it: the requests that
// follow get the proxy's 503 naming the account's state, with
// x-should-retry: false and no retry-after (not the all-limited 429 that
// Claude Code retries for minutes). `accounts list --json` shows the rest
// (limited, window unauthorized, until), and a restarted daemon keeps it.
func TestFixUncurable401OneAccountRests(t *testing.T) {
	rt := newRouter(t, "solo")
	rt.mustServe(sonnet)
	rt.fake.RefuseAccessTokens("solo")
	if r := rt.ask(sonnet); r.status != 401 || r.header.Get("X-Should-Retry") != "false" {
		t.Fatalf("uncurable 401: %s, x-should-retry %q", r, r.header.Get("X-Should-Retry"))
	}
	checkRests := func(when string) {
		t.Helper()
		for i := range 3 {
			r := rt.ask(sonnet)
			_, msg, id := r.errorOf()
			if r.status != 503 || r.header.Get("X-Should-Retry") != "false" || r.header.Get("Retry-After") != "" ||
				len(r.attempts) != 0 || id == "" ||
				!strings.Contains(msg, "no claudeflare account is usable") || !strings.Contains(msg, "solo: limited (unauthorized)") {
				t.Fatalf("%s, request %d while solo rests: %s, x-should-retry %q, retry-after %q",
					when, i, r, r.header.Get("X-Should-Retry"), r.header.Get("Retry-After"))
			}
		}
	}
	checkRests("before a restart")
	l := rt.waitStatus("solo", "limited")
	if l.Window != "unauthorized" || l.until().Before(time.Now().Add(30*time.Second)) {
		t.Fatalf("accounts list: solo limited with window %q until %v, want unauthorized for about 1 min: %s",
			l.Window, l.until(), l.raw)
	}

	if err := rt.d.stop(t); err != nil {
		t.Fatalf("daemon stop: %v\n%s", err, tail(rt.d.logs(), 3000))
	}
	rt.d = rt.start()
	checkRests("after a restart")
	if l := rt.accounts()["solo"]; l.Status != "limited" || l.Window != "unauthorized" {
		t.Fatalf("accounts list after a restart: %s", l.raw)
	}
}

// Overage refused) An account refused for extra usage is `limited` with
// window extra_usage in `accounts list --json` (not `rejected`), until
// the unified reset, and a restarted daemon still leaves it out.
func TestFixExtraUsageRefusalSaved(t *testing.T) {
	rt := newRouter(t, "alpha", "beta")
	reset := time.Now().Add(time.Hour)
	rt.fake.SetOverage("alpha", fakeapi.OverageRefused400, reset)
	if r := rt.untilTried(sonnet, "alpha"); r.servedBy() != "beta" {
		t.Fatalf("the refusal of extra usage did not fail over: %s", r)
	}
	l := rt.waitStatus("alpha", "limited")
	if l.Window != "extra_usage" || !l.until().Equal(time.Unix(reset.Unix(), 0)) {
		t.Fatalf("accounts list: alpha limited (%q) until %v, want extra_usage until %v: %s",
			l.Window, l.until(), reset.Unix(), l.raw)
	}

	if err := rt.d.stop(t); err != nil {
		t.Fatalf("daemon stop: %v\n%s", err, tail(rt.d.logs(), 3000))
	}
	rt.d = rt.start()
	for range 4 {
		if r := rt.ask(sonnet); r.servedBy() != "beta" || len(r.attempts) != 1 {
			t.Fatalf("after a restart, alpha (refused extra usage) was tried: %s", r)
		}
	}
	if l := rt.accounts()["alpha"]; l.Status != "limited" || l.Window != "extra_usage" {
		t.Fatalf("accounts list after a restart: %s", l.raw)
	}
}
