package proxy

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/claudeflare/claudeflare/config"
	"github.com/claudeflare/claudeflare/store"
)

func affinitySelector() *selector {
	return &selector{strategy: config.StrategyAffinity, maxUtil: 0.95, sessions: newSessionTable(time.Hour, 100)}
}

// withUtil sets a's 5h and 7d utilization, the windows resetting later.
func withUtil(a *account, u5, u7 float64) {
	a.limit.Util5h, a.limit.Util7d = u5, u7
	a.limit.Reset5h, a.limit.Reset7d = t0.Add(5*time.Hour), t0.Add(7*24*time.Hour)
}

// New sessions go to the most headroom: tier weight x (1 - the fuller
// window); a tie goes to the window that resets soonest.
func TestAffinityHeadroomOrder(t *testing.T) {
	accts := testAccounts()
	accts[0].Tier, accts[1].Tier, accts[2].Tier = 1, 5, 1
	withUtil(accts[0], 0.5, 0.1)  // 1 x 0.5 = 0.5
	withUtil(accts[1], 0.2, 0.9)  // 5 x 0.1 = 0.5, the 7d window counts
	withUtil(accts[2], 0.1, 0.05) // 1 x 0.9 = 0.9
	s := affinitySelector()
	if got := names(s.pickFor(accts, t0, route{key: "s:1"}).Candidates); got != "c,a,b" {
		t.Fatalf("by headroom: %s (a and b tie; a's 5h window resets first)", got)
	}
	accts[1].limit.Reset7d = t0.Add(time.Hour) // b's window now resets first
	if got := names(s.pickFor(accts, t0, route{key: "s:2"}).Candidates); got != "c,b,a" {
		t.Fatalf("tie by reset: %s", got)
	}
	// A window whose reset passed is empty again.
	if got := names(s.pickFor(accts, t0.Add(2*time.Hour), route{key: "s:3"}).Candidates); got != "b,c,a" {
		t.Fatalf("after b's 7d reset: %s", got)
	}
}

// A session stays on its account while it is usable and under the
// threshold, moves at its next request once its account reaches it, and
// stays when every account is there.
func TestAffinityThreshold(t *testing.T) {
	accts := testAccounts()
	for _, a := range accts {
		withUtil(a, 0.1, 0.1)
	}
	s := affinitySelector()
	first := s.pickFor(accts, t0, route{key: "s:x"}).Candidates[0]
	if first.Name != "a" {
		t.Fatalf("a tie of fresh accounts goes in priority order: %s", first.Name)
	}
	// Another session spreads to an account holding fewer sessions.
	if got := s.pickFor(accts, t0, route{key: "s:y"}).Candidates[0].Name; got != "b" {
		t.Fatalf("second session on %s", got)
	}
	// a fills up to below the threshold: the session stays although b
	// and c have more headroom (a move would cost its cache).
	withUtil(accts[0], 0.94, 0.2)
	if got := s.pickFor(accts, t0.Add(time.Minute), route{key: "s:x"}).Candidates[0].Name; got != "a" {
		t.Fatalf("under the threshold: moved to %s", got)
	}
	// At the threshold it takes no new session and its session moves.
	withUtil(accts[0], 0.95, 0.2)
	if got := s.pickFor(accts, t0.Add(2*time.Minute), route{key: "s:new"}).Candidates; got[0].Name == "a" || got[len(got)-1].Name != "a" {
		t.Fatalf("new session at the threshold: %s", names(got))
	}
	moved := s.pickFor(accts, t0.Add(2*time.Minute), route{key: "s:x"}).Candidates[0]
	if moved.Name == "a" {
		t.Fatal("the session did not move at the threshold")
	}
	if got := s.pickFor(accts, t0.Add(3*time.Minute), route{key: "s:x"}).Candidates[0]; got != moved {
		t.Fatalf("the moved session did not stay: %s then %s", moved.Name, got.Name)
	}
	// Every account over the threshold: sessions stay where they are.
	for _, a := range accts {
		withUtil(a, 0.97, 0.5)
	}
	if got := s.pickFor(accts, t0.Add(4*time.Minute), route{key: "s:x"}).Candidates[0]; got != moved {
		t.Fatalf("all over the threshold: moved to %s", got.Name)
	}
	// A hard limit moves it.
	moved.limit.Until, moved.limit.Reason = t0.Add(time.Hour), "rejected"
	if got := s.pickFor(accts, t0.Add(5*time.Minute), route{key: "s:x"}).Candidates[0]; got == moved {
		t.Fatal("stayed on a limited account")
	}
}

