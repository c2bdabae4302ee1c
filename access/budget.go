package access

// Budgets per client key (issue 18): a key may have at most one budget in
// USD and one in tokens, each per calendar day, week (from Monday) or
// month in UTC. The guard counts each key's use per period from the rows
// the proxy records (RecordUsage, wired by the daemon to
// proxy.(*Server).OnRecord), seeded at start from the request log, and
// answers a key that has reached a budget with a 429 until the period
// ends. A request is checked when it arrives: one already in flight
// finishes, so a budget may be overshot by what was in flight.
//
// What counts: tokens are all the billed tokens of a request (input,
// output, cache reads and cache writes); USD is the request's cost_usd
// (pricing), and a request without a price (cost_usd null) adds nothing
// to the USD use. Use is counted by the key's name as the request log
// records it, so a key revoked and made again under the same name in the
// same period carries the old key's use.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/claudeflare/claudeflare/store"
)

// Budget units.
const (
	UnitUSD    = "usd"
	UnitTokens = "tokens"
)

// Budget periods: calendar periods in UTC.
const (
	PeriodDay   = "day"
	PeriodWeek  = "week" // from Monday 00:00 UTC
	PeriodMonth = "month"
)

// periods lists the periods in a fixed order (the index of each period's
// use in clientUse).
var periods = [...]string{PeriodDay, PeriodWeek, PeriodMonth}

// maxBudgetAmount bounds an amount (a typo such as 1e30 is refused).
const maxBudgetAmount = 1e15

// Budget is one budget of a client key: Amount of Unit per Period.
type Budget struct {
	Amount float64 `json:"amount"`
	Unit   string  `json:"unit"`   // UnitUSD or UnitTokens
	Period string  `json:"period"` // PeriodDay, PeriodWeek or PeriodMonth
}

// String is the budget as ParseBudget reads it: "50usd/month".
func (b Budget) String() string {
	return strconv.FormatFloat(b.Amount, 'f', -1, 64) + b.Unit + "/" + b.Period
}

// BudgetSyntax says how a budget is written, for errors and help.
const BudgetSyntax = "AMOUNT followed by usd or tokens, then /day, /week (from Monday) or /month (UTC), e.g. 50usd/month, 5usd/week, 2000000tokens/day or 2Mtokens/day"

// ErrBadBudget is returned for a budget spec that does not parse.
var ErrBadBudget = errors.New("invalid budget")

// ParseBudget reads a budget written as AMOUNT UNIT / PERIOD in one word:
// "50usd/month", "2.5usd/day", "2000000tokens/day", "2Mtokens/week"
// (k and M multiply by a thousand and a million). Case and spaces around
// the parts do not matter. A token amount is a whole number.
func ParseBudget(spec string) (Budget, error) {
	bad := func(why string) (Budget, error) {
		return Budget{}, fmt.Errorf("%w %q: %s; write %s", ErrBadBudget, spec, why, BudgetSyntax)
	}
	s := strings.ToLower(strings.TrimSpace(spec))
	amount, period, ok := strings.Cut(s, "/")
	if !ok {
		return bad("no /day, /week or /month")
	}
	period = strings.TrimSpace(period)
	switch period {
	case PeriodDay, PeriodWeek, PeriodMonth:
	default:
		return bad(fmt.Sprintf("unknown period %q", period))
	}
	amount = strings.TrimSpace(amount)
	var unit string
	switch {
	case strings.HasSuffix(amount, UnitUSD):
		unit = UnitUSD
	case strings.HasSuffix(amount, UnitTokens):
		unit = UnitTokens
	case strings.HasSuffix(amount, "token"):
		unit, amount = UnitTokens, amount+"s"
	default:
		return bad("no unit (usd or tokens)")
	}
	num := strings.TrimSpace(strings.TrimSuffix(amount, unit))
	mult := 1.0
	switch {
	case strings.HasSuffix(num, "k"):
		mult, num = 1e3, strings.TrimSuffix(num, "k")
	case strings.HasSuffix(num, "m"):
		mult, num = 1e6, strings.TrimSuffix(num, "m")
	}
	v, err := strconv.ParseFloat(num, 64)
	if err != nil || !decimal(num) {
		return bad("the amount is not a number")
	}
	v *= mult
	if unit == UnitTokens {
		v = math.Round(v*1e6) / 1e6 // 1.5k is 1500, not 1500.0000000002
	}
	b := Budget{Amount: v, Unit: unit, Period: period}
	if err := b.check(); err != nil {
		return bad(err.Error())
	}
	return b, nil
}

