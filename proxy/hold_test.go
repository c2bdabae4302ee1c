package proxy

import (
	"context"
	"testing"
	"time"

	"github.com/claudeflare/claudeflare/internal/testutil"
)

// holdFixture: one account limited until t0+2s; sleeps move the clock.
func holdFixture() (*testutil.Clock, []*account, *selector) {
	clk := testutil.NewClock(t0)
	accts := testAccounts()[:1]
	accts[0].limit.Until, accts[0].limit.Reason = t0.Add(2*time.Second), "rejected"
	return clk, accts, affinitySelector()
}

func TestHoldServedAfterAShortReset(t *testing.T) {
	clk, accts, s := holdFixture()
	sel := s.pickFor(accts, clk.Now(), route{key: "s:x"})
	if !holdable(sel, clk.Now(), 5*time.Second) || holdable(sel, clk.Now(), time.Second) {
		t.Fatalf("holdable: %+v", sel)
	}
	q := newHoldQueue(2)
	var slept time.Duration
	sleep := func(ctx context.Context, d time.Duration) error { slept += d; clk.Add(d); return ctx.Err() }
	got, err := q.wait(context.Background(), sel, 5*time.Second, clk.Now, sleep,
		func() selection { return s.pickFor(accts, clk.Now(), route{key: "s:x"}) })
	if err != nil || len(got.Candidates) != 1 || slept != 2*time.Second {
		t.Fatalf("err %v, %d candidates after %s", err, len(got.Candidates), slept)
	}
	if len(q.n) != 0 {
		t.Fatal("the queue kept a served request")
	}
}

// A reset beyond the hold: the wait ends at hold_max, without an account.
func TestHoldGivesUpAtHoldMax(t *testing.T) {
	clk, accts, s := holdFixture()
	accts[0].limit.Until = t0.Add(time.Minute)
	sel := s.pickFor(accts, clk.Now(), route{})
	sleep := func(ctx context.Context, d time.Duration) error { clk.Add(d); return nil }
	// The reset moved out while waiting (a new 429): the wait ends.
	got, err := newHoldQueue(1).wait(context.Background(), sel, 2*time.Minute, clk.Now, sleep, func() selection {
		accts[0].limit.Until = clk.Now().Add(time.Hour)
		return s.pickFor(accts, clk.Now(), route{})
	})
	if err != nil || len(got.Candidates) != 0 || clk.Now().After(t0.Add(2*time.Minute)) {
		t.Fatalf("err %v, %d candidates, at %s", err, len(got.Candidates), clk.Now().Sub(t0))
	}
}

// A client that goes away leaves the queue; a full queue refuses.
func TestHoldClientLeavesAndBound(t *testing.T) {
	clk, accts, s := holdFixture()
	sel := s.pickFor(accts, clk.Now(), route{})
	q := newHoldQueue(1)
	ctx, cancel := context.WithCancel(context.Background())
	waiting := make(chan struct{})
	done := make(chan error, 1)
	sleep := func(ctx context.Context, d time.Duration) error {
		close(waiting)
		<-ctx.Done()
		return ctx.Err()
	}
	pick := func() selection { return s.pickFor(accts, clk.Now(), route{}) }
	go func() {
		_, err := q.wait(ctx, sel, 5*time.Second, clk.Now, sleep, pick)
		done <- err
	}()
	<-waiting
	if _, err := q.wait(context.Background(), sel, 5*time.Second, clk.Now, sleep, pick); err != errHoldFull {
		t.Fatalf("a second request in a queue of one: %v", err)
	}
	cancel()
	if err := <-done; err != context.Canceled {
		t.Fatalf("the leaving client: %v", err)
	}
	if len(q.n) != 0 {
		t.Fatal("the client that left still holds its place")
	}
}
