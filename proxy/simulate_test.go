package proxy

import (
	"testing"
	"time"
)

var simT0 = time.Date(2026, 1, 5, 9, 0, 0, 0, time.UTC)

func simAt(min int, session string, tokens int64) SimRequest {
	return SimRequest{TS: simT0.Add(time.Duration(min) * time.Minute), Session: session, Tokens: tokens}
}

// TestSimulateHandCalculation replays a small log against each strategy.
//
// Pool: A and B (tier 1, same priority: A first), 100 tokens each per 5h
// window; every request uses 40 tokens, so each account serves three
// (0, 40, 80 before them) and is limited at 120 until its window ends.
// Requests one minute apart: r1 s1, r2 s1, r3 s2, r4 s2, r5 s1, r6 s2,
// r7 s1; then r8 s1 at 5h04m, after every window ended (a window opens
// at an account's first request served; the last opened at 3m).
//
// affinity (max utilization 0.95): r1 s1 -> A (tie, first) 40; r2 s1 ->
// A 80; r3 s2 new: B has headroom 1, A 0.2 -> B 40; r4 s2 -> B 80; r5 s1
// -> A 120, limited; r6 s2 -> B 120, limited; r7 -> no account: 429 at
// 6m. r8: windows ended, s1 idle > 1h: new -> A, as before. Moves 0.
//
// session (6h here): r1, r2 -> A; r3 s2 -> A 120, limited; r4 s2 -> B (move
// s2 A->B); r5 s1 -> B (move s1 A->B) 80; r6 s2 -> B 120, limited; r7
// 429 at 6m; r8: the session on B has not run 6h (since r4 at 3m) -> B,
// s1 was on B. Moves 2.
//
// round-robin: r1 s1 A; r2 s1 B (move 1); r3 s2 A 80; r4 s2 B 80 (move
// 2); r5 s1 A 120 (move 3), limited; r6 s2 B 120 (only B), limited; r7
// 429 at 6m (no rotation counted); r8: counter 6 -> A, s1 was on A.
// Moves 3.
//
// least-used: by requests served: r1 A; r2 B (move 1); r3 s2 A; r4 s2 B
// (move 2); r5 s1 A (tie, first; move 3), limited; r6 B, limited; r7
// 429 at 6m; r8 A (3 each, first), s1 was on A. Moves 3.
func TestSimulateHandCalculation(t *testing.T) {
	reqs := []SimRequest{
		simAt(0, "s1", 40), simAt(1, "s1", 40), simAt(2, "s2", 40), simAt(3, "s2", 40),
		simAt(4, "s1", 40), simAt(5, "s2", 40), simAt(6, "s1", 40), simAt(304, "s1", 40),
	}
	accts := []SimAccount{{Name: "B", Tier: 1, Capacity: 100}, {Name: "A", Tier: 1, Capacity: 100}}
	cfg := SimConfig{MaxUtilization: 0.95, SessionIdle: time.Hour, SessionsMax: 100, SessionDuration: 6 * time.Hour}
	want := map[string]struct {
		moves  int
		served map[string]int
	}{
		"affinity":    {0, map[string]int{"A": 4, "B": 3}},
		"session":     {2, map[string]int{"A": 3, "B": 4}},
		"round-robin": {3, map[string]int{"A": 4, "B": 3}},
		"least-used":  {3, map[string]int{"A": 4, "B": 3}},
	}
	for _, s := range SimStrategies {
		got := Simulate(reqs, accts, s, cfg)
		w := want[s]
		if got.Requests != 8 || got.Rejected != 1 || got.Moves != w.moves {
			t.Errorf("%s: requests %d, 429s %d, moves %d; want 8, 1, %d", s, got.Requests, got.Rejected, got.Moves, w.moves)
		}
		if got.ExhaustedAt == nil || !got.ExhaustedAt.Equal(simT0.Add(6*time.Minute)) {
			t.Errorf("%s: exhausted at %v, want %v", s, got.ExhaustedAt, simT0.Add(6*time.Minute))
		}
		if got.Served["A"] != w.served["A"] || got.Served["B"] != w.served["B"] {
			t.Errorf("%s: served %v, want %v", s, got.Served, w.served)
		}
	}
}

// TestSimulateNoLimitNeverRunsOut: with no capacity known nothing is
// ever refused.
func TestSimulateNoLimitNeverRunsOut(t *testing.T) {
	reqs := []SimRequest{simAt(0, "s1", 1e9), simAt(1, "s1", 1e9)}
	got := Simulate(reqs, []SimAccount{{Name: "A"}}, "affinity", SimConfig{})
	if got.Rejected != 0 || got.ExhaustedAt != nil || got.Served["A"] != 2 {
		t.Errorf("got %+v", got)
	}
}

// TestSimCapacities estimates capacities from a log.
//
// A (tier 1) serves 40 + 40, then answers 429 at 2m: capacity 80 in its
// first window. B answers at 3m after trying A (A's window already hit:
// ignored). C (tier 5) serves 10 and is never limited. After 6h (new
// windows) A serves 40, then B answers after trying A: A limited after
// 40, so A's capacity is the fewer, 40. Per tier weight: 40. B (tier 1,
// never limited, at most 30 in a window): max(40, 30) = 40. C: max(5 x
// 40, 10) = 200.
func TestSimCapacities(t *testing.T) {
	row := func(min int, acct string, status int, tokens int64, tried ...string) SimRequest {
		return SimRequest{TS: simT0.Add(time.Duration(min) * time.Minute), Account: acct, Status: status, Tokens: tokens, Tried: tried}
	}
	reqs := []SimRequest{
		row(0, "A", 200, 40), row(1, "A", 200, 40), row(2, "A", 429, 0),
		row(3, "B", 200, 30, "A", "B"), row(4, "C", 200, 10),
		row(360, "A", 200, 40), row(361, "B", 200, 30, "A", "B"),
	}
	got := SimCapacities(reqs, []SimAccount{{Name: "A", Tier: 1}, {Name: "B", Tier: 1}, {Name: "C", Tier: 5}})
	want := map[string]int64{"A": 40, "B": 40, "C": 200}
	for _, a := range got {
		if a.Capacity != want[a.Name] {
			t.Errorf("%s: capacity %d, want %d", a.Name, a.Capacity, want[a.Name])
		}
	}
	// Never limited: no capacity known.
	none := SimCapacities(reqs[3:5], []SimAccount{{Name: "B"}, {Name: "C", Tier: 5}})
	for _, a := range none {
		if a.Capacity != 0 {
			t.Errorf("no limit seen: %s capacity %d", a.Name, a.Capacity)
		}
	}
}