// decimal reports whether s is digits with at most one '.' among them
// (no sign, exponent, hex, "inf" or "nan").
func decimal(s string) bool {
	digits, dots := 0, 0
	for _, c := range s {
		switch {
		case c >= '0' && c <= '9':
			digits++
		case c == '.':
			dots++
		default:
			return false
		}
	}
	return digits > 0 && dots <= 1
}

// check validates a budget (as parsed, or as read from vault.db).
func (b Budget) check() error {
	switch {
	case b.Unit != UnitUSD && b.Unit != UnitTokens:
		return fmt.Errorf("unknown unit %q", b.Unit)
	case b.Period != PeriodDay && b.Period != PeriodWeek && b.Period != PeriodMonth:
		return fmt.Errorf("unknown period %q", b.Period)
	case math.IsNaN(b.Amount) || b.Amount <= 0:
		return errors.New("the amount must be more than 0")
	case b.Amount > maxBudgetAmount:
		return errors.New("the amount is too large")
	case b.Unit == UnitTokens && b.Amount != math.Trunc(b.Amount):
		return errors.New("a token amount is a whole number")
	}
	return nil
}

// ParseBudgets reads the specs of one key's budgets: at most one in USD
// and one in tokens.
func ParseBudgets(specs []string) ([]Budget, error) {
	var out []Budget
	for _, s := range specs {
		b, err := ParseBudget(s)
		if err != nil {
			return nil, err
		}
		out = append(out, b)
	}
	if err := checkBudgets(out); err != nil {
		return nil, err
	}
	return out, nil
}

func checkBudgets(bs []Budget) error {
	seen := map[string]Budget{}
	for _, b := range bs {
		if err := b.check(); err != nil {
			return fmt.Errorf("%w %q: %v", ErrBadBudget, b.String(), err)
		}
		if prev, ok := seen[b.Unit]; ok {
			return fmt.Errorf("%w: %s and %s are both in %s; a key has at most one budget in usd and one in tokens", ErrBadBudget, prev, b, b.Unit)
		}
		seen[b.Unit] = b
	}
	return nil
}

// FormatBudgets is budgets as a list for people: "50usd/month,
// 2000000tokens/day", or "none".
func FormatBudgets(bs []Budget) string {
	if len(bs) == 0 {
		return "none"
	}
	s := make([]string, len(bs))
	for i, b := range bs {
		s[i] = b.String()
	}
	return strings.Join(s, ", ")
}

// encodeBudgets is the budgets column's text: nil for none.
func encodeBudgets(bs []Budget) (*string, error) {
	if len(bs) == 0 {
		return nil, nil
	}
	if err := checkBudgets(bs); err != nil {
		return nil, err
	}
	b, err := json.Marshal(bs)
	if err != nil {
		return nil, err
	}
	s := string(b)
	return &s, nil
}

// decodeBudgets reads the budgets column (nil: none).
func decodeBudgets(s *string) ([]Budget, error) {
	if s == nil {
		return nil, nil
	}
	var bs []Budget
	dec := json.NewDecoder(strings.NewReader(*s))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&bs); err != nil {
		return nil, fmt.Errorf("read budgets: %w", err)
	}
	if err := checkBudgets(bs); err != nil {
		return nil, err
	}
	return bs, nil
}

// PeriodBounds returns the calendar period (UTC) of the given kind that
// holds t: its start and its end (the next one's start).
func PeriodBounds(period string, t time.Time) (start, end time.Time) {
	t = t.UTC()
	day := time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, time.UTC)
	switch period {
	case PeriodWeek:
		back := (int(day.Weekday()) + 6) % 7 // days since Monday
		start = day.AddDate(0, 0, -back)
		return start, start.AddDate(0, 0, 7)
	case PeriodMonth:
		start = time.Date(t.Year(), t.Month(), 1, 0, 0, 0, 0, time.UTC)
		return start, start.AddDate(0, 1, 0)
	default:
		return day, day.AddDate(0, 0, 1)
	}
}

