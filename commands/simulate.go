package commands

import (
	"fmt"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/claudeflare/claudeflare/proxy"
	"github.com/claudeflare/claudeflare/store"
)

func simulateCommand() *cli.Command {
	return &cli.Command{
		Name:  "simulate",
		Usage: "replay the log's traffic against strategies: 429s, session moves, when the pool runs out",
		Description: "simulate replays the request log's /v1/messages requests (since --since, default\n" +
			"all of it: their times, sessions and tokens) against each strategy (--strategy,\n" +
			"default affinity,session,round-robin,least-used) with the proxy's own selector\n" +
			"and the [routing] settings, and prints per strategy the 429s clients would have\n" +
			"seen, the session moves (a session's request served by another account than its\n" +
			"previous one: a prompt-cache miss) and when the pool first ran out.\n\n" +
			"The model: each account has a capacity in tokens (input, output, cache reads\n" +
			"and writes) per 5h window; a window opens at the account's first request served\n" +
			"and lasts 5h; a full account takes nothing until its window ends. The capacity\n" +
			"is the fewest tokens the account served in a logged window before its first\n" +
			"429 there (a 429 answered, or the proxy moving past it to another account). An\n" +
			"account never limited gets its tier weight times the largest capacity per tier\n" +
			"weight seen (at least the most it served in one window); when no account was\n" +
			"ever limited no capacity is known and nothing runs out. The pool is the vault's\n" +
			"accounts (the log's accounts when the vault has none). The 7d window, model\n" +
			"limits and the cost of cache misses are not modelled.\n\n" +
			"With --json: one NDJSON line per account (scope \"account\": its tier and\n" +
			"capacity_5h, 0 = none known), then one per strategy (scope \"strategy\").",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "since", Usage: "only requests since `WHEN` (a duration back from now, or an RFC 3339 time)"},
			&cli.StringFlag{Name: "strategy", Usage: "the strategies to replay, comma-separated (`S,...`)"},
			&cli.BoolFlag{Name: "json", Usage: "print NDJSON"},
		},
		Action: simulate,
	}
}

// simAccountLine and simStrategyLine are the NDJSON lines of simulate.
type simAccountLine struct {
	Scope    string `json:"scope"`
	Account  string `json:"account"`
	Tier     int    `json:"tier"`
	Capacity int64  `json:"capacity_5h"`
}

type simStrategyLine struct {
	Scope string `json:"scope"`
	proxy.SimResult
}

func simulate(c *cli.Context) error {
	if c.NArg() > 0 {
		return usagef("simulate takes no arguments (got %q)", c.Args().First())
	}
	now := time.Now()
	since, err := whenFlag(c, "since", now)
	if err != nil {
		return err
	}
	strategies, err := simStrategies(c.String("strategy"))
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
	vault, err := store.ListAccounts(c.Context, vdb)
	if err != nil {
		return fmt.Errorf("list accounts: %w", err)
	}
	reqs, err := simRequests(c, db, since)
	if err != nil {
		return err
	}
	accts := proxy.SimCapacities(reqs, simPool(vault, reqs))
	simCfg := proxy.SimConfig{MaxUtilization: cfg.Routing.MaxUtilization, SessionIdle: time.Duration(cfg.Routing.SessionIdle),
		SessionsMax: cfg.Routing.SessionsMax, SessionDuration: cfg.SessionDuration()}
	results := make([]proxy.SimResult, len(strategies))
	for i, s := range strategies {
		results[i] = proxy.Simulate(reqs, accts, s, simCfg)
	}
	if c.Bool("json") {
		out := newNDJSON(e.stdout)
		for _, a := range accts {
			if err := out.write(simAccountLine{"account", a.Name, max(a.Tier, 1), a.Capacity}); err != nil {
				return err
			}
		}
		for _, r := range results {
			if err := out.write(simStrategyLine{"strategy", r}); err != nil {
				return err
			}
		}
		return nil
	}
	tw := tabwriter.NewWriter(e.stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ACCOUNT\tTIER\tCAPACITY/5H")
	for _, a := range accts {
		capacity := "unknown"
		if a.Capacity > 0 {
			capacity = fmt.Sprint(a.Capacity)
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\n", printable(a.Name), max(a.Tier, 1), capacity)
	}
	fmt.Fprintln(tw)
	fmt.Fprintln(tw, "STRATEGY\tREQUESTS\t429S\tSESSION MOVES\tRAN OUT")
	for _, r := range results {
		out := "never"
		if r.ExhaustedAt != nil {
			out = lineTime(*r.ExhaustedAt)
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%s\n", r.Strategy, r.Requests, r.Rejected, r.Moves, out)
	}
	return tw.Flush()
}

// simStrategies reads --strategy: names from proxy.SimStrategies, in the
// order given, each once; empty means all of them.
func simStrategies(s string) ([]string, error) {
	if strings.TrimSpace(s) == "" {
		return proxy.SimStrategies, nil
	}
	var out []string
	for _, name := range strings.Split(s, ",") {
		name = strings.TrimSpace(name)
		if !slices.Contains(proxy.SimStrategies, name) {
			return nil, usagef("--strategy %q: want a comma-separated list of %s", name, strings.Join(proxy.SimStrategies, ", "))
		}
		if !slices.Contains(out, name) {
			out = append(out, name)
		}
	}
	return out, nil
}

// simRequests reads the log's /v1/messages requests since since, oldest
// first: the requests that place sessions and spend an account's window.
func simRequests(c *cli.Context, db *store.DB, since time.Time) ([]proxy.SimRequest, error) {
	rows, err := db.QueryRequests(c.Context, store.RequestFilter{Since: since})
	if err != nil {
		return nil, fmt.Errorf("read request log: %w", err)
	}
	defer rows.Close()
	var out []proxy.SimRequest
	for rows.Next() {
		var r store.Request
		if err := rows.Scan(&r); err != nil {
			return nil, fmt.Errorf("read request log: %w", err)
		}
		if path, _, _ := strings.Cut(r.Path, "?"); path != "/v1/messages" {
			continue
		}
		out = append(out, proxy.SimRequest{TS: time.UnixMilli(r.TS), Session: r.Session,
			Tokens:  r.InputTokens + r.OutputTokens + r.CacheReadInputTokens + r.CacheCreationInputTokens,
			Account: r.Account, Status: r.Status, Tried: r.AccountsTried})
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read request log: %w", err)
	}
	return out, nil
}

// simPool is the simulated pool: the vault's accounts, or the accounts
// the log names when the vault has none.
func simPool(vault []store.Account, reqs []proxy.SimRequest) []proxy.SimAccount {
	var out []proxy.SimAccount
	for _, a := range vault {
		out = append(out, proxy.SimAccount{Name: a.Name, Priority: a.Priority, Tier: a.Tier})
	}
	if len(out) > 0 {
		return out
	}
	for _, r := range reqs {
		for _, name := range append([]string{r.Account}, r.Tried...) {
			if name != "" && !slices.ContainsFunc(out, func(a proxy.SimAccount) bool { return a.Name == name }) {
				out = append(out, proxy.SimAccount{Name: name})
			}
		}
	}
	return out
}
