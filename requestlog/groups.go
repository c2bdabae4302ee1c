package requestlog

import (
	"context"
	"database/sql"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/claudeflare/claudeflare/store"
)

// The groupings of `stats --by` and GET /api/stats?by=.
const (
	ByAccount = "account"
	ByModel   = "model"
	ByClient  = "client"
	ByHour    = "hour" // UTC hours
	ByDay     = "day"  // UTC days
)

// Groupings lists the groupings, the default first.
var Groupings = []string{ByAccount, ByModel, ByClient, ByHour, ByDay}

// MaxTimeBuckets bounds the hour or day buckets filled in between the
// first and the last: a longer period lists only its buckets with data.
const MaxTimeBuckets = 10000

// CheckGrouping is nil for a known grouping, else an error naming them.
func CheckGrouping(by string) error {
	for _, g := range Groupings {
		if by == g {
			return nil
		}
	}
	return fmt.Errorf("unknown grouping %q (want one of %s)", by, strings.Join(Groupings, ", "))
}

// GroupStats are the totals of one group: an account, a model, a client
// or an hour or day (UTC).
type GroupStats struct {
	// Key is the account, model or client ("" = none logged); for hour
	// and day Start is the bucket's start (unix ms) and Key is empty.
	Key   string
	Start int64

	Requests                 int64
	Errors                   int64 // as AccountStats.Errors
	InputTokens              int64
	OutputTokens             int64
	CacheReadInputTokens     int64
	CacheCreationInputTokens int64
	// CostUSD sums the priced rows; nil when no row has a price.
	CostUSD *float64
	// Unpriced counts the rows whose model had no price.
	Unpriced int64
}

// Groups are the stats of a period grouped one way.
type Groups struct {
	Since  time.Time
	By     string
	Groups []GroupStats
	Total  GroupStats
	// Subscription says that some cost in the period is a subscription
	// (OAuth) account's, so an API-equivalent value, not money charged.
	// Known only when GroupsOptions.Vault is set.
	Subscription bool
}

// GroupsOptions tune ComputeGroups.
type GroupsOptions struct {
	Since time.Time // zero: the whole log
	By    string    // a grouping; "" is ByAccount
	// Vault, when set, lists the accounts by account (every vault account,
	// in priority order, then the other names in the log) and says which
	// are subscription accounts.
	Vault *store.DB
	Now   func() time.Time
}

// groupExprs are the SQL of each grouping's key.
var groupExprs = map[string]string{
	ByAccount: "account",
	ByModel:   "model",
	ByClient:  "client",
	ByHour:    "CAST(ts / 3600000 AS INTEGER) * 3600000",
	ByDay:     "CAST(ts / 86400000 AS INTEGER) * 86400000",
}

type groupRow struct {
	Key           string          `db:"k"`
	Requests      int64           `db:"requests"`
	Errors        int64           `db:"errors"`
	Input         int64           `db:"input"`
	Output        int64           `db:"output"`
	CacheRead     int64           `db:"cache_read"`
	CacheCreation int64           `db:"cache_creation"`
	Cost          sql.NullFloat64 `db:"cost"`
	Unpriced      int64           `db:"unpriced"`
}

// sumGroups sums the log at or after sinceMS by the grouping's key: one
// row per group, not per request.
func sumGroups(ctx context.Context, db *store.DB, by string, sinceMS int64) ([]groupRow, error) {
	var rows []groupRow
	err := db.R.SelectContext(ctx, &rows, `SELECT CAST(`+groupExprs[by]+` AS TEXT) AS k, count(*) AS requests,
		sum(status >= 400 OR status = 0 OR error != '') AS errors,
		sum(input_tokens) AS input, sum(output_tokens) AS output,
		sum(cache_read_input_tokens) AS cache_read, sum(cache_creation_input_tokens) AS cache_creation,
		sum(cost_usd) AS cost, sum(cost_usd IS NULL) AS unpriced
		FROM requests WHERE ts >= ? GROUP BY 1`, sinceMS)
	if err != nil {
		return nil, fmt.Errorf("read request log: %w", err)
	}
	return rows, nil
}

