package requestlog

import (
	"context"
	"fmt"
	"math"
	"time"

	"github.com/claudeflare/claudeflare/config"
	"github.com/claudeflare/claudeflare/internal/acctstate"
	"github.com/claudeflare/claudeflare/store"
)

// The status view (`claudeflare status`, GET /api/status, the status
// line): each account's 5h and 7d utilization and resets, its state, and
// the pool's time to exhaustion at the current rate. It is computed from
// the vault's accounts table (the utilization and resets the daemon
// persisted from the upstream's headers) and the request log, so the
// daemon and a CLI reading the database directly say the same.
//
// Time to exhaustion (the method, also in `claudeflare status --help`):
//
//   - Tokens are weighted as they are priced: input 1, cache writes 1.25,
//     cache reads 0.1, output 5 (Anthropic's price ratios, the same for
//     every current model), since a window fills by use, not by count.
//   - Per account and window (5h, 7d), utilization per weighted token is
//     the window's utilization divided by the weighted tokens the account
//     served since the window began (its reset minus 5h or 7d, and a
//     minute for the reset's rounding), from the log. An account without
//     its own ratio (nothing served in the window yet) borrows the pool's:
//     the mean of the others' ratio scaled by tier. Use of an account outside this proxy makes the ratio higher and
//     the estimate shorter, never longer.
//   - The rate is the pool's weighted tokens per second over the last 15
//     minutes (StatusRateWindow).
//   - The pool's traffic moves to the accounts that still have room: the
//     capacity left, (routing.max_utilization - utilization) / ratio in the
//     fuller window, is drained by the rate; a window that resets on the
//     way gives its capacity back, and a limited account rejoins at the end
//     of its limit. The pool is exhausted when no usable account has room.
//   - Unknown (null) without traffic in the last 15 minutes, without any
//     ratio, and when the pool lasts more than StatusHorizon; an API-key
//     or cloud account has no 5h/7d window and never runs out.

// Token weights of the utilization estimate (Anthropic's price ratios).
const (
	weightInput      = 1.0
	weightCacheWrite = 1.25
	weightCacheRead  = 0.1
	weightOutput     = 5.0
)

// windowSlack widens a window's start (its reset minus its length): a
// reset is given to the second (or rounded), so the window's first
// request may be logged a moment before reset - length.
const windowSlack = time.Minute

// StatusRateWindow is how far back the current rate is measured.
const StatusRateWindow = 15 * time.Minute

// StatusHorizon is how far ahead the pool's exhaustion is looked for.
const StatusHorizon = 7 * 24 * time.Hour

// The windows of a subscription account.
const (
	window5h = 5 * time.Hour
	window7d = 7 * 24 * time.Hour
)

// The pool's estimate kinds (StatusPool.Estimate).
const (
	EstimateRate      = "rate"          // time_to_exhaustion_seconds from the current rate
	EstimateExhausted = "exhausted"     // no usable account has room now: 0
	EstimateNoTraffic = "no_traffic"    // no tokens in the last 15 minutes: null
	EstimateNoData    = "no_data"       // no account has a utilization ratio yet: null
	EstimateLasts     = "not_within_7d" // the pool lasts beyond the horizon: null
	EstimateUnlimited = "unlimited"     // a usable account has no window (API key, cloud): null
)

// SessionLookback bounds how far back the log is searched for a session's
// latest request (the status line's).
const SessionLookback = 24 * time.Hour

// StatusMaxUtilization is where an account counts as full for the
// pool's estimate under cfg: routing.max_utilization with the affinity
// strategy (the others fill an account to its hard limit), else 1.
func StatusMaxUtilization(cfg *config.Config) float64 {
	if cfg.LBStrategy == config.StrategyAffinity && cfg.Routing.MaxUtilization > 0 {
		return min(cfg.Routing.MaxUtilization, 1)
	}
	return 1
}

