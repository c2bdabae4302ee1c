package e2e

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/claudeflare/claudeflare/internal/fakeapi"
)

// The affinity tests (issue 15): the default strategy keeps each Claude
// Code session on one account, spreads sessions over the pool, moves a
// session before its account's limit, and (with routing.hold_max) holds a
// request for an account that comes back soon. The daemon runs as a real
// process over the fake API; the fake's records say which account served
// each request of each session (the session header is forwarded).

const affinityConfig = `
retry_delay_ms = 10

[log]
flush_interval = "100ms"
`

const sessionHdr = "X-Claude-Code-Session-Id"

// sessionPost sends one message (or count_tokens) request of session sid
// and returns the status.
func sessionPost(t *testing.T, c *http.Client, url, path, sid string) int {
	t.Helper()
	body := `{"model":"` + sonnet + `","max_tokens":64,"messages":[{"role":"user","content":"hi"}]}`
	req, _ := http.NewRequest(http.MethodPost, url+path, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Anthropic-Version", "2023-06-01")
	req.Header.Set("X-Api-Key", "client-placeholder")
	req.Header.Set(sessionHdr, sid)
	resp, err := c.Do(req)
	if err != nil {
		t.Errorf("%s %s: %v", sid, path, err)
		return 0
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	return resp.StatusCode
}

// sessionAccounts maps each session to the accounts the fake saw its
// messages on, with counts; bad lists the upstream answers that were not
// 200.
func sessionAccounts(fake *fakeapi.Server) (map[string]map[string]int, []string) {
	out := map[string]map[string]int{}
	var bad []string
	for _, r := range fake.Requests() {
		if r.Path != fakeapi.MessagesPath {
			continue
		}
		sid := r.Header.Get(sessionHdr)
		if out[sid] == nil {
			out[sid] = map[string]int{}
		}
		out[sid][r.Account]++
		if r.Status != 200 {
			bad = append(bad, fmt.Sprintf("%s on %s: %d", sid, r.Account, r.Status))
		}
	}
	return out, bad
}

// Parallel sessions each stay on one account, spread over the pool; a
// session-less call (count_tokens) goes to its session's account.
func TestAffinityParallelSessions(t *testing.T) {
	w := newWorld(t, affinityConfig, "")
	for _, n := range []string{"a", "b", "c"} {
		w.addOAuth(n)
	}
	d := w.start()
	c := newClient(30*time.Second, 8)
	const sessions, turns = 6, 4
	var wg sync.WaitGroup
	for i := range sessions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sid := fmt.Sprintf("5f1c2b9e-0000-4000-8000-00000000000%d", i)
			for range turns {
				if st := sessionPost(t, c, d.url, "/v1/messages", sid); st != 200 {
					t.Errorf("%s: %d", sid, st)
					return
				}
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		t.Fatal(tail(d.logs(), 3000))
	}
	by, bad := sessionAccounts(w.fake)
	if len(bad) > 0 {
		t.Fatalf("upstream refusals: %v", bad)
	}
	perAccount := map[string]int{}
	home := map[string]string{}
	for sid, accts := range by {
		if len(accts) != 1 {
			t.Errorf("session %s moved: %v", sid, accts)
		}
		for a, n := range accts {
			if n != turns {
				t.Errorf("session %s: %d of %d turns on %s", sid, n, turns, a)
			}
			perAccount[a]++
			home[sid] = a
		}
	}
	if len(by) != sessions || len(perAccount) != 3 {
		t.Fatalf("%d sessions over accounts %v: want %d spread over a, b and c", len(by), perAccount, sessions)
	}
	// count_tokens of a known session: its account.
	sid := "5f1c2b9e-0000-4000-8000-000000000003"
	before := len(w.fake.Requests())
	if st := sessionPost(t, c, d.url, "/v1/messages/count_tokens", sid); st != 200 {
		t.Fatalf("count_tokens: %d", st)
	}
	recs := w.fake.Requests()[before:]
	if len(recs) != 1 || recs[0].Account != home[sid] {
		t.Fatalf("count_tokens of %s (on %s) went to %v", sid, home[sid], recs)
	}
}

// With budgets the fake enforces, a steady session moves before its
// account's limit (at routing.max_utilization, 0.95) and the upstream
// never answers 429 while the pool has capacity.
func TestAffinityMovesBeforeTheLimit(t *testing.T) {
	w := newWorld(t, affinityConfig, "")
	w.addOAuth("a")
	w.addOAuth("b")
	const budget = 20
	w.fake.SetBudget("a", budget, time.Hour)
	w.fake.SetBudget("b", budget, time.Hour)
	d := w.start()
	c := newClient(30*time.Second, 2)
	const turns = 30 // of the pool's 40
	for i := range turns {
		if st := sessionPost(t, c, d.url, "/v1/messages", "steady"); st != 200 {
			t.Fatalf("turn %d: %d\n%s", i+1, st, tail(d.logs(), 3000))
		}
	}
	by, bad := sessionAccounts(w.fake)
	if len(bad) > 0 {
		t.Fatalf("the upstream refused while the pool had capacity: %v", bad)
	}
	got := by["steady"]
	// The first account serves until its utilization reaches 0.95
	// (19 of 20), then the session moves once and stays.
	first, second := "a", "b"
	if got["b"] > got["a"] {
		first, second = "b", "a"
	}
	if got[first] != budget-1 || got[second] != turns-(budget-1) {
		t.Fatalf("turns per account %v: want %d on the first, then the rest on the other", got, budget-1)
	}
	if used := w.fake.BudgetUsed(first); used >= budget {
		t.Fatalf("the first account reached its limit: %d of %d", used, budget)
	}
	var order []string
	for _, r := range w.fake.Requests() {
		if r.Path == fakeapi.MessagesPath && (len(order) == 0 || order[len(order)-1] != r.Account) {
			order = append(order, r.Account)
		}
	}
	if len(order) != 2 {
		t.Fatalf("the session moved %d times: %v", len(order)-1, order)
	}
}

// routing.hold_max: a request that finds every account limited, the
// reset a few seconds away, waits and is served instead of getting 429.
func TestAffinityHoldServesAfterAShortReset(t *testing.T) {
	w := newWorld(t, affinityConfig+"\n[routing]\nhold_max = \"20s\"\n", "")
	w.addOAuth("a")
	w.fake.SetBudget("a", 2, 3*time.Second)
	d := w.start()
	c := newClient(60*time.Second, 2)
	for i := range 2 {
		if st := sessionPost(t, c, d.url, "/v1/messages", "s"); st != 200 {
			t.Fatalf("turn %d: %d", i+1, st)
		}
	}
	start := time.Now()
	if st := sessionPost(t, c, d.url, "/v1/messages", "s"); st != 200 {
		t.Fatalf("held request: %d\n%s", st, tail(d.logs(), 3000))
	}
	waited := time.Since(start)
	_, bad := sessionAccounts(w.fake)
	if len(bad) != 1 || !strings.Contains(bad[0], "429") {
		t.Fatalf("want the one upstream 429 that limited the account, got %v", bad)
	}
	if !strings.Contains(d.logs(), "held until an account came back") {
		t.Fatalf("no hold logged (waited %s)\n%s", waited, tail(d.logs(), 3000))
	}
	// The next request finds the account known limited no more.
	if st := sessionPost(t, c, d.url, "/v1/messages", "s"); st != 200 {
		t.Fatalf("after the hold: %d", st)
	}
}