func (g *GroupStats) add(r groupRow) {
	g.Requests += r.Requests
	g.Errors += r.Errors
	g.InputTokens += r.Input
	g.OutputTokens += r.Output
	g.CacheReadInputTokens += r.CacheRead
	g.CacheCreationInputTokens += r.CacheCreation
	g.Unpriced += r.Unpriced
	if r.Cost.Valid {
		c := r.Cost.Float64
		if g.CostUSD != nil {
			c += *g.CostUSD
		}
		g.CostUSD = &c
	}
}

// ComputeGroups sums the log since opts.Since by opts.By. By account:
// the vault's accounts in priority order (those without requests too),
// then the other names in the log, sorted; by model or client: the most
// cost first, then the most requests, then by name; by hour or day: every
// UTC bucket from the one holding Since (or the log's first request) to
// the one holding now, oldest first, empty ones included (at most
// MaxTimeBuckets: a longer period lists only the buckets with data).
func ComputeGroups(ctx context.Context, db *store.DB, opts GroupsOptions) (Groups, error) {
	by := opts.By
	if by == "" {
		by = ByAccount
	}
	out := Groups{Since: opts.Since, By: by}
	if err := CheckGrouping(by); err != nil {
		return out, err
	}
	now := time.Now
	if opts.Now != nil {
		now = opts.Now
	}
	sinceMS := int64(0)
	if !opts.Since.IsZero() {
		sinceMS = store.ToMS(opts.Since)
	}
	rows, err := sumGroups(ctx, db, by, sinceMS)
	if err != nil {
		return out, err
	}
	for _, r := range rows {
		out.Total.add(r)
	}

	var accts []store.Account
	if opts.Vault != nil {
		if accts, err = store.ListAccounts(ctx, opts.Vault); err != nil {
			return out, err
		}
		if out.Subscription, err = subscriptionCost(ctx, db, by, rows, accts, sinceMS); err != nil {
			return out, err
		}
	}

	switch by {
	case ByAccount:
		byName := map[string]groupRow{}
		for _, r := range rows {
			byName[r.Key] = r
		}
		for _, a := range accts {
			g := GroupStats{Key: a.Name}
			if r, ok := byName[a.Name]; ok {
				g.add(r)
				delete(byName, a.Name)
			}
			out.Groups = append(out.Groups, g)
		}
		var others []string
		for name := range byName {
			others = append(others, name)
		}
		sort.Strings(others)
		for _, name := range others {
			g := GroupStats{Key: name}
			g.add(byName[name])
			out.Groups = append(out.Groups, g)
		}
	case ByModel, ByClient:
		for _, r := range rows {
			g := GroupStats{Key: r.Key}
			g.add(r)
			out.Groups = append(out.Groups, g)
		}
		cost := func(g GroupStats) float64 {
			if g.CostUSD == nil {
				return -1
			}
			return *g.CostUSD
		}
		sort.SliceStable(out.Groups, func(i, j int) bool {
			a, b := out.Groups[i], out.Groups[j]
			if cost(a) != cost(b) {
				return cost(a) > cost(b)
			}
			if a.Requests != b.Requests {
				return a.Requests > b.Requests
			}
			return a.Key < b.Key
		})
	case ByHour, ByDay:
		out.Groups = timeBuckets(rows, by, sinceMS, store.ToMS(now()))
	}
	return out, nil
}

