package proxy

import (
	"container/list"
	"net/http"
	"slices"
	"strings"
	"time"
)

// The affinity strategy (config.StrategyAffinity) keeps each client
// session on one account: every move costs the session its prompt cache.
// A session is known by affinityKey; the table remembers its account
// until it is idle for routing.session_idle, and holds at most
// routing.sessions_max sessions (the least recently used goes first).

// affinityKey (logdetails.go) is the session key of a request; the log's
// session column hashes the same key.

// sessionTable maps session keys to accounts, least recently used last.
// Not safe for concurrent use; the pool serialises calls.
type sessionTable struct {
	idle   time.Duration
	max    int
	byKey  map[string]*list.Element
	lru    *list.List    // of *sessionEntry, most recent first
	counts map[int64]int // sessions per account
}

type sessionEntry struct {
	key  string
	acct int64
	last time.Time
}

func newSessionTable(idle time.Duration, max int) *sessionTable {
	return &sessionTable{idle: idle, max: max, byKey: map[string]*list.Element{},
		lru: list.New(), counts: map[int64]int{}}
}

// get returns the account of key's session and marks it used at now;
// ok is false when the table holds no live session for key.
func (t *sessionTable) get(key string, now time.Time) (acct int64, ok bool) {
	t.expire(now)
	e := t.byKey[key]
	if e == nil {
		return 0, false
	}
	se := e.Value.(*sessionEntry)
	se.last = now
	t.lru.MoveToFront(e)
	return se.acct, true
}

// put places key's session on acct at now, evicting the least recently
// used session when the table is full.
func (t *sessionTable) put(key string, acct int64, now time.Time) {
	t.expire(now)
	if e := t.byKey[key]; e != nil {
		se := e.Value.(*sessionEntry)
		t.counts[se.acct]--
		se.acct, se.last = acct, now
		t.counts[acct]++
		t.lru.MoveToFront(e)
		return
	}
	for t.max > 0 && t.lru.Len() >= t.max {
		t.remove(t.lru.Back())
	}
	t.byKey[key] = t.lru.PushFront(&sessionEntry{key: key, acct: acct, last: now})
	t.counts[acct]++
}

// expire forgets the sessions idle for t.idle at now: they sit at the
// back of the list.
func (t *sessionTable) expire(now time.Time) {
	if t.idle <= 0 {
		return
	}
	for e := t.lru.Back(); e != nil; e = t.lru.Back() {
		if now.Sub(e.Value.(*sessionEntry).last) < t.idle {
			return
		}
		t.remove(e)
	}
}

func (t *sessionTable) remove(e *list.Element) {
	se := e.Value.(*sessionEntry)
	t.lru.Remove(e)
	delete(t.byKey, se.key)
	if t.counts[se.acct]--; t.counts[se.acct] <= 0 {
		delete(t.counts, se.acct)
	}
}

func (t *sessionTable) len() int { return t.lru.Len() }

// utilization is the higher of a's 5h and 7d utilization at now, as the
// upstream last gave them; a window whose reset has passed counts as
// empty.
func (a *account) utilization(now time.Time) float64 {
	u := func(v float64, reset time.Time) float64 {
		if v < 0 || !reset.IsZero() && !now.Before(reset) {
			return 0
		}
		return v
	}
	return max(u(a.limit.Util5h, a.limit.Reset5h), u(a.limit.Util7d, a.limit.Reset7d))
}

// tierWeight is the account's tier (1, 5 or 20: the plan's size), 1 when
// none was set.
func (a *account) tierWeight() float64 {
	if a.Tier <= 0 {
		return 1
	}
	return float64(a.Tier)
}

// headroom is what a has left to give at now: its tier weight times the
// unused share of its fuller window.
func (a *account) headroom(now time.Time) float64 {
	return a.tierWeight() * max(0, 1-a.utilization(now))
}

// nextReset is the soonest future reset of a's 5h and 7d windows, zero
// when none is known.
func (a *account) nextReset(now time.Time) time.Time {
	var t time.Time
	for _, r := range []time.Time{a.limit.Reset5h, a.limit.Reset7d} {
		if r.After(now) && (t.IsZero() || r.Before(t)) {
			t = r
		}
	}
	return t
}

// headroomEpsilon makes headrooms that differ by rounding a tie.
const headroomEpsilon = 1e-9

// resetTie makes resets this close a tie: accounts added a few seconds
// apart have windows that end a few seconds apart, which is no reason to
// pile every new session on one of them.
const resetTie = time.Minute

// byHeadroom sorts accts (stable: priority order breaks the last ties)
// by headroom, most first; on a tie the account whose window resets
// soonest first (its capacity is lost at the reset otherwise; resets
// within resetTie tie), then the one holding fewer sessions.
func byHeadroom(accts []*account, now time.Time, sessions map[int64]int) {
	slices.SortStableFunc(accts, func(a, b *account) int {
		ha, hb := a.headroom(now), b.headroom(now)
		switch {
		case ha > hb+headroomEpsilon:
			return -1
		case hb > ha+headroomEpsilon:
			return 1
		}
		ra, rb := a.nextReset(now), b.nextReset(now)
		switch {
		case !ra.IsZero() && (rb.IsZero() || ra.Add(resetTie).Before(rb)):
			return -1
		case !rb.IsZero() && (ra.IsZero() || rb.Add(resetTie).Before(ra)):
			return 1
		}
		return sessions[a.ID] - sessions[b.ID]
	})
}

// messagesRoute is the one route whose requests place sessions: the
// others (count_tokens, models, ...) follow a session's account when one
// is known and never move it.
const messagesRoute = "/v1/messages"

// SessionsByAccount counts the live affinity sessions per account name
// (idle ones are forgotten first); accounts holding none are absent. The
// admin API's /api/status shows it.
func (s *Server) SessionsByAccount() map[string]int {
	now := s.now()
	p := s.pool
	p.mu.Lock()
	defer p.mu.Unlock()
	out := map[string]int{}
	t := p.sel.sessions
	if t == nil {
		return out
	}
	t.expire(now)
	for id, n := range t.counts {
		if a := p.byID[id]; a != nil && n > 0 {
			out[a.Name] = n
		}
	}
	return out
}

// ClaudeCodeSessionHash is the log's session column (sessionHash of
// affinityKey) for a request that carries Claude Code's session id in its
// header: what `claudeflare statusline` looks the session up by. "" for
// an empty id.
func ClaudeCodeSessionHash(id string) string {
	if strings.TrimSpace(id) == "" {
		return ""
	}
	r := &http.Request{Header: http.Header{}}
	r.Header.Set(logSessionHeader, id)
	return sessionHash(affinityKey(r, nil, ""))
}