func periodIndex(period string) int {
	for i, p := range periods {
		if p == period {
			return i
		}
	}
	return 0
}

// BudgetEvent says a client key has gone over one of its budgets.
type BudgetEvent struct {
	Key    string  // the client key's name
	Period string  // PeriodDay, PeriodWeek or PeriodMonth
	Unit   string  // UnitUSD or UnitTokens
	Limit  float64 // the budget
	Used   float64 // the use in the period when it went over
	At     time.Time
	// Resets is the end of the period, when the key is served again.
	Resets time.Time
}

// OnBudgetExceeded adds fn to what is called when a key goes over a
// budget: once per key, budget and period, at the first crossing (a
// request's use, or a budget lowered under the use). A key already over
// when the daemon starts was reported by the run that saw it cross, and
// is not reported again. fn runs on the goroutine that recorded the
// request or reloaded the keys: it must be quick and must not block.
func (g *Guard) OnBudgetExceeded(fn func(BudgetEvent)) {
	g.budget.mu.Lock()
	g.budget.subs = append(g.budget.subs, fn)
	g.budget.mu.Unlock()
}

// usage is what a key used in one period.
type usage struct {
	tokens int64
	usd    float64
}

func (u usage) of(unit string) float64 {
	if unit == UnitUSD {
		return u.usd
	}
	return float64(u.tokens)
}

// periodUse is a key's use in the period that starts at start (unix ms).
type periodUse struct {
	start int64
	usage
}

// clientUse is a key's use in its latest day, week and month.
type clientUse [len(periods)]periodUse

// notifyKey names one budget of one key, for the crossing already
// reported in a period.
type notifyKey struct {
	name, unit, period string
}

// budgetTracker counts each key's use per period. Requests that end
// while the guard runs are counted as they are recorded; what came
// before, from the request log, for the period that holds since.
type budgetTracker struct {
	mu sync.Mutex
	// since is when the guard started: the log is read for what ended
	// before, the records give what came after.
	since    time.Time
	use      map[string]*clientUse // by key name
	seeded   [len(periods)]int64   // the start of the period last seeded from the log, per period
	notified map[notifyKey]int64   // the start of the period whose crossing was reported
	subs     []func(BudgetEvent)
}

func newBudgetTracker(since time.Time) *budgetTracker {
	return &budgetTracker{since: since, use: map[string]*clientUse{}, notified: map[notifyKey]int64{}}
}

// add counts u for the key name at ts in each period; a request of an
// earlier period than the one counted is left out.
func (t *budgetTracker) addLocked(name string, ts time.Time, u usage) {
	cu := t.use[name]
	if cu == nil {
		cu = &clientUse{}
		t.use[name] = cu
	}
	for i, p := range periods {
		s, _ := PeriodBounds(p, ts)
		start := s.UnixMilli()
		switch pu := &cu[i]; {
		case pu.start == start:
			pu.tokens += u.tokens
			pu.usd += u.usd
		case pu.start < start:
			*pu = periodUse{start: start, usage: u}
		}
	}
}

// usedLocked is the key's use in the period of kind p that holds now.
func (t *budgetTracker) usedLocked(name, p string, now time.Time) usage {
	cu := t.use[name]
	if cu == nil {
		return usage{}
	}
	s, _ := PeriodBounds(p, now)
	if pu := cu[periodIndex(p)]; pu.start == s.UnixMilli() {
		return pu.usage
	}
	return usage{}
}

// rowUsage is what a request log row counts against budgets.
func rowUsage(r store.Request) usage {
	u := usage{tokens: r.BilledTokens()}
	if r.CostUSD != nil && *r.CostUSD > 0 && !math.IsInf(*r.CostUSD, 0) {
		u.usd = *r.CostUSD
	}
	return u
}

