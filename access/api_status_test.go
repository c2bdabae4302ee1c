package access_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/claudeflare/claudeflare/access"
	"github.com/claudeflare/claudeflare/proxy"
	"github.com/claudeflare/claudeflare/requestlog"
)

func statusOf(t *testing.T, r reply) requestlog.Status {
	t.Helper()
	expectStatus(t, r, 200, "")
	var st requestlog.Status
	if err := json.Unmarshal([]byte(r.body), &st); err != nil {
		t.Fatalf("not JSON: %s", r.body)
	}
	return st
}

// GET /api/status on the real daemon: the accounts with their state and
// the proxy's live sessions, a session found by its hash, the 5h
// utilization the upstream reported; dashboard.view (viewer), not api.
func TestAPIStatus(t *testing.T) {
	d := newDaemonStack(t, nil)
	d.api.SetBudget("work", 4, 5*time.Hour)

	st := statusOf(t, d.do("GET", "/api/status", ""))
	if len(st.Accounts) != 2 || st.Accounts[0].Name != "work" || st.Accounts[0].State != "ok" || st.Accounts[1].Kind != "apikey" {
		t.Fatalf("accounts: %+v", st.Accounts)
	}
	if st.Pool.Total != 2 || st.Pool.Usable != 2 || st.Accounts[0].Sessions == nil || *st.Accounts[0].Sessions != 0 {
		t.Fatalf("before any request: %+v %+v", st.Pool, st.Accounts[0])
	}

	// One Claude Code session: its account holds it, and the log finds it
	// by the hash statusline makes of the session id.
	expectStatus(t, d.message(false, "x-claude-code-session-id", "4f1c2b7e-statustest"), 200, "")
	hash := proxy.ClaudeCodeSessionHash("4f1c2b7e-statustest")
	var served string
	waitFor(t, "the session's request in the log", func() bool {
		st = statusOf(t, d.do("GET", "/api/status?session="+hash, ""))
		if st.Session != nil && st.Session.Account != nil {
			served = *st.Session.Account
			return true
		}
		return false
	})
	total := 0
	for _, a := range st.Accounts {
		if a.Name == served && (a.Sessions == nil || *a.Sessions != 1) {
			t.Errorf("%s serves the session but holds %v sessions", served, a.Sessions)
		}
		total += *a.Sessions
	}
	if total != 1 {
		t.Errorf("%d sessions in all, want 1: %+v", total, st.Accounts)
	}
	if served != "work" {
		t.Fatalf("the session went to %s, want work (priority 0, same headroom)", served)
	}
	waitFor(t, "work's 5h utilization to be saved", func() bool {
		// (Its reset is not checked: the fake's real-time reset is months
		// from this test's clock, which the proxy ignores.)
		st = statusOf(t, d.do("GET", "/api/status", ""))
		u := st.Accounts[0].Utilization5h
		return u != nil && *u == 0.25
	})
	expectStatus(t, d.do("GET", "/api/status?session=not-a-hash", ""), 400, "invalid_request_error")
	expectStatus(t, d.do("POST", "/api/status", ""), 405, "invalid_request_error")

	// With keys: a viewer reads it, an api key may not.
	_, viewer := d.adminKeys()
	apiKey, _, err := access.CreateKey(context.Background(), d.vdb, d.akey, "cc", access.RoleAPI, "cli:test", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	d.waitKeysSeen(apiKey)
	statusOf(t, d.do("GET", "/api/status", "", "x-api-key", viewer))
	expectStatus(t, d.do("GET", "/api/status", "", "x-api-key", apiKey), 403, "permission_error")
	expectStatus(t, d.do("GET", "/api/status", ""), 401, "authentication_error")
}
