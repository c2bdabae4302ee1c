package proxy

import (
	"context"
	"errors"
	"time"
)

// The optional hold (routing.hold_max): when every account is limited
// and the first comes back within hold_max, a request waits for it in a
// bounded queue instead of getting the proxy's 429. A client that goes
// away leaves the queue at once.

// holdQueueMax bounds the requests waiting at once; past it a request
// gets the 429 at once.
const holdQueueMax = 256

// holdPoll is the longest a held request sleeps before it looks again:
// an account may come back before its reset (accounts unblock, a reload).
const holdPoll = time.Second

// holdStep is the shortest sleep between two looks.
const holdStep = 10 * time.Millisecond

// errHoldFull: the queue is full.
var errHoldFull = errors.New("the hold queue is full")

// holdable reports whether sel, which has no candidates, may be waited
// out at now: the hold is on (holdMax > 0), some account is only rate
// limited, and the first comes back within holdMax.
func holdable(sel selection, now time.Time, holdMax time.Duration) bool {
	return holdMax > 0 && len(sel.Candidates) == 0 && sel.Limited &&
		!sel.EarliestOK.IsZero() && sel.EarliestOK.Sub(now) <= holdMax
}

// holdQueue counts the requests waiting for an account.
type holdQueue struct {
	n chan struct{}
}

func newHoldQueue(size int) *holdQueue { return &holdQueue{n: make(chan struct{}, size)} }

// wait holds a request whose selection sel had no candidate until pick
// finds one, for at most holdMax from now(). It returns the selection
// that ended the wait: with candidates, or without when the wait ran out
// or the accounts' state no longer allows one (then the caller refuses
// with it). err is errHoldFull or the context's error (the client left).
func (q *holdQueue) wait(ctx context.Context, sel selection, holdMax time.Duration,
	now func() time.Time, sleep func(context.Context, time.Duration) error, pick func() selection) (selection, error) {
	select {
	case q.n <- struct{}{}:
	default:
		return sel, errHoldFull
	}
	defer func() { <-q.n }()
	deadline := now().Add(holdMax)
	// Each round sleeps at least holdStep: the rounds are bounded even
	// under a clock that does not move.
	for rounds := int(holdMax/holdStep) + 2; rounds > 0; rounds-- {
		t := now()
		if !t.Before(deadline) || !holdable(sel, t, deadline.Sub(t)) {
			return sel, nil
		}
		d := min(sel.EarliestOK.Sub(t), holdPoll)
		if err := sleep(ctx, max(d, holdStep)); err != nil {
			return sel, err
		}
		if sel = pick(); len(sel.Candidates) > 0 {
			return sel, nil
		}
	}
	return sel, nil
}

// hold answers for serve when sel has no candidate: it waits for an
// account when the hold applies, and refuses otherwise. ok is true when
// an account came back; then sel holds the candidates.
func (x *exchange) hold(sel selection) (selection, bool) {
	s := x.s
	holdMax := s.cfg.Routing.HoldMax.Std()
	if !holdable(sel, s.now(), holdMax) {
		x.refuse(sel)
		return sel, false
	}
	start := s.now()
	sel, err := s.pool.holds.wait(x.r.Context(), sel, holdMax, s.now, s.sleep,
		func() selection { return s.pool.pickFor(s.now(), x.rt) })
	waited := s.now().Sub(start)
	switch {
	case err != nil && x.r.Context().Err() != nil:
		x.clientGone()
		return sel, false
	case len(sel.Candidates) == 0:
		if err != nil {
			s.log.Info("hold queue full: refusing", "request_id", x.id)
		}
		x.refuse(sel)
		return sel, false
	}
	s.log.Info("held until an account came back", "request_id", x.id, "waited", waited.Round(time.Millisecond).String())
	return sel, true
}