// RecordUsage counts a finished request's tokens and cost against its
// client key's budgets (the daemon passes it to proxy.(*Server).OnRecord).
// A request without a live client key (none exist) counts for no one. It
// calls the OnBudgetExceeded subscribers when the request takes the key
// over a budget.
func (g *Guard) RecordUsage(r store.Request) {
	// Only live keys count (without keys, the log's client is an address).
	e := g.keys.Load().byName[r.Client]
	if e == nil {
		return
	}
	u := rowUsage(r)
	if u.tokens == 0 && u.usd == 0 {
		return
	}
	ts := store.FromMS(r.TS)
	if r.TS == 0 {
		ts = g.now()
	}
	now := g.now()
	t := g.budget
	t.mu.Lock()
	before := make([]usage, len(e.budgets))
	for i, b := range e.budgets {
		before[i] = t.usedLocked(r.Client, b.Period, now)
	}
	t.addLocked(r.Client, ts, u)
	var events []BudgetEvent
	for i, b := range e.budgets {
		after := t.usedLocked(r.Client, b.Period, now)
		if before[i].of(b.Unit) < b.Amount && after.of(b.Unit) >= b.Amount {
			if ev, ok := t.crossedLocked(r.Client, b, after, now); ok {
				events = append(events, ev)
			}
		}
	}
	subs := t.subs
	t.mu.Unlock()
	notify(subs, events)
}

// crossedLocked records that the key went over b in the period holding
// now, and returns the event unless it was already reported.
func (t *budgetTracker) crossedLocked(name string, b Budget, used usage, now time.Time) (BudgetEvent, bool) {
	start, end := PeriodBounds(b.Period, now)
	k := notifyKey{name: name, unit: b.Unit, period: b.Period}
	if t.notified[k] == start.UnixMilli() {
		return BudgetEvent{}, false
	}
	t.notified[k] = start.UnixMilli()
	return BudgetEvent{Key: name, Period: b.Period, Unit: b.Unit, Limit: b.Amount, Used: used.of(b.Unit), At: now, Resets: end}, true
}

func notify(subs []func(BudgetEvent), events []BudgetEvent) {
	for _, ev := range events {
		for _, fn := range subs {
			fn(ev)
		}
	}
}

// seedBudgets reads from the request log what each key used before the
// guard started in the current periods the budgets of ks need (once per
// period), then reports the keys over a budget not reported yet; on the
// first load (initial) they are only marked, the crossing having been
// seen by an earlier run. It runs in Reload, before ks is in use. A log
// that cannot be read is logged, not returned: the keys (a revocation)
// must still load; budgets then count from the guard's start until a
// later change of the keys reads the log again.
func (g *Guard) seedBudgets(ctx context.Context, ks *keySet, initial bool) {
	t := g.budget
	now := g.now()
	var need [len(periods)]bool
	for _, e := range ks.byName {
		for _, b := range e.budgets {
			need[periodIndex(b.Period)] = true
		}
	}
	for i, p := range periods {
		if !need[i] || g.logDB == nil {
			continue
		}
		start, _ := PeriodBounds(p, now)
		if !start.Before(t.since) {
			continue // the period began after the guard: every request in it was recorded live
		}
		t.mu.Lock()
		done := t.seeded[i] == start.UnixMilli()
		t.mu.Unlock()
		if done {
			continue
		}
		rows, err := store.ClientUsageBetween(ctx, g.logDB, start, t.since, "")
		if err != nil {
			g.log.Warn("read the client keys' use before this start from the request log; budgets count from now", "period", p, "err", err)
			continue
		}
		t.mu.Lock()
		if t.seeded[i] != start.UnixMilli() {
			t.seeded[i] = start.UnixMilli()
			for _, r := range rows {
				cu := t.use[r.Client]
				if cu == nil {
					cu = &clientUse{}
					t.use[r.Client] = cu
				}
				switch pu := &cu[i]; {
				case pu.start == start.UnixMilli():
					pu.tokens += r.Tokens
					pu.usd += r.CostUSD
				case pu.start < start.UnixMilli():
					*pu = periodUse{start: start.UnixMilli(), usage: usage{tokens: r.Tokens, usd: r.CostUSD}}
				}
			}
		}
		t.mu.Unlock()
	}
	t.mu.Lock()
	var events []BudgetEvent
	names := make([]string, 0, len(ks.byName))
	for name := range ks.byName {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		for _, b := range ks.byName[name].budgets {
			used := t.usedLocked(name, b.Period, now)
			if used.of(b.Unit) < b.Amount {
				continue
			}
			if ev, ok := t.crossedLocked(name, b, used, now); ok && !initial {
				events = append(events, ev)
			}
		}
	}
	subs := t.subs
	t.mu.Unlock()
	notify(subs, events)
}

