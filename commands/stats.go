package commands

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/claudeflare/claudeflare/access"
	"github.com/claudeflare/claudeflare/requestlog"
	"github.com/claudeflare/claudeflare/store"
)

func statsCommand() *cli.Command {
	return &cli.Command{
		Name:  "stats",
		Usage: "requests, errors, tokens, cost and rate-limit state per account, model, client, hour or day",
		Description: "stats sums the request log (since --since, default all of it) per account and\n" +
			"for the pool, and shows each account's current rate-limit state and 5h/7d\n" +
			"utilization. With --json: one NDJSON line per account (scope \"account\"),\n" +
			"then one for the pool (scope \"pool\").\n\n" +
			"--by model, client, hour or day groups the requests that way instead (hours\n" +
			"and days are UTC; every hour or day of the period is listed, the empty ones\n" +
			"too): requests, errors, tokens and cost per group, then the total. With\n" +
			"--json: one NDJSON line per group ({\"scope\": \"model\", \"key\": ...}; key null\n" +
			"for none logged, an hour or day as its start in RFC 3339 UTC), then the\n" +
			"total (scope \"total\"). --by account is the default.\n\n" +
			"--by client also shows each client key's budgets and their use in the\n" +
			"current period (BUDGET: \"50usd/month 24%\", - for none or for a client that\n" +
			"is no key); with --json each client line has \"budgets\" as in `apikey list\n" +
			"--json` (amount, unit, period, used, period_start, resets_at, exceeded).\n\n" +
			"Tables show - where there is no data. The cost (cost_usd) is at the API's\n" +
			"list prices ([pricing] in claudeflare.toml(5)), summed over the requests of\n" +
			"models with a price; unpriced_requests counts the others. For subscription\n" +
			"(OAuth) accounts it is the API-equivalent value, not money charged; a table\n" +
			"that shows such a cost says so in a last line.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "since", Usage: "only requests since `WHEN` (a duration back from now, or an RFC 3339 time)"},
			&cli.StringFlag{Name: "by", Value: requestlog.ByAccount, Usage: "group by `WHAT`: account, model, client, hour or day (UTC)"},
			&cli.BoolFlag{Name: "json", Usage: "print NDJSON"},
		},
		Action: stats,
	}
}

func stats(c *cli.Context) error {
	if c.NArg() > 0 {
		return usagef("stats takes no arguments (got %q)", c.Args().First())
	}
	by := c.String("by")
	if err := requestlog.CheckGrouping(by); err != nil {
		return usagef("--by: %v", err)
	}
	now := time.Now()
	since, err := whenFlag(c, "since", now)
	if err != nil {
		return err
	}
	e := getEnv(c)
	cfg, err := e.config(nil)
	if err != nil {
		return err
	}
	vdb, db, err := e.openMetadata(cfg)
	if err != nil {
		return err
	}
	defer vdb.Close()
	defer db.Close()
	if by != requestlog.ByAccount {
		return statsBy(c, e, db, vdb, by, since, now)
	}
	st, err := requestlog.ComputeStats(c.Context, db, requestlog.StatsOptions{Since: since, Vault: vdb, Now: func() time.Time { return now }})
	if err != nil {
		return err
	}
	accts, pool := st.Lines()
	if c.Bool("json") {
		out := newNDJSON(e.stdout)
		for _, a := range accts {
			if err := out.write(a); err != nil {
				return err
			}
		}
		return out.write(pool)
	}
	subscription := false
	tw := tabwriter.NewWriter(e.stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ACCOUNT\tSTATUS\tREQUESTS\tERRORS\tINPUT\tOUTPUT\tCACHE READ\tCACHE WRITE\tCOST\tP50\tP95\tLAST USED\t5H\t7D\tLIMITED UNTIL")
	row := func(name, status string, a requestlog.AccountStats, u5, u7 string, limited int64) {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", printable(name), printable(status), count(a.Requests, a.Requests), count(a.Requests, a.Errors),
			count(a.Requests, a.InputTokens), count(a.Requests, a.OutputTokens),
			count(a.Requests, a.CacheReadInputTokens), count(a.Requests, a.CacheCreationInputTokens), humanUSD(a.CostUSD),
			dur(a.Requests, a.MedianDurationMS), dur(a.Requests, a.P95DurationMS), tableTime(a.LastUsed), u5, u7, tableTime(limited))
	}
	for _, a := range st.Accounts {
		name := a.Account
		if name == "" {
			name = "(none)"
		}
		if s := a.State; s != nil {
			row(name, s.Status, a, pct(requestlog.Utilization(s.Utilization5h)), pct(requestlog.Utilization(s.Utilization7d)), s.RateLimitedUntil)
			subscription = subscription || (s.Kind == store.KindOAuth && a.CostUSD != nil)
		} else {
			row(name, "removed", a, "-", "-", 0)
		}
	}
	row("TOTAL", fmt.Sprintf("%d/%d ok", *pool.Available, *pool.Accounts), st.Pool, "", "", 0)
	if err := tw.Flush(); err != nil {
		return err
	}
	return subscriptionNote(e, subscription)
}