// StatusOptions tune ComputeStatus.
type StatusOptions struct {
	Now time.Time // zero: time.Now()
	// MaxUtilization is routing.max_utilization: where an account counts
	// as full for the pool's estimate (0 or more than 1: 1).
	MaxUtilization float64
	// Sessions are the live affinity sessions per account (the daemon's);
	// nil when unknown (the CLI reading the database).
	Sessions map[string]int
	// SessionHash, when set, also looks up that session's account.
	SessionHash string
}

// StatusAccount is one account of the status view: a line of `status
// --json` (Type "account") and an entry of GET /api/status.
type StatusAccount struct {
	Type     string  `json:"type,omitempty"`
	Name     string  `json:"name"`
	Kind     string  `json:"kind"`
	Priority int     `json:"priority"`
	Tier     int     `json:"tier"`
	State    string  `json:"state"`  // an acctstate word
	Reason   string  `json:"reason"` // needs_login, key_refused, quarantined: why
	Window   string  `json:"window"` // limited: 5h, 7d, ...
	Family   string  `json:"family"` // limited_model: opus, ...
	Until    *string `json:"until"`  // when the state ends
	// Utilization5h and Utilization7d are 0..1, nil when unknown; 0 once
	// the window's reset has passed.
	Utilization5h *float64 `json:"utilization_5h"`
	Utilization7d *float64 `json:"utilization_7d"`
	Reset5h       *string  `json:"reset_5h"`
	Reset7d       *string  `json:"reset_7d"`
	// Sessions are the live affinity sessions on it; nil when unknown.
	Sessions *int `json:"sessions"`
	// TimeToLimitSeconds: this account alone, at its own rate of the last
	// 15 minutes, reaches the limit in this many seconds (before its
	// window resets); nil when unknown or not before the reset.
	TimeToLimitSeconds *int64 `json:"time_to_limit_seconds"`
}

// StatusPool is the pool's line of the status view (Type "pool").
type StatusPool struct {
	Type   string `json:"type,omitempty"`
	Usable int    `json:"usable"`
	Total  int    `json:"total"`
	// TimeToExhaustionSeconds is nil when unknown (see Estimate).
	TimeToExhaustionSeconds *int64  `json:"time_to_exhaustion_seconds"`
	ExhaustedAt             *string `json:"exhausted_at"`
	Estimate                string  `json:"estimate"` // one of the Estimate* words
	Method                  string  `json:"method"`   // how, in one line
	// TokensPerMinute is the pool's weighted tokens per minute over the
	// last 15 minutes.
	TokensPerMinute float64 `json:"tokens_per_minute"`
	MaxUtilization  float64 `json:"max_utilization"`
}

// SessionStatus is a session's latest account, from the log.
type SessionStatus struct {
	Session  string  `json:"session"`
	Account  *string `json:"account"`
	LastSeen *string `json:"last_seen"`
}

// Status is the whole status view: GET /api/status's answer.
type Status struct {
	Now      string          `json:"now"`
	Accounts []StatusAccount `json:"accounts"`
	Pool     StatusPool      `json:"pool"`
	Session  *SessionStatus  `json:"session,omitempty"`
}

// weighted is the utilization-weighted token count of a sum.
func weighted(input, cacheWrite, cacheRead, output float64) float64 {
	return weightInput*input + weightCacheWrite*cacheWrite + weightCacheRead*cacheRead + weightOutput*output
}

// weightedSQL sums weighted tokens in SQL (the same weights).
const weightedSQL = `coalesce(sum(input_tokens * 1.0 + cache_creation_input_tokens * 1.25 +
	cache_read_input_tokens * 0.1 + output_tokens * 5.0), 0)`

// windowTokens are the weighted tokens the account served at or after
// sinceMS. The query walks the (account, ts) index.
func windowTokens(ctx context.Context, db *store.DB, account string, sinceMS int64) (float64, error) {
	var w float64
	err := db.R.GetContext(ctx, &w, `SELECT `+weightedSQL+` FROM requests WHERE account = ? AND ts >= ?`, account, sinceMS)
	return w, err
}