// overBudget returns why e may not make a request at now, or nil: the
// first of its budgets whose use in the current period has reached it.
func (g *Guard) overBudget(e *keyEntry, now time.Time) *limitRejection {
	if len(e.budgets) == 0 {
		return nil
	}
	t := g.budget
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, b := range e.budgets {
		used := t.usedLocked(e.name, b.Period, now).of(b.Unit)
		if used < b.Amount {
			continue
		}
		_, end := PeriodBounds(b.Period, now)
		wait := end.Sub(now)
		return &limitRejection{
			retryAfter: wait,
			message: fmt.Sprintf("claudeflare budget: client key %q has used %s of its %s budget for %s; it resets at %s (in %s). "+
				"This is claudeflare's own per-key budget, not an Anthropic rate limit: an admin can change it with `claudeflare apikey update %s --budget ...`.",
				e.name, formatAmount(b.Unit, used), b.String(), periodPhrase(b.Period), end.Format(time.RFC3339), roundWait(wait), e.name),
		}
	}
	return nil
}

func formatAmount(unit string, v float64) string {
	if unit == UnitUSD {
		return fmt.Sprintf("%.2f usd", v)
	}
	return strconv.FormatFloat(v, 'f', 0, 64) + " tokens"
}

func periodPhrase(p string) string {
	switch p {
	case PeriodWeek:
		return "this week (UTC, from Monday)"
	case PeriodMonth:
		return "this month (UTC)"
	}
	return "today (UTC)"
}

// roundWait is d rounded for people: minutes, or seconds under one.
func roundWait(d time.Duration) time.Duration {
	if d >= time.Minute {
		return d.Round(time.Minute)
	}
	return d.Round(time.Second)
}

// BudgetUse is one budget of a key with its use in the current period.
type BudgetUse struct {
	Budget
	Used        float64   `json:"used"`
	PeriodStart time.Time `json:"period_start"`
	ResetsAt    time.Time `json:"resets_at"`
	Exceeded    bool      `json:"exceeded"`
}

// KeyBudgets is a live key's budgets and their use, as the running guard
// counts them.
type KeyBudgets struct {
	Name    string      `json:"name"`
	Role    Role        `json:"role"`
	Budgets []BudgetUse `json:"budgets"`
}

// Budgets returns every live, authentic key with its budgets and their
// use in the current periods, by name.
func (g *Guard) Budgets() []KeyBudgets {
	ks := g.keys.Load()
	now := g.now()
	t := g.budget
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]KeyBudgets, 0, len(ks.byName))
	for name, e := range ks.byName {
		kb := KeyBudgets{Name: name, Role: e.role, Budgets: []BudgetUse{}}
		for _, b := range e.budgets {
			kb.Budgets = append(kb.Budgets, budgetUse(b, t.usedLocked(name, b.Period, now).of(b.Unit), now))
		}
		out = append(out, kb)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// budgetUse is b with its use; its times are UTC (PeriodBounds), as the
// API answers them.
func budgetUse(b Budget, used float64, now time.Time) BudgetUse {
	start, end := PeriodBounds(b.Period, now)
	return BudgetUse{Budget: b, Used: used, PeriodStart: start, ResetsAt: end, Exceeded: used >= b.Amount}
}

// BudgetsUsed returns each budget of keys (as ListKeys returns them) with
// its use in the current period from the request log: for `apikey list`,
// which reads the log rather than asking the daemon. Revoked and tampered
// keys are left out.
func BudgetsUsed(ctx context.Context, logDB *store.DB, keys []KeyInfo, now time.Time) (map[string][]BudgetUse, error) {
	out := map[string][]BudgetUse{}
	for _, k := range keys {
		if k.Tampered || !k.RevokedAt.IsZero() || len(k.Budgets) == 0 {
			continue
		}
		for _, b := range k.Budgets {
			start, end := PeriodBounds(b.Period, now)
			rows, err := store.ClientUsageBetween(ctx, logDB, start, end, k.Name)
			if err != nil {
				return nil, err
			}
			var u usage
			for _, r := range rows {
				u.tokens += r.Tokens
				u.usd += r.CostUSD
			}
			out[k.Name] = append(out[k.Name], budgetUse(b, u.of(b.Unit), now))
		}
	}
	return out, nil
}
