package requestlog

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/claudeflare/claudeflare/store"
)

// AccountStats are the totals of one account (or of the pool).
type AccountStats struct {
	Account                  string
	Requests                 int64
	Errors                   int64 // status >= 400, no status, or an error recorded
	InputTokens              int64
	OutputTokens             int64
	CacheReadInputTokens     int64
	CacheCreationInputTokens int64
	MedianDurationMS         int64
	P95DurationMS            int64
	LastUsed                 int64 // unix ms, 0 = never
	// CostUSD sums the priced requests (nil when none has a price);
	// Unpriced counts those whose model had no price.
	CostUSD  *float64
	Unpriced int64
	// State is the account's current state from the vault; nil for an
	// account that is in the log but no longer in the vault, and for the
	// pool.
	State *AccountState
}

// AccountState is an account's rate-limit state as the daemon last saw it.
type AccountState struct {
	Kind             string
	Status           string // an acctstate word (ok, paused, needs_login, limited, ...)
	StatusReason     string
	Paused           bool
	RateLimitedUntil int64   // unix ms; 0 when not limited now
	RateLimitStatus  string  // the unified rate-limit status header
	Utilization5h    float64 // 0..1; negative when unknown
	Utilization7d    float64
	Reset5h          int64 // unix ms
	Reset7d          int64
}

// Stats are the per-account and pool totals of a period.
type Stats struct {
	Since    time.Time
	Accounts []AccountStats // vault accounts in priority order, then other names
	Pool     AccountStats
}

// StatsOptions tune ComputeStats.
type StatsOptions struct {
	Since time.Time // zero: the whole log
	// Vault, when set, supplies the accounts and their rate-limit state.
	Vault *store.DB
	Now   func() time.Time
}

// ComputeStats sums the log since opts.Since per account and for the
// pool, with exact median and 95th percentile durations, and joins each
// account's current rate-limit state. It reads aggregates, not rows: the
// durations come as (account, duration, count) groups.
func ComputeStats(ctx context.Context, db *store.DB, opts StatsOptions) (Stats, error) {
	now := time.Now
	if opts.Now != nil {
		now = opts.Now
	}
	st := Stats{Since: opts.Since, Pool: AccountStats{Account: ""}}
	since := int64(0)
	if !opts.Since.IsZero() {
		since = store.ToMS(opts.Since)
	}
	sums, err := db.SumRequests(ctx, since)
	if err != nil {
		return st, fmt.Errorf("read request log: %w", err)
	}
	byName := map[string]*AccountStats{}
	var order []string
	if opts.Vault != nil {
		accts, err := store.ListAccounts(ctx, opts.Vault)
		if err != nil {
			return st, err
		}
		nowMS := store.ToMS(now())
		for _, a := range accts {
			byName[a.Name] = &AccountStats{Account: a.Name, State: state(a, nowMS)}
			order = append(order, a.Name)
		}
	}
	var others []string
	for _, s := range sums {
		a := byName[s.Account]
		if a == nil {
			a = &AccountStats{Account: s.Account}
			byName[s.Account] = a
			others = append(others, s.Account)
		}
		a.Requests, a.Errors, a.LastUsed = s.Requests, s.Errors, s.LastUsed
		a.InputTokens, a.OutputTokens = s.Input, s.Output
		a.CacheReadInputTokens, a.CacheCreationInputTokens = s.CacheRead, s.CacheCreation
		p := &st.Pool
		p.Requests += s.Requests
		p.Errors += s.Errors
		p.InputTokens += s.Input
		p.OutputTokens += s.Output
		p.CacheReadInputTokens += s.CacheRead
		p.CacheCreationInputTokens += s.CacheCreation
		p.LastUsed = max(p.LastUsed, s.LastUsed)
	}
	sort.Strings(others)
	order = append(order, others...)

	costs, err := sumGroups(ctx, db, ByAccount, since)
	if err != nil {
		return st, err
	}
	for _, c := range costs {
		g := GroupStats{}
		g.add(c)
		if a := byName[c.Key]; a != nil {
			a.CostUSD, a.Unpriced = g.CostUSD, g.Unpriced
		}
		pg := GroupStats{CostUSD: st.Pool.CostUSD}
		pg.add(c)
		st.Pool.CostUSD = pg.CostUSD
		st.Pool.Unpriced += c.Unpriced
	}

	if err := percentiles(ctx, db, since, byName, &st.Pool); err != nil {
		return st, err
	}
	for _, name := range order {
		st.Accounts = append(st.Accounts, *byName[name])
	}
	return st, nil
}

type hist struct {
	n      int64
	values []int64 // ascending
	counts []int64
}

// rank returns the nearest-rank p-th percentile.
func (h *hist) rank(p float64) int64 {
	if h.n == 0 {
		return 0
	}
	want := int64(p*float64(h.n) + 0.999999999)
	if want < 1 {
		want = 1
	}
	var seen int64
	for i, c := range h.counts {
		seen += c
		if seen >= want {
			return h.values[i]
		}
	}
	return h.values[len(h.values)-1]
}

// percentiles fills the median and p95 duration of every account and
// the pool from (account, duration, count) groups.
func percentiles(ctx context.Context, db *store.DB, since int64, byName map[string]*AccountStats, pool *AccountStats) error {
	hs := map[string]*hist{}
	all := map[int64]int64{}
	err := db.EachDuration(ctx, since, func(acct string, d, c int64) error {
		h := hs[acct]
		if h == nil {
			h = &hist{}
			hs[acct] = h
		}
		h.n += c
		h.values = append(h.values, d)
		h.counts = append(h.counts, c)
		all[d] += c
		return nil
	})
	if err != nil {
		return fmt.Errorf("read request durations: %w", err)
	}
	for name, h := range hs {
		if a := byName[name]; a != nil {
			a.MedianDurationMS, a.P95DurationMS = h.rank(0.5), h.rank(0.95)
		}
	}
	var ph hist
	for d := range all {
		ph.values = append(ph.values, d)
	}
	sort.Slice(ph.values, func(i, j int) bool { return ph.values[i] < ph.values[j] })
	for _, d := range ph.values {
		ph.counts = append(ph.counts, all[d])
		ph.n += all[d]
	}
	pool.MedianDurationMS, pool.P95DurationMS = ph.rank(0.5), ph.rank(0.95)
	return nil
}

func state(a store.Account, nowMS int64) *AccountState {
	s := &AccountState{
		Kind: a.Kind, StatusReason: a.StatusReason, Paused: a.Paused,
		RateLimitStatus: a.RLStatus, Utilization5h: a.Util5h, Utilization7d: a.Util7d,
		Reset5h: a.Reset5h, Reset7d: a.Reset7d,
	}
	if a.RateLimitedUntil > nowMS {
		s.RateLimitedUntil = a.RateLimitedUntil
	}
	s.Status = AccountStatus(a, nowMS)
	return s
}
