package proxy

import (
	"strings"
	"testing"
	"time"

	"github.com/claudeflare/claudeflare/config"
)

func names(as []*account) string {
	var s []string
	for _, a := range as {
		s = append(s, a.Name)
	}
	return strings.Join(s, ",")
}

func testAccounts() []*account {
	return []*account{
		{ID: 1, Name: "a", Priority: 0, Status: "ok"},
		{ID: 2, Name: "b", Priority: 1, Status: "ok"},
		{ID: 3, Name: "c", Priority: 2, Status: "ok"},
	}
}

func TestSelectorSession(t *testing.T) {
	accts := testAccounts()
	s := &selector{strategy: config.StrategySession, session: time.Hour}
	if got := names(s.pick(accts, t0, "").Candidates); got != "a,b,c" {
		t.Fatal(got)
	}
	// Failover to b makes b the session's account until the session ends.
	s.served(accts[1], t0)
	if got := names(s.pick(accts, t0.Add(time.Minute), "").Candidates); got != "b,a,c" {
		t.Fatal(got)
	}
	if got := names(s.pick(accts, t0.Add(2*time.Hour), "").Candidates); got != "a,b,c" {
		t.Fatalf("after the session: %s", got)
	}
	// The active account limited: the next in priority order takes over.
	accts[0].limit.Until = t0.Add(3 * time.Hour)
	if got := names(s.pick(accts, t0.Add(2*time.Hour), "").Candidates); got != "b,c" {
		t.Fatal(got)
	}
}

func TestSelectorRoundRobinAndLeastUsed(t *testing.T) {
	accts := testAccounts()
	s := &selector{strategy: config.StrategyRoundRobin}
	var firsts []string
	for range 4 {
		firsts = append(firsts, s.pick(accts, t0, "").Candidates[0].Name)
	}
	if got := strings.Join(firsts, ""); got != "abca" {
		t.Fatal(got)
	}
	s = &selector{strategy: config.StrategyLeastUsed}
	accts[0].inflight, accts[1].served, accts[2].served = 1, 5, 2
	if got := names(s.pick(accts, t0, "").Candidates); got != "c,b,a" {
		t.Fatal(got)
	}
}

func TestSelectorNoneUsable(t *testing.T) {
	accts := testAccounts()
	accts[0].Paused = true
	accts[1].Status, accts[1].StatusReason = "needs_login", "invalid_grant"
	accts[2].limit.Until, accts[2].limit.Reason = t0.Add(time.Hour), "rejected"
	s := &selector{strategy: config.StrategySession, session: time.Hour}
	sel := s.pick(accts, t0, "")
	if len(sel.Candidates) != 0 || !sel.Limited || !sel.EarliestOK.Equal(t0.Add(time.Hour)) || len(sel.Reasons) != 3 {
		t.Fatalf("%+v", sel)
	}
	accts[2].Paused = true
	sel = s.pick(accts, t0, "")
	if sel.Limited || len(sel.Reasons) != 3 || !strings.Contains(strings.Join(sel.Reasons, ";"), "b: needs_login: invalid_grant (run `claudeflare accounts login b`)") {
		t.Fatalf("%+v", sel)
	}
}