// timeBuckets lays rows (keyed by bucket start) out as every bucket from
// the one holding sinceMS (or the first row's) to the one holding nowMS
// (or the last row's, if later).
func timeBuckets(rows []groupRow, by string, sinceMS, nowMS int64) []GroupStats {
	step := int64(3600000)
	if by == ByDay {
		step = 86400000
	}
	byStart := map[int64]groupRow{}
	first, last := int64(-1), int64(-1)
	for _, r := range rows {
		var start int64
		fmt.Sscan(r.Key, &start)
		byStart[start] = r
		if first < 0 || start < first {
			first = start
		}
		last = max(last, start)
	}
	if sinceMS > 0 {
		first = floorDiv(sinceMS, step) * step
	}
	if first < 0 {
		return nil // no since and no rows
	}
	last = max(last, floorDiv(nowMS, step)*step)
	var out []GroupStats
	if (last-first)/step+1 > MaxTimeBuckets {
		starts := make([]int64, 0, len(byStart))
		for s := range byStart {
			starts = append(starts, s)
		}
		sort.Slice(starts, func(i, j int) bool { return starts[i] < starts[j] })
		for _, s := range starts {
			g := GroupStats{Start: s}
			g.add(byStart[s])
			out = append(out, g)
		}
		return out
	}
	for s := first; s <= last; s += step {
		g := GroupStats{Start: s}
		if r, ok := byStart[s]; ok {
			g.add(r)
		}
		out = append(out, g)
	}
	return out
}

// subscriptionCost reports whether a subscription (OAuth) account has a
// priced request in the period.
func subscriptionCost(ctx context.Context, db *store.DB, by string, rows []groupRow, accts []store.Account, sinceMS int64) (bool, error) {
	oauth := map[string]bool{}
	for _, a := range accts {
		if a.Kind == store.KindOAuth {
			oauth[a.Name] = true
		}
	}
	if len(oauth) == 0 {
		return false, nil
	}
	if by != ByAccount {
		var err error
		if rows, err = sumGroups(ctx, db, ByAccount, sinceMS); err != nil {
			return false, err
		}
	}
	for _, r := range rows {
		if oauth[r.Key] && r.Cost.Valid {
			return true, nil
		}
	}
	return false, nil
}

// SubscriptionNote says what a cost of a subscription account is, where
// one is shown.
const SubscriptionNote = "Cost is at the API's list prices: for subscription (OAuth) accounts it is the API-equivalent value, not money charged."

// GroupLine is one group of `stats --by X --json` and of GET
// /api/stats?by=X (groups and total).
type GroupLine struct {
	Scope                    string   `json:"scope"` // the grouping, or total
	Key                      *string  `json:"key"`   // null: none logged, and for total
	Requests                 int64    `json:"requests"`
	Errors                   int64    `json:"errors"`
	InputTokens              int64    `json:"input_tokens"`
	OutputTokens             int64    `json:"output_tokens"`
	CacheReadInputTokens     int64    `json:"cache_read_input_tokens"`
	CacheCreationInputTokens int64    `json:"cache_creation_input_tokens"`
	CostUSD                  *float64 `json:"cost_usd"`
	UnpricedRequests         int64    `json:"unpriced_requests"`
}

// Lines are the groups as GroupLines, then the total's.
func (gs *Groups) Lines() (groups []GroupLine, total GroupLine) {
	groups = make([]GroupLine, 0, len(gs.Groups))
	for _, g := range gs.Groups {
		groups = append(groups, groupLine(gs.By, g))
	}
	total = groupLine("total", gs.Total)
	total.Key = nil
	return groups, total
}

func groupLine(scope string, g GroupStats) GroupLine {
	out := GroupLine{
		Scope: scope, Requests: g.Requests, Errors: g.Errors,
		InputTokens: g.InputTokens, OutputTokens: g.OutputTokens,
		CacheReadInputTokens: g.CacheReadInputTokens, CacheCreationInputTokens: g.CacheCreationInputTokens,
		CostUSD: g.CostUSD, UnpricedRequests: g.Unpriced,
	}
	if scope == ByHour || scope == ByDay {
		out.Key = RFC3339(g.Start)
		if g.Start == 0 {
			s := time.UnixMilli(0).UTC().Format(time.RFC3339)
			out.Key = &s
		}
	} else {
		out.Key = nonEmpty(g.Key)
	}
	return out
}