// statsBy prints the log grouped by model, client, hour or day.
func statsBy(c *cli.Context, e *env, db, vdb *store.DB, by string, since, now time.Time) error {
	g, err := requestlog.ComputeGroups(c.Context, db, requestlog.GroupsOptions{Since: since, By: by, Vault: vdb, Now: func() time.Time { return now }})
	if err != nil {
		return err
	}
	groups, total := g.Lines()
	var budgets map[string][]budgetOut
	if by == requestlog.ByClient {
		budgets = e.clientBudgets(c.Context, vdb, db, now)
	}
	if c.Bool("json") {
		out := newNDJSON(e.stdout)
		for _, l := range groups {
			var line any = l
			if by == requestlog.ByClient {
				bs := []budgetOut{}
				if l.Key != nil && budgets[*l.Key] != nil {
					bs = budgets[*l.Key]
				}
				line = clientLine{GroupLine: l, Budgets: bs}
			}
			if err := out.write(line); err != nil {
				return err
			}
		}
		return out.write(total)
	}
	head := map[string]string{requestlog.ByModel: "MODEL", requestlog.ByClient: "CLIENT", requestlog.ByHour: "HOUR (UTC)", requestlog.ByDay: "DAY (UTC)"}[by]
	tw := tabwriter.NewWriter(e.stdout, 2, 4, 2, ' ', 0)
	budgetHead := ""
	if by == requestlog.ByClient {
		budgetHead = "\tBUDGET"
	}
	fmt.Fprintf(tw, "%s\tREQUESTS\tERRORS\tINPUT\tOUTPUT\tCACHE READ\tCACHE WRITE\tCOST%s\n", head, budgetHead)
	row := func(key string, s requestlog.GroupStats, total bool) {
		budget := "" // none on the total's line
		if by == requestlog.ByClient && !total {
			budget = "\t" + budgetUseCell(budgets[s.Key])
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s%s\n", key, count(s.Requests, s.Requests), count(s.Requests, s.Errors),
			count(s.Requests, s.InputTokens), count(s.Requests, s.OutputTokens),
			count(s.Requests, s.CacheReadInputTokens), count(s.Requests, s.CacheCreationInputTokens), humanUSD(s.CostUSD), budget)
	}
	for _, s := range g.Groups {
		key := printable(s.Key)
		switch {
		case by == requestlog.ByHour:
			key = time.UnixMilli(s.Start).UTC().Format("2006-01-02 15:00")
		case by == requestlog.ByDay:
			key = time.UnixMilli(s.Start).UTC().Format("2006-01-02")
		case key == "":
			key = "(none)"
		}
		row(key, s, false)
	}
	row("TOTAL", g.Total, true)
	if err := tw.Flush(); err != nil {
		return err
	}
	return subscriptionNote(e, g.Subscription)
}

// clientLine is a line of `stats --by client --json`: the group and, for
// a client key, its budgets as `apikey list --json` shows them ([] for
// none, or a client that is no key).
type clientLine struct {
	requestlog.GroupLine
	Budgets []budgetOut `json:"budgets"`
}

// clientBudgets are the live client keys' budgets with their use in the
// current periods, by key name, read as `apikey list` reads them but
// without the master key (stats reads no secret: the rows' MACs are not
// checked). When they cannot be read it warns and shows none.
func (e *env) clientBudgets(ctx context.Context, vdb, logDB *store.DB, now time.Time) map[string][]budgetOut {
	keys, err := access.LiveKeysUnverified(ctx, vdb)
	if err != nil {
		fmt.Fprintf(e.stderr, "claudeflare: warning: cannot read the client keys' budgets: %v\n", err)
		return nil
	}
	used, err := access.BudgetsUsed(ctx, logDB, keys, now)
	if err != nil {
		fmt.Fprintf(e.stderr, "claudeflare: warning: cannot read the budgets' use from the request log: %v\n", err)
	}
	out := map[string][]budgetOut{}
	for _, k := range keys {
		if len(k.Budgets) > 0 {
			out[k.Name] = keyBudgets(k, used, now)
		}
	}
	return out
}

// budgetUseCell is the BUDGET cell of `stats --by client`: each budget
// with the share used, "50usd/month 24%, 2000000tokens/day 3%"; - for
// none.
func budgetUseCell(bs []budgetOut) string {
	if len(bs) == 0 {
		return "-"
	}
	cells := make([]string, 0, len(bs))
	for _, b := range bs {
		use := "-"
		if b.Used != nil {
			use = fmt.Sprintf("%.0f%%", 100**b.Used/b.Amount)
		}
		cells = append(cells, access.Budget{Amount: b.Amount, Unit: b.Unit, Period: b.Period}.String()+" "+use)
	}
	return strings.Join(cells, ", ")
}

// subscriptionNote is the footnote under a table that shows the cost of a
// subscription account.
func subscriptionNote(e *env, show bool) error {
	if !show {
		return nil
	}
	_, err := fmt.Fprintln(e.stdout, requestlog.SubscriptionNote)
	return err
}

// count is n, or - when the group has no requests (no data).
func count(requests, n int64) string {
	if requests == 0 {
		return "-"
	}
	return strconv.FormatInt(n, 10)
}

// dur is a duration in ms, or - when the group has no requests.
func dur(requests, v int64) string {
	if requests == 0 {
		return "-"
	}
	return ms(v)
}

func ms(v int64) string {
	return (time.Duration(v) * time.Millisecond).String()
}
