package proxy

import (
	"context"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/claudeflare/claudeflare/internal/acctstate"
	"github.com/claudeflare/claudeflare/store"
)

// AccountEventKind names a change of an account's status that the proxy
// made or saw.
type AccountEventKind string

// The account events.
const (
	// EventNeedsLogin: the token endpoint refused the account's refresh
	// token; it is out of rotation until it is logged in again. Reason
	// is the (sanitised) refusal.
	EventNeedsLogin AccountEventKind = "needs_login"
	// EventLimited: the account was taken out of rotation until Until
	// (State: limited or refresh_blocked). Reason is the window: 5h, 7d,
	// the hard unified status, rate_limited, extra_usage, cooldown (a step
	// of the doubling cooldown), unauthorized (uncured 401s),
	// refresh_failed, or refresh_blocked.
	EventLimited AccountEventKind = "limited"
	// EventRecovered: the account is usable again: a good answer ended
	// its cooldown or overload rest early (Reason "ok"), or this process
	// saw it logged in again after it had marked it as needing a login
	// (Reason "logged_in"). A quarantine that simply runs out is not an
	// event.
	EventRecovered AccountEventKind = "recovered"
	// EventLimitedModel: one model family of the account was limited
	// until Until (State.Family); the account serves the others.
	EventLimitedModel AccountEventKind = "limited_model"
	// EventQuarantined: the upstream refused the account itself; it is
	// out of rotation (status quarantined, persisted) until a re-check
	// finds it serving or `accounts unblock` clears it. Reason is the
	// upstream's message.
	EventQuarantined AccountEventKind = store.StatusQuarantined
	// EventKeyRefused: the upstream refused the account's API key; it is
	// out of rotation (status key_refused, persisted).
	EventKeyRefused AccountEventKind = store.StatusKeyRefused
	// EventUnblocked: `accounts unblock` cleared the account's blocks and
	// this process dropped the ones it held.
	EventUnblocked AccountEventKind = "unblocked"
)

// AccountEvent is one status change of an account.
type AccountEvent struct {
	Account string
	Kind    AccountEventKind
	// Reason: the window of a limit (5h, 7d, cooldown, rate_limited,
	// unauthorized, refresh_blocked, ...), the family of a model limit,
	// the upstream's refusal, or why the account recovered.
	Reason string
	Until  time.Time       // EventLimited, EventLimitedModel: blocked until
	State  acctstate.State // the account's state after the change, in the state words
	At     time.Time
}

// maxQueuedEvents bounds the events waiting for their subscribers; past
// it, new ones are dropped (and counted) rather than held without bound.
const maxQueuedEvents = 1024

// events delivers AccountEvents to the subscribers. Publishing never
// waits for a subscriber: it queues the event and a delivery goroutine
// (started when there is something to deliver, gone when the queue is
// empty) calls the subscribers one event at a time, in order.
type events struct {
	log     *slog.Logger
	mu      sync.Mutex
	subs    []func(AccountEvent)
	queue   []AccountEvent
	idle    chan struct{} // closed when the delivery goroutine ends; nil when none runs
	dropped int64
}

// Subscribe adds fn to the subscribers of account events (needs login,
// limited, recovered). fn is called on a goroutine of its own, never on
// a request's path, one event at a time in the order they happened: a
// slow fn delays later events, never a response. Subscribe before Serve.
func (s *Server) Subscribe(fn func(AccountEvent)) {
	e := &s.pool.events
	e.mu.Lock()
	e.subs = append(e.subs, fn)
	e.mu.Unlock()
}

// OnRecord adds fn to what is called with each request's log row as the
// request ends (its tokens, client, model and cost_usd), whether or not
// the recorder then manages to write it: budgets count what was served.
// fn runs on the request's goroutine, after the answer has gone to the
// client: it must be quick and must not block. Call before Serve.
func (s *Server) OnRecord(fn func(store.Request)) {
	s.rec.onRecord = append(s.rec.onRecord, fn)
}

// publish queues ev for the subscribers; it never blocks on them.
func (e *events) publish(ev AccountEvent) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.subs) == 0 {
		return
	}
	if len(e.queue) >= maxQueuedEvents {
		e.dropped++
		return
	}
	e.queue = append(e.queue, ev)
	if e.idle == nil {
		e.idle = make(chan struct{})
		go e.deliver(e.idle)
	}
}

func (e *events) deliver(idle chan struct{}) {
	for {
		e.mu.Lock()
		if len(e.queue) == 0 {
			e.idle = nil
			dropped := e.dropped
			e.dropped = 0
			e.mu.Unlock()
			close(idle)
			if dropped > 0 && e.log != nil {
				e.log.Warn("account events dropped: the subscribers were too slow", "count", dropped)
			}
			return
		}
		ev := e.queue[0]
		e.queue[0] = AccountEvent{}
		e.queue = e.queue[1:]
		subs := e.subs
		e.mu.Unlock()
		for _, fn := range subs {
			fn(ev)
		}
	}
}

// wait returns once every event published so far has been delivered, or
// when ctx ends.
func (e *events) wait(ctx context.Context) {
	e.mu.Lock()
	idle := e.idle
	e.mu.Unlock()
	if idle == nil {
		return
	}
	select {
	case <-idle:
	case <-ctx.Done():
	}
}

// limitChanged publishes the change of an account's block, if any:
// before and after are its limit state around an update at now.
func (e *events) limitChanged(name string, before, after LimitState, now time.Time) {
	was, is := before.Blocked(now), after.Blocked(now)
	switch {
	case !was && is:
		st := after.state(now)
		reason := st.Window
		if st.Word == acctstate.RefreshBlocked {
			reason = acctstate.RefreshBlocked
		}
		e.publish(AccountEvent{Account: name, Kind: EventLimited, Reason: reason, Until: after.Until, State: st, At: now})
	case !is && (was || (!before.Until.IsZero() && after.Until.IsZero())):
		// Ended now, or ended by time earlier and forgotten now (on the
		// first good answer after it: LimitState.Apply).
		e.publish(AccountEvent{Account: name, Kind: EventRecovered, Reason: "ok", State: after.state(now), At: now})
	}
	for _, fam := range slices.Sorted(maps.Keys(after.Models)) {
		t := after.Models[fam]
		if t.After(now) && !before.Models[fam].After(now) {
			e.publish(AccountEvent{Account: name, Kind: EventLimitedModel, Reason: fam, Until: t,
				State: acctstate.State{Word: acctstate.LimitedModel, Family: fam, Until: t}, At: now})
		}
	}
}

// loggedInName is the name of the account with id if the pool holds it
// with status ok (a reload took the status from a changed row), else "".
func (p *pool) loggedInName(id int64) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if a := p.byID[id]; a != nil && a.Status == store.StatusOK {
		return a.Name
	}
	return ""
}
