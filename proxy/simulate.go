package proxy

import (
	"slices"
	"strings"
	"time"

	"github.com/claudeflare/claudeflare/config"
)

// The simulation replays a request log against a strategy with the
// proxy's own selector (and its affinity table) on the log's clock. Its
// model of the upstream is deliberately simple: each account has a
// capacity in tokens per 5h window; the window opens at the account's
// first request served and lasts 5h; an account whose window has served
// its capacity is limited until the window ends. The 7d window, model
// limits and cache effects are not modelled.

// SimWindow is the length of the modelled rate-limit window.
const SimWindow = 5 * time.Hour

// SimRequest is one logged request to replay.
type SimRequest struct {
	TS      time.Time
	Session string // the log's session hash ("" = none: no affinity)
	Tokens  int64  // tokens it used (input, output and cache)
	// What the log saw, for SimCapacities: the account that answered,
	// the status, and the accounts tried in order.
	Account string
	Status  int
	Tried   []string
}

// SimAccount is one account of the simulated pool.
type SimAccount struct {
	Name     string
	Priority int
	Tier     int   // 1, 5 or 20 (0 = 1)
	Capacity int64 // tokens per 5h window; 0 = no limit known
}

// SimConfig holds the routing settings the strategies read.
type SimConfig struct {
	MaxUtilization  float64       // routing.max_utilization (0 = 1)
	SessionIdle     time.Duration // routing.session_idle (0 = never)
	SessionsMax     int           // routing.sessions_max (0 = no bound)
	SessionDuration time.Duration // the session strategy's SESSION_DURATION_MS
}

// SimResult is what clients would have seen under one strategy.
type SimResult struct {
	Strategy string `json:"strategy"`
	Requests int    `json:"requests"`
	// Rejected counts the requests no account had capacity for: 429s.
	Rejected int `json:"rejected_429"`
	// Moves counts the requests of a session served by another account
	// than the session's previous request: prompt-cache misses.
	Moves int `json:"session_moves"`
	// ExhaustedAt is the first time no account had capacity (nil = never).
	ExhaustedAt *time.Time `json:"exhausted_at"`
	// Served is the requests each account served.
	Served map[string]int `json:"served"`
}

// simAccount is an account and its modelled window.
type simAccount struct {
	*account
	capacity int64
	used     int64
	end      time.Time // the window's end; zero = no window open
}

// Simulate replays reqs (oldest first) against accts under strategy.
func Simulate(reqs []SimRequest, accts []SimAccount, strategy string, cfg SimConfig) SimResult {
	pool := make([]*simAccount, len(accts))
	for i, a := range accts {
		pool[i] = &simAccount{account: &account{ID: int64(i + 1), Name: a.Name, Priority: a.Priority, Tier: a.Tier}, capacity: a.Capacity}
	}
	// The pool's order: priority, then name.
	slices.SortStableFunc(pool, func(a, b *simAccount) int {
		if a.Priority != b.Priority {
			return a.Priority - b.Priority
		}
		return strings.Compare(a.Name, b.Name)
	})
	plain := make([]*account, len(pool))
	byID := map[int64]*simAccount{}
	for i, a := range pool {
		plain[i] = a.account
		byID[a.ID] = a
	}
	sel := &selector{strategy: strategy, session: cfg.SessionDuration, maxUtil: cfg.MaxUtilization,
		sessions: newSessionTable(cfg.SessionIdle, cfg.SessionsMax)}
	res := SimResult{Strategy: strategy, Requests: len(reqs), Served: map[string]int{}}
	last := map[string]int64{} // session -> the account of its previous served request
	for _, r := range reqs {
		now := r.TS
		for _, a := range pool {
			a.tick(now)
		}
		got := sel.pickFor(plain, now, route{key: r.Session})
		if len(got.Candidates) == 0 {
			res.Rejected++
			if res.ExhaustedAt == nil {
				t := now
				res.ExhaustedAt = &t
			}
			continue
		}
		a := byID[got.Candidates[0].ID]
		a.serve(now, r.Tokens)
		sel.served(a.account, now)
		sel.stay(r.Session, a.account, plain, now)
		res.Served[a.Name]++
		if r.Session != "" {
			if prev, ok := last[r.Session]; ok && prev != a.ID {
				res.Moves++
			}
			last[r.Session] = a.ID
		}
	}
	return res
}

