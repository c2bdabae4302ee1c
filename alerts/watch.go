package alerts

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/claudeflare/claudeflare/config"
)

// The kinds of AccountChange.
const (
	ChangeNeedsLogin = "needs_login" // its login is gone
	ChangeBlocked    = "blocked"     // out of rotation for a while (limited, quarantined, ...)
	ChangeRecovered  = "recovered"   // usable again
)

// AccountChange is an account event of the proxy, in the watcher's words.
type AccountChange struct {
	Account string
	Kind    string // ChangeNeedsLogin, ChangeBlocked or ChangeRecovered
	State   string // the account's state word after the change
	Reason  string
	Until   time.Time // when a block ends; zero when unknown
	At      time.Time
}

// Account is one account in a Snapshot.
type Account struct {
	Name   string
	Paused bool
	// Usable: it may serve a request now.
	Usable bool
	// State is its state word (acctstate: ok, needs_login, limited, ...);
	// Reason the window of a limit or why it is refused; Until when a
	// block ends (zero: unknown).
	State  string
	Reason string
	Until  time.Time
	// Util5h and Util7d are shares of the windows, negative when unknown;
	// Reset5h and Reset7d when they reset (zero: unknown).
	Util5h, Util7d   float64
	Reset5h, Reset7d time.Time
}

// Snapshot is the daemon's state as the watcher reads it.
type Snapshot struct {
	Accounts []Account
	// The request recorder's losses since the daemon started.
	DroppedRecords, DroppedPayloads int64
}

// dropEvery is the least time between two recorder_dropping events.
const dropEvery = 15 * time.Minute

// Watcher derives events from account changes and snapshots, each once
// per transition: an account needs a login, is blocked, recovers; the
// pool has no usable account left, then serves again; a utilization
// threshold is crossed; the recorder drops (at most one event every 15
// minutes). The first snapshot counts as a change from all well: an
// account or a pool already in trouble when the daemon starts is told
// once.
type Watcher struct {
	n    *Notifier
	snap func() Snapshot
	now  func() time.Time

	mu        sync.Mutex
	accounts  map[string]*mark
	exhausted bool
	// The recorder's drops: the total last seen, not yet told, and when
	// last told.
	dropSeen, dropPending int64
	dropTold              time.Time
}

// mark is what the watcher last told of an account, and since when.
type mark struct {
	word  string // "" (ok), ChangeNeedsLogin or ChangeBlocked
	since time.Time
}

// NewWatcher sends to n what it derives from snap, read at each Check and
// after each AccountChanged. now is the clock (nil: time.Now).
func NewWatcher(n *Notifier, snap func() Snapshot, now func() time.Time) *Watcher {
	if now == nil {
		now = time.Now
	}
	return &Watcher{n: n, snap: snap, now: now, accounts: map[string]*mark{}}
}

// Run checks every interval until ctx ends.
func (w *Watcher) Run(ctx context.Context, interval time.Duration) {
	w.Check()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			w.Check()
		}
	}
}

// AccountChanged takes an account event of the proxy, then checks the
// snapshot (the pool may be exhausted now). An event older than what a
// snapshot already told of the account is ignored.
func (w *Watcher) AccountChanged(c AccountChange) {
	w.mu.Lock()
	defer w.mu.Unlock()
	m := w.mark(c.Account)
	if c.At.Before(m.since) {
		return
	}
	w.to(c.Account, c.Kind, c.State, c.Reason, c.Until, c.At)
	w.checkLocked()
}

// Check reads a snapshot and sends what changed since the last one.
func (w *Watcher) Check() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.checkLocked()
}

func (w *Watcher) checkLocked() {
	s := w.snap()
	now := w.now()
	seen := map[string]bool{}
	active, usable := 0, 0
	var earliest time.Time
	for _, a := range s.Accounts {
		seen[a.Name] = true
		if a.Paused {
			continue
		}
		active++
		switch {
		case a.Usable:
			usable++
			w.to(a.Name, ChangeRecovered, a.State, "usable", time.Time{}, now)
		case a.State == ChangeNeedsLogin:
			w.to(a.Name, ChangeNeedsLogin, a.State, a.Reason, time.Time{}, now)
		default:
			w.to(a.Name, ChangeBlocked, a.State, a.Reason, a.Until, now)
			if !a.Until.IsZero() && (earliest.IsZero() || a.Until.Before(earliest)) {
				earliest = a.Until
			}
		}
		w.n.Utilization(a.Name, "5h", a.Util5h, a.Reset5h, now)
		w.n.Utilization(a.Name, "7d", a.Util7d, a.Reset7d, now)
	}
	for name := range w.accounts {
		if !seen[name] {
			delete(w.accounts, name)
		}
	}
	w.pool(active, usable, earliest, now)
	w.recorder(s, now)
}

