package commands_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/claudeflare/claudeflare/store"
)

// TestSimulateReplaysTheLog runs `claudeflare simulate` (the real binary)
// on a data dir whose log holds a generated morning and an old row.
//
// The log (vault empty: the pool is the log's accounts A and B, tier 1),
// one minute apart from T0, 40 tokens per request served:
//
//	r1 s1 A 200; r2 s1 A 200; r3 s2 B 200; r4 s1 B 200 after trying A;
//	r5 s2 B 200; r6 s2 429 on B after trying A (no tokens).
//
// Capacities: A served 80 before the proxy moved past it (r4): 80; B
// served 120 before its 429 (r6): 120.
//
// Replay (a window opens at an account's first request served):
// affinity: r1 s1 A 40; r2 s1 A 80, full; r3 s2 B 40; r4 s1 B 80 (move
// s1 A->B); r5 s2 B 120, full; r6: 429 at T0+5m. 1 move.
// session: r1, r2 A (full); r3 B, r4 s1 B (move), r5 B (full); r6 429.
// 1 move.
// round-robin: r1 A; r2 s1 B (move); r3 s2 A 80 (full); r4 s1 B; r5 s2 B
// (move), full; r6 429. 2 moves.
// least-used: r1 A; r2 B (move); r3 A (1 each: first), full; r4 B; r5 s2
// B (move), full; r6 429. 2 moves.
//
// The old row (30 days back, s0 on A) is left out by --since 1d. With it,
// round-robin replays 7 requests: old A (window long gone); r1 s1 B; r2 s1
// A (move); r3 s2 B 80; r4 s1 A 80, full; r5 s2 B 120, full; r6 429. 1
// move.
func TestSimulateReplaysTheLog(t *testing.T) {
	c := newCLI(t)
	db := c.openLog()
	t0 := time.Now().Add(-2 * time.Hour).Truncate(time.Second)
	row := func(i int, session, acct string, status int, tried ...string) store.Request {
		r := store.Request{ID: fmt.Sprintf("r%d", i), TS: store.ToMS(t0.Add(time.Duration(i-1) * time.Minute)),
			Method: "POST", Path: "/v1/messages?beta=true", Model: "claude-sonnet-4-5", Account: acct, Status: status,
			Session: session, AccountsTried: append(store.Names{}, tried...)}
		if status == 200 {
			r.InputTokens, r.OutputTokens = 30, 10
		}
		return r
	}
	old := row(1, "s0", "A", 200, "A")
	old.ID, old.TS = "old", store.ToMS(t0.Add(-30*24*time.Hour))
	reqs := []store.Request{old,
		row(1, "s1", "A", 200, "A"), row(2, "s1", "A", 200, "A"), row(3, "s2", "B", 200, "B"),
		row(4, "s1", "B", 200, "A", "B"), row(5, "s2", "B", 200, "B"), row(6, "s2", "B", 429, "A", "B"),
		// Not a messages request: not replayed.
		{ID: "count", TS: store.ToMS(t0), Method: "POST", Path: "/v1/messages/count_tokens", Account: "A", Status: 200},
	}
	if err := store.InsertRequests(context.Background(), db, reqs, nil); err != nil {
		t.Fatal(err)
	}

	lines := jsonLines(t, c.MustRun("", "simulate", "--since", "1d", "--json"))
	want := []string{
		`account A 1 80`, `account B 1 120`,
		`strategy affinity 6 1 1`, `strategy session 6 1 1`, `strategy round-robin 6 1 2`, `strategy least-used 6 1 2`,
	}
	if len(lines) != len(want) {
		t.Fatalf("got %d lines, want %d: %v", len(lines), len(want), lines)
	}
	ranOut := t0.Add(5 * time.Minute)
	for i, l := range lines {
		var got string
		if l["scope"] == "account" {
			got = fmt.Sprintf("account %v %v %v", l["account"], l["tier"], l["capacity_5h"])
		} else {
			got = fmt.Sprintf("strategy %v %v %v %v", l["strategy"], l["requests"], l["rejected_429"], l["session_moves"])
			at, err := time.Parse(time.RFC3339, fmt.Sprint(l["exhausted_at"]))
			if err != nil || !at.Equal(ranOut) {
				t.Errorf("%s: ran out at %v, want %v", l["strategy"], l["exhausted_at"], ranOut)
			}
		}
		if got != want[i] {
			t.Errorf("line %d: %s, want %s", i, got, want[i])
		}
	}

	// The table, one strategy, the old row included.
	out := c.MustRun("", "simulate", "--strategy", "round-robin")
	if !hasLine(out, "round-robin", "7", "1", "1") || strings.Contains(out, "affinity") {
		t.Errorf("table:\n%s", out)
	}

	// A strategy that does not exist: a usage error, nothing printed.
	o, errs, code := c.Run("", "simulate", "--strategy", "affinity,fastest")
	if code != 2 || o != "" || !strings.Contains(errs, `--strategy "fastest"`) {
		t.Errorf("bad strategy: exit %d, stdout %q, stderr %q", code, o, errs)
	}
}
