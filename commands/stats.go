package commands

import (
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/claudeflare/claudeflare/requestlog"
)

func statsCommand() *cli.Command {
	return &cli.Command{
		Name:  "stats",
		Usage: "per-account requests, tokens, errors, latency and rate-limit state",
		Description: "stats sums the request log (since --since, default all of it) per account and\n" +
			"for the pool, and shows each account's current rate-limit state and 5h/7d\n" +
			"utilization. With --json: one NDJSON line per account (scope \"account\"),\n" +
			"then one for the pool (scope \"pool\").",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "since", Usage: "only requests since `WHEN` (a duration back from now, or an RFC 3339 time)"},
			&cli.BoolFlag{Name: "json", Usage: "print NDJSON"},
		},
		Action: stats,
	}
}

func stats(c *cli.Context) error {
	if c.NArg() > 0 {
		return usagef("stats takes no arguments (got %q)", c.Args().First())
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
	// Stats read metadata only, never a secret: no key needed.
	vdb, err := openVaultDB(cfg)
	if err != nil {
		return err
	}
	defer vdb.Close()
	db, err := e.openLog(cfg)
	if err != nil {
		return err
	}
	defer db.Close()
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
	tw := tabwriter.NewWriter(e.stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ACCOUNT\tSTATUS\tREQUESTS\tERRORS\tINPUT\tOUTPUT\tCACHE READ\tCACHE WRITE\tP50\tP95\tLAST USED\t5H\t7D\tLIMITED UNTIL")
	row := func(name, status string, a requestlog.AccountStats, u5, u7 string, limited int64) {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%d\t%d\t%d\t%s\t%s\t%s\t%s\t%s\t%s\n", printable(name), printable(status), a.Requests, a.Errors,
			a.InputTokens, a.OutputTokens, a.CacheReadInputTokens, a.CacheCreationInputTokens,
			ms(a.MedianDurationMS), ms(a.P95DurationMS), tableTime(a.LastUsed), u5, u7, tableTime(limited))
	}
	for _, a := range st.Accounts {
		name := a.Account
		if name == "" {
			name = "(none)"
		}
		if s := a.State; s != nil {
			row(name, s.Status, a, pct(requestlog.Utilization(s.Utilization5h)), pct(requestlog.Utilization(s.Utilization7d)), s.RateLimitedUntil)
		} else {
			row(name, "removed", a, "-", "-", 0)
		}
	}
	row("TOTAL", fmt.Sprintf("%d/%d ok", *pool.Available, *pool.Accounts), st.Pool, "", "", 0)
	return tw.Flush()
}

func ms(v int64) string {
	return (time.Duration(v) * time.Millisecond).String()
}