// ComputeStatus builds the status view at opts.Now from the vault's
// accounts and the request log (logDB may be nil: no rates, no estimate).
func ComputeStatus(ctx context.Context, vaultDB, logDB *store.DB, opts StatusOptions) (Status, error) {
	now := opts.Now
	if now.IsZero() {
		now = time.Now()
	}
	limit := opts.MaxUtilization
	if limit <= 0 || limit > 1 {
		limit = 1
	}
	accts, err := store.ListAccounts(ctx, vaultDB)
	if err != nil {
		return Status{}, err
	}
	st := Status{Now: now.UTC().Format(time.RFC3339), Accounts: make([]StatusAccount, 0, len(accts))}
	st.Pool = StatusPool{Total: len(accts), MaxUtilization: limit}

	// The rate of the last StatusRateWindow, per account and pool.
	rates := map[string]float64{} // weighted tokens per second
	var poolRate float64
	if logDB != nil {
		sums, err := logDB.SumRequests(ctx, store.ToMS(now.Add(-StatusRateWindow)))
		if err != nil {
			return st, fmt.Errorf("read request log: %w", err)
		}
		for _, s := range sums {
			r := weighted(float64(s.Input), float64(s.CacheCreation), float64(s.CacheRead), float64(s.Output)) / StatusRateWindow.Seconds()
			rates[s.Account] += r
			poolRate += r
		}
	}
	st.Pool.TokensPerMinute = math.Round(poolRate*60*10) / 10

	sims := make([]*simAccount, 0, len(accts))
	for _, a := range accts {
		s := acctstate.Of(a, now)
		line := StatusAccount{
			Name: a.Name, Kind: a.Kind, Priority: a.Priority, Tier: a.Tier,
			State: s.Word, Reason: s.Reason, Window: s.Window, Family: s.Family,
			Until: RFC3339(msOf(s.Until)),
		}
		if opts.Sessions != nil {
			n := opts.Sessions[a.Name]
			line.Sessions = &n
		}
		sim := &simAccount{name: a.Name, tier: tierOf(a.Tier), windowed: a.Kind == store.KindOAuth}
		switch {
		case s.Usable():
			sim.from = now
			st.Pool.Usable++
		case s.Word == acctstate.Limited && !s.Until.IsZero():
			sim.from = s.Until
		}
		for i, w := range []struct {
			util   float64
			reset  int64
			length time.Duration
			out    **float64
			outR   **string
		}{
			{a.Util5h, a.Reset5h, window5h, &line.Utilization5h, &line.Reset5h},
			{a.Util7d, a.Reset7d, window7d, &line.Utilization7d, &line.Reset7d},
		} {
			win := &sim.win[i]
			win.length = w.length
			u, reset := w.util, store.FromMS(w.reset)
			if w.reset != 0 && !reset.After(now) {
				// The window has reset since: empty, and its next one
				// starts with the next request.
				u, reset = 0, time.Time{}
				if w.util >= 0 {
					zero := 0.0
					*w.out = &zero
				}
			} else {
				*w.out = Utilization(w.util)
				*w.outR = RFC3339(w.reset)
			}
			win.util = max(u, 0)
			win.reset = reset
			if win.reset.IsZero() {
				win.reset = now.Add(w.length)
			}
			if logDB != nil && u > 0 && w.reset != 0 {
				tok, err := windowTokens(ctx, logDB, a.Name, store.ToMS(reset.Add(-w.length-windowSlack)))
				if err != nil {
					return st, fmt.Errorf("read request log: %w", err)
				}
				if tok > 0 {
					win.ratio = u / tok
					win.own = true
				}
			}
		}
		sims = append(sims, sim)
		st.Accounts = append(st.Accounts, line)
	}
	borrowRatios(sims)
	for i, sim := range sims {
		if r := rates[sim.name]; r > 0 && sim.windowed && !sim.from.IsZero() && !sim.from.After(now) {
			if t, ok := sim.timeToLimit(limit, r, now); ok {
				secs := int64(math.Ceil(t.Seconds()))
				st.Accounts[i].TimeToLimitSeconds = &secs
			}
		}
	}
	estimatePool(&st.Pool, sims, limit, poolRate, now)

	if opts.SessionHash != "" && logDB != nil {
		ss, err := SessionAccount(ctx, logDB, opts.SessionHash, now)
		if err != nil {
			return st, err
		}
		st.Session = &ss
	}
	return st, nil
}