// tick closes a's window once it has ended and sets the utilization the
// affinity strategy reads.
func (a *simAccount) tick(now time.Time) {
	if !a.end.IsZero() && !now.Before(a.end) {
		a.used, a.end = 0, time.Time{}
	}
	a.limit.Util5h, a.limit.Reset5h = 0, a.end
	if a.capacity > 0 {
		a.limit.Util5h = float64(a.used) / float64(a.capacity)
	}
}

// serve counts tokens against a's window at now, opening the window if
// none is open, and limits a until the window ends once it is full.
func (a *simAccount) serve(now time.Time, tokens int64) {
	if a.end.IsZero() {
		a.end = now.Add(SimWindow)
	}
	a.used += tokens
	a.served++
	a.lastUsed = now
	if a.capacity > 0 && a.used >= a.capacity {
		a.limit.Until, a.limit.Reason = a.end, LimitRateLimited
	}
	a.tick(now)
}

// SimStrategies are the strategies simulate replays by default.
var SimStrategies = []string{config.StrategyAffinity, config.StrategySession, config.StrategyRoundRobin, config.StrategyLeastUsed}

// SimCapacities fills in each account's capacity per 5h window from the
// log reqs (oldest first). A window opens at the account's first request
// served (status below 400) and lasts 5h. The account was limited when
// a request it answered got a 429, or when the proxy tried it and moved
// on to another account. Its capacity is the fewest tokens it served in a
// window before it was first limited there (windows with none served are
// left out: a 7d limit). An account never limited gets its tier weight
// times the largest capacity per tier weight seen, or the most it served
// in one window if that is more; when no account was ever limited, no
// capacity is known (0: no limit).
func SimCapacities(reqs []SimRequest, accts []SimAccount) []SimAccount {
	out := slices.Clone(accts)
	limited := map[string]int64{} // name -> the fewest tokens before a limit
	most := map[string]int64{}    // name -> the most tokens served in one window
	for _, a := range out {
		var used int64
		var end time.Time
		hit := false
		for _, r := range reqs {
			if !end.IsZero() && !r.TS.Before(end) {
				used, end, hit = 0, time.Time{}, false
			}
			if simLimitedAt(r, a.Name) {
				if !end.IsZero() && !hit && used > 0 {
					if v, ok := limited[a.Name]; !ok || used < v {
						limited[a.Name] = used
					}
				}
				hit = true
				continue
			}
			if r.Account != a.Name || r.Status >= 400 || r.Status == 0 {
				continue
			}
			if end.IsZero() {
				end = r.TS.Add(SimWindow)
			}
			used += r.Tokens
			most[a.Name] = max(most[a.Name], used)
		}
	}
	var perTier float64
	for _, a := range out {
		if v, ok := limited[a.Name]; ok {
			perTier = max(perTier, float64(v)/simTier(a.Tier))
		}
	}
	for i, a := range out {
		switch v, ok := limited[a.Name]; {
		case ok:
			out[i].Capacity = v
		case perTier > 0:
			out[i].Capacity = max(int64(perTier*simTier(a.Tier)), most[a.Name])
		default:
			out[i].Capacity = 0
		}
	}
	return out
}

// simLimitedAt reports whether the logged request r shows account name
// limited: it answered 429, or it was tried and another account answered.
func simLimitedAt(r SimRequest, name string) bool {
	if r.Account == name {
		return r.Status == 429
	}
	return slices.Contains(r.Tried, name)
}

func simTier(t int) float64 {
	if t <= 0 {
		return 1
	}
	return float64(t)
}