func (w *Watcher) mark(name string) *mark {
	m := w.accounts[name]
	if m == nil {
		m = &mark{}
		w.accounts[name] = m
	}
	return m
}

// to moves account name to kind, sending the event if it is a change.
func (w *Watcher) to(name, kind, state, reason string, until, at time.Time) {
	m := w.mark(name)
	ev := Event{At: at.UTC(), Account: name, State: state, Reason: reason}
	switch kind {
	case ChangeNeedsLogin:
		if m.word == ChangeNeedsLogin {
			return
		}
		ev.Event = config.AlertAccountNeedsLogin
		ev.Text = fmt.Sprintf("claudeflare: account %s needs a new login: run `claudeflare accounts login %s`", name, name)
		if reason != "" {
			ev.Text += " (" + reason + ")"
		}
	case ChangeBlocked:
		if m.word != "" { // already blocked, or needing a login (which says more)
			return
		}
		ev.Event = config.AlertAccountBlocked
		ev.Text = fmt.Sprintf("claudeflare: account %s is blocked (%s)", name, words(state, reason))
		if !until.IsZero() {
			u := until.UTC()
			ev.Until = &u
			ev.Text += " until " + u.Format(time.RFC3339)
		}
	case ChangeRecovered:
		if m.word == "" {
			return
		}
		ev.Event = config.AlertAccountRecovered
		ev.Text = fmt.Sprintf("claudeflare: account %s is usable again (%s)", name, reason)
		kind = ""
	default:
		return
	}
	m.word, m.since = kind, at
	w.n.Send(ev)
}

// pool sends pool_exhausted when no account that is not paused can
// serve, pool_recovered when one can again.
func (w *Watcher) pool(active, usable int, earliest, now time.Time) {
	exhausted := active > 0 && usable == 0
	if exhausted == w.exhausted {
		return
	}
	w.exhausted = exhausted
	ev := Event{At: now.UTC(), Accounts: &active, Usable: &usable}
	if exhausted {
		ev.Event = config.AlertPoolExhausted
		ev.Text = fmt.Sprintf("claudeflare: no account can serve: all %d accounts are blocked or need a login", active)
		if !earliest.IsZero() {
			u := earliest.UTC()
			ev.Until = &u
			ev.Text += "; the first is back at " + u.Format(time.RFC3339)
		}
	} else {
		ev.Event = config.AlertPoolRecovered
		ev.Text = fmt.Sprintf("claudeflare: the pool serves again: %d of %d accounts usable", usable, active)
	}
	w.n.Send(ev)
}

// recorder sends recorder_dropping when the recorder lost records or
// payloads since the last snapshot, at most once every dropEvery (what is
// lost meanwhile is told with the next one).
func (w *Watcher) recorder(s Snapshot, now time.Time) {
	total := s.DroppedRecords + s.DroppedPayloads
	if total > w.dropSeen {
		w.dropPending += total - w.dropSeen
	}
	w.dropSeen = total
	if w.dropPending == 0 || (!w.dropTold.IsZero() && now.Sub(w.dropTold) < dropEvery) {
		return
	}
	pending, recs, pays := w.dropPending, s.DroppedRecords, s.DroppedPayloads
	w.dropPending, w.dropTold = 0, now
	w.n.Send(Event{
		Event: config.AlertRecorderDropping, At: now.UTC(),
		DroppedRecords: &recs, DroppedPayloads: &pays, NewDropped: &pending,
		Text: fmt.Sprintf("claudeflare: the request log is dropping: %d more records or payloads lost (queue full); %d records and %d payloads since the daemon started",
			pending, recs, pays),
	})
}

// BudgetExceeded sends budget_exceeded: the client key named key went
// over its budget of limit (unit "usd" or "tokens") for period (day,
// week, month). The caller calls it once per key and period.
func (w *Watcher) BudgetExceeded(key, period, unit string, limit, used float64, at time.Time) {
	ev := Event{Event: config.AlertBudgetExceeded, At: at.UTC(), ClientKey: key, Period: period, Unit: unit, Limit: &limit, Used: &used}
	ev.Text = fmt.Sprintf("claudeflare: client key %s is over its %s budget: %s of %s", key, periodWord(period), amount(used, unit), amount(limit, unit))
	w.n.Send(ev)
}

func words(state, reason string) string {
	switch {
	case reason == "" || reason == state:
		return state
	case state == "":
		return reason
	}
	return state + ": " + reason
}

func periodWord(p string) string {
	switch p {
	case "day":
		return "daily"
	case "week":
		return "weekly"
	case "month":
		return "monthly"
	}
	return p
}

func amount(v float64, unit string) string {
	if unit == "usd" {
		return "$" + strconv.FormatFloat(v, 'f', 2, 64)
	}
	return strconv.FormatFloat(v, 'f', -1, 64) + " " + unit
}
