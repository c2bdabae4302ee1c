package proxy

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/claudeflare/claudeflare/store"
)

// healthOf is GET /health: the HTTP code and the decoded answer.
func (h *harness) healthOf() (int, healthReply, string) {
	h.t.Helper()
	rep := h.do(context.Background(), http.MethodGet, "/health", "", nil)
	var hr healthReply
	if err := json.Unmarshal(rep.body, &hr); err != nil {
		h.t.Fatalf("/health: %d %q: %v", rep.status, rep.body, err)
	}
	return rep.status, hr, string(rep.body)
}

// expectHealth checks the code and the word, and that the answer names
// no account.
func (h *harness) expectHealth(code int, status string, names ...string) healthReply {
	h.t.Helper()
	got, hr, raw := h.healthOf()
	if got != code || hr.Status != status {
		h.t.Fatalf("/health = %d %s, want %d %q", got, raw, code, status)
	}
	if status != HealthOK && len(hr.Reasons) == 0 {
		h.t.Fatalf("/health %s without reasons: %s", status, raw)
	}
	for _, n := range names {
		if strings.Contains(raw, n) {
			h.t.Fatalf("/health names account %q: %s", n, raw)
		}
	}
	return hr
}

func TestHealthNoAccountsIsDown(t *testing.T) {
	h := newHarness(t)
	hr := h.expectHealth(http.StatusServiceUnavailable, HealthDown)
	if hr.Accounts != 0 || !strings.Contains(hr.Reasons[0], "accounts add") {
		t.Fatalf("reasons %q", hr.Reasons)
	}
}

func TestHealthAccountsOut(t *testing.T) {
	h := newHarness(t)
	h.addOAuth("alpha-acct", 0, false)
	h.addAPIKey("beta-acct", 1)
	h.reload()
	hr := h.expectHealth(http.StatusOK, HealthOK)
	if hr.Accounts != 2 || hr.UsableAccounts != 2 || hr.RequestLog != "ok" || len(hr.Reasons) != 0 {
		t.Fatalf("all fine: %+v", hr)
	}

	// One of two paused: requests are still served, so 200, degraded.
	ctx := context.Background()
	if err := store.SetPaused(ctx, h.vdb, "beta-acct", true, h.clock.Now()); err != nil {
		t.Fatal(err)
	}
	h.reload()
	hr = h.expectHealth(http.StatusOK, HealthDegraded, "alpha-acct", "beta-acct")
	if hr.UsableAccounts != 1 || hr.Unusable["paused"] != 1 || !strings.Contains(hr.Reasons[0], "1 of 2 accounts not usable (1 paused)") {
		t.Fatalf("one paused: %+v", hr)
	}
	if rep := h.post(msgBody); rep.status != 200 {
		t.Fatalf("degraded but not serving: %d %s", rep.status, rep.body)
	}

	// Both out: nothing can be served, 503 down, still no names.
	if err := store.SetPaused(ctx, h.vdb, "alpha-acct", true, h.clock.Now()); err != nil {
		t.Fatal(err)
	}
	h.reload()
	hr = h.expectHealth(http.StatusServiceUnavailable, HealthDown, "alpha-acct", "beta-acct")
	if !strings.Contains(hr.Reasons[0], "no usable account (2 paused)") {
		t.Fatalf("reasons %q", hr.Reasons)
	}
	if rep := h.post(msgBody); rep.status != http.StatusServiceUnavailable {
		t.Fatalf("down but a request got %d", rep.status)
	}

	// Back: ok again.
	store.SetPaused(ctx, h.vdb, "alpha-acct", false, h.clock.Now())
	store.SetPaused(ctx, h.vdb, "beta-acct", false, h.clock.Now())
	h.reload()
	h.expectHealth(http.StatusOK, HealthOK)
}

// TestHealthRequestLogFailing deletes log.db under the running proxy (a
// real file, as an operator's cleanup script might): the requests served
// after it are lost, and /health says so (200, still serving) until the
// loss is healthWindow old.
func TestHealthRequestLogFailing(t *testing.T) {
	h := newHarness(t)
	h.addAPIKey("work", 0)
	h.reload()
	if rep := h.post(msgBody); rep.status != 200 {
		t.Fatalf("%d %s", rep.status, rep.body)
	}
	h.srv.rec.sync(context.Background())
	h.expectHealth(http.StatusOK, HealthOK)

	if err := os.Remove(filepath.Join(h.dir, "log.db")); err != nil {
		t.Fatal(err)
	}
	if rep := h.post(msgBody); rep.status != 200 {
		t.Fatalf("%d %s", rep.status, rep.body)
	}
	h.srv.rec.sync(context.Background())
	hr := h.expectHealth(http.StatusOK, HealthDegraded)
	if hr.RequestLog != "failing" || hr.Recorder.FailedRecords == 0 || !strings.Contains(hr.Reasons[0], "request log") {
		t.Fatalf("log gone: %+v", hr)
	}
	// Still degraded within the window, ok once the loss is older.
	h.clock.Add(healthWindow - time.Second)
	h.expectHealth(http.StatusOK, HealthDegraded)
	h.clock.Add(2 * time.Second)
	h.expectHealth(http.StatusOK, HealthOK)
}

// TestHealthDeadKey: an API key that upstream refuses takes its account
// out (key_refused); /health stops saying ok, counting it by state.
func TestHealthDeadKey(t *testing.T) {
	h := newHarness(t)
	h.addAPIKey("first-acct", 0)
	h.addAPIKey("second-acct", 1)
	h.reload()
	h.expectHealth(http.StatusOK, HealthOK)
	h.api.RevokeAPIKeys("first-acct")
	if rep := h.post(msgBody); rep.status != 200 {
		t.Fatalf("failover: %d %s", rep.status, rep.body)
	}
	hr := h.expectHealth(http.StatusOK, HealthDegraded, "first-acct", "second-acct")
	if hr.Unusable["key_refused"] != 1 || hr.UsableAccounts != 1 {
		t.Fatalf("dead key: %+v", hr)
	}
	h.api.RevokeAPIKeys("second-acct")
	h.post(msgBody)
	h.expectHealth(http.StatusServiceUnavailable, HealthDown, "first-acct", "second-acct")
}