// SessionAccount finds the account of the session's latest request with
// an account in the log (within SessionLookback of now).
func SessionAccount(ctx context.Context, logDB *store.DB, hash string, now time.Time) (SessionStatus, error) {
	out := SessionStatus{Session: hash}
	var rows []struct {
		Account string `db:"account"`
		TS      int64  `db:"ts"`
	}
	err := logDB.R.SelectContext(ctx, &rows, `SELECT account, ts FROM requests
		WHERE ts >= ? AND session = ? AND account != '' ORDER BY ts DESC, seq DESC LIMIT 1`,
		store.ToMS(now.Add(-SessionLookback)), hash)
	if err != nil {
		return out, fmt.Errorf("read request log: %w", err)
	}
	if len(rows) == 1 {
		out.Account = &rows[0].Account
		out.LastSeen = RFC3339(rows[0].TS)
	}
	return out, nil
}

func tierOf(t int) float64 {
	if t <= 0 {
		return 1
	}
	return float64(t)
}

// simAccount is an account as the pool's estimate plays it forward.
type simAccount struct {
	name     string
	tier     float64
	windowed bool      // has 5h/7d windows (a subscription account)
	from     time.Time // usable from (zero: not within sight)
	win      [2]simWindow
}

type simWindow struct {
	length time.Duration
	util   float64   // 0..; unknown counts as 0
	reset  time.Time // the end of the current window
	ratio  float64   // utilization per weighted token; 0 = unknown
	own    bool      // ratio from its own use, not borrowed
}

// borrowRatios gives each window without a ratio of its own the pool's:
// the mean of the others' ratio times their tier, over its tier.
func borrowRatios(sims []*simAccount) {
	for w := range 2 {
		var sum float64
		n := 0
		for _, s := range sims {
			if s.win[w].own {
				sum += s.win[w].ratio * s.tier
				n++
			}
		}
		if n == 0 {
			continue
		}
		for _, s := range sims {
			if !s.win[w].own {
				s.win[w].ratio = sum / float64(n) / s.tier
			}
		}
	}
}

// capacity is the weighted tokens s can take before one of its windows
// reaches limit; ok is false when no window has a ratio.
func (s *simAccount) capacity(limit float64) (c float64, ok bool) {
	c = math.Inf(1)
	for _, w := range s.win {
		if w.ratio > 0 {
			c = min(c, max(0, (limit-w.util)/w.ratio))
			ok = true
		}
	}
	return c, ok
}

// timeToLimit is how long s alone takes at rate (weighted tokens per
// second) to reach limit in a window, before that window resets.
func (s *simAccount) timeToLimit(limit, rate float64, now time.Time) (time.Duration, bool) {
	best, ok := time.Duration(0), false
	for _, w := range s.win {
		if w.ratio <= 0 {
			continue
		}
		secs := max(0, limit-w.util) / w.ratio / rate
		d := time.Duration(secs * float64(time.Second))
		if secs > StatusHorizon.Seconds() || now.Add(d).After(w.reset) {
			continue
		}
		if !ok || d < best {
			best, ok = d, true
		}
	}
	return best, ok
}