// Issue 14's rules hold under affinity: a model-scoped limit moves only
// that family's requests; an account served on extra usage goes last.
func TestAffinityModelLimitAndOverage(t *testing.T) {
	accts := testAccounts()
	s := affinitySelector()
	if got := s.pickFor(accts, t0, route{key: "s:x", fam: "opus"}).Candidates[0].Name; got != "a" {
		t.Fatal(got)
	}
	accts[0].limit.Models = map[string]time.Time{"opus": t0.Add(time.Hour)}
	if got := names(s.pickFor(accts, t0, route{key: "s:x", fam: "opus"}).Candidates); strings.Contains(got, "a") {
		t.Fatalf("opus on a limited for opus: %s", got)
	}
	if got := s.pickFor(accts, t0, route{key: "s:x", fam: "sonnet"}).Candidates[0].Name; got != "a" {
		t.Fatalf("sonnet left its account: %s", got)
	}
	accts[0].limit.Overage = t0.Add(time.Hour)
	if got := names(s.pickFor(accts, t0, route{key: "s:x", fam: "sonnet"}).Candidates); !strings.HasSuffix(got, ",a") {
		t.Fatalf("overage avoided not last: %s", got)
	}
	accts[0].Overage = store.OverageAllow
	if got := s.pickFor(accts, t0, route{key: "s:x", fam: "sonnet"}).Candidates[0].Name; got != "a" {
		t.Fatalf("overage allowed: %s", got)
	}
}

// A session-less call follows its session's account when one is known,
// and places no session when none is.
func TestAffinityPeek(t *testing.T) {
	accts := testAccounts()
	s := affinitySelector()
	s.sessions.put("s:x", accts[2].ID, t0)
	if got := s.pickFor(accts, t0, route{key: "s:x", peek: true}).Candidates[0].Name; got != "c" {
		t.Fatalf("count_tokens of a known session on %s", got)
	}
	s.pickFor(accts, t0, route{key: "s:unknown", peek: true})
	if _, ok := s.sessions.get("s:unknown", t0); ok {
		t.Fatal("a session-less call placed a session")
	}
	// A failover moves the session to the account that answered.
	accts[2].limit.Until, accts[2].limit.Reason = t0.Add(time.Hour), "rejected"
	s.stay("s:x", accts[1], accts, t0)
	if got := s.pickFor(accts, t0, route{key: "s:x"}).Candidates[0].Name; got != "b" {
		t.Fatalf("after the failover: %s", got)
	}
}

func TestSessionTableIdleAndBound(t *testing.T) {
	tb := newSessionTable(time.Hour, 3)
	tb.put("1", 1, t0)
	tb.put("2", 2, t0.Add(time.Minute))
	tb.put("3", 3, t0.Add(2*time.Minute))
	if _, ok := tb.get("1", t0.Add(3*time.Minute)); !ok { // 1 is now the most recent
		t.Fatal("1 forgotten")
	}
	tb.put("4", 1, t0.Add(4*time.Minute)) // full: the least recently used (2) goes
	if _, ok := tb.get("2", t0.Add(4*time.Minute)); ok || tb.len() != 3 {
		t.Fatalf("the bound: 2 kept, %d sessions", tb.len())
	}
	if tb.counts[1] != 2 || tb.counts[2] != 0 {
		t.Fatalf("counts %v", tb.counts)
	}
	// Idle for an hour: forgotten.
	if _, ok := tb.get("3", t0.Add(2*time.Minute+time.Hour)); ok {
		t.Fatal("an idle session kept its account")
	}
	if _, ok := tb.get("4", t0.Add(2*time.Minute+time.Hour)); !ok {
		t.Fatal("a session used 58 minutes ago was forgotten")
	}
}

func TestAffinityKeyOrder(t *testing.T) {
	body := `{"model":"m","messages":[{"role":"user","content":"say \"user_id\": \"session_evil\""}],` +
		`"metadata":{"user_id":"user_ab12_account_0000_session_5f1c2b9e-0000-4000-8000-000000000001"}}`
	r := httptest.NewRequest(http.MethodPost, "/v1/messages", strings.NewReader(body))
	r.RemoteAddr = "10.1.2.3:5555"
	r.Header.Set("X-Claude-Code-Session-Id", "sid-1")
	if got := affinityKey(r, []byte(body), "alice"); got != "s:sid-1" {
		t.Fatalf("header: %s", got)
	}
	r.Header.Del("X-Claude-Code-Session-Id")
	if got := affinityKey(r, []byte(body), "alice"); got != "s:5f1c2b9e-0000-4000-8000-000000000001" {
		t.Fatalf("metadata.user_id: %s", got)
	}
	if got := affinityKey(r, []byte(`{"metadata":{"user_id":"user_ab12"}}`), "alice"); got != "c:alice" {
		t.Fatalf("client: %s", got)
	}
	if got := affinityKey(r, nil, ""); got != "a:10.1.2.3" {
		t.Fatalf("address: %s", got)
	}
	long := strings.Repeat("x", 1000)
	r.Header.Set("X-Claude-Code-Session-Id", long)
	if got := affinityKey(r, nil, ""); len(got) > 130 {
		t.Fatalf("a long key is kept whole: %d bytes", len(got))
	}
}