// consume takes tokens off s's windows.
func (s *simAccount) consume(tokens float64) {
	for i := range s.win {
		s.win[i].util += tokens * s.win[i].ratio
	}
}

// estimatePool plays the pool forward at rate (weighted tokens per
// second) from now and fills p's estimate.
func estimatePool(p *StatusPool, sims []*simAccount, limit, rate float64, now time.Time) {
	set := func(kind, method string, at time.Time) {
		p.Estimate, p.Method = kind, method
		if !at.IsZero() {
			secs := int64(math.Ceil(at.Sub(now).Seconds()))
			p.TimeToExhaustionSeconds = &secs
			p.ExhaustedAt = RFC3339(at.UnixMilli())
		}
	}
	const how = "at the pool's rate of the last 15 minutes, each account's utilization per weighted token in its 5h/7d window"
	active := func(t time.Time) []*simAccount {
		var out []*simAccount
		for _, s := range sims {
			if !s.from.IsZero() && !s.from.After(t) {
				out = append(out, s)
			}
		}
		return out
	}
	for _, s := range active(now) {
		if !s.windowed {
			set(EstimateUnlimited, "account "+s.name+" has no 5h/7d window (an API key or a cloud account): the pool does not run out", time.Time{})
			return
		}
	}
	// Every usable account without room (or none usable) is exhaustion now.
	room, known := 0.0, false
	for _, s := range active(now) {
		c, ok := s.capacity(limit)
		if ok {
			known = true
			room += c
		} else {
			known, room = false, math.Inf(1)
			break
		}
	}
	if len(active(now)) == 0 || known && room <= 0 {
		set(EstimateExhausted, "no usable account has room below routing.max_utilization now", now)
		return
	}
	if rate <= 0 {
		set(EstimateNoTraffic, "no tokens served in the last 15 minutes", time.Time{})
		return
	}
	for _, s := range sims {
		if s.from.IsZero() || !s.windowed {
			continue
		}
		if _, ok := s.capacity(limit); !ok {
			set(EstimateNoData, "no account has served tokens in a window whose utilization is known yet", time.Time{})
			return
		}
	}
	t, end := now, now.Add(StatusHorizon)
	for range 100000 {
		act := active(t)
		total := 0.0
		caps := make([]float64, len(act))
		for i, s := range act {
			if !s.windowed {
				set(EstimateUnlimited, "account "+s.name+" has no 5h/7d window (an API key or a cloud account) and rejoins the pool: it does not run out", time.Time{})
				return
			}
			caps[i], _ = s.capacity(limit)
			total += caps[i]
		}
		// The next event: a window reset, or an account rejoining.
		var next time.Time
		for _, s := range sims {
			if s.from.IsZero() {
				continue
			}
			if s.from.After(t) && (next.IsZero() || s.from.Before(next)) {
				next = s.from
			}
			for _, w := range s.win {
				if s.windowed && w.reset.After(t) && (next.IsZero() || w.reset.Before(next)) {
					next = w.reset
				}
			}
		}
		drain := total / rate // seconds
		if next.IsZero() || drain <= next.Sub(t).Seconds() {
			if drain > end.Sub(t).Seconds() {
				break
			}
			set(EstimateRate, how, t.Add(time.Duration(drain*float64(time.Second))))
			return
		}
		if next.After(end) {
			break
		}
		// Drain until next, shared in proportion to the room left, then
		// reset the windows that end there.
		used := rate * next.Sub(t).Seconds()
		for i, s := range act {
			s.consume(used * caps[i] / total)
		}
		t = next
		for _, s := range sims {
			for i := range s.win {
				w := &s.win[i]
				for !w.reset.After(t) {
					w.util, w.reset = 0, w.reset.Add(w.length)
				}
			}
		}
	}
	set(EstimateLasts, "the pool lasts beyond 7 days at the rate of the last 15 minutes", time.Time{})
}
