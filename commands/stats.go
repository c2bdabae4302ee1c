package commands

import (
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/claudeflare/claudeflare/requestlog"
	"github.com/claudeflare/claudeflare/store"
	"github.com/claudeflare/claudeflare/vault"
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

// statsOut is one line of `stats --json`.
type statsOut struct {
	Scope                    string   `json:"scope"` // account | pool
	Account                  *string  `json:"account"`
	Requests                 int64    `json:"requests"`
	Errors                   int64    `json:"errors"`
	InputTokens              int64    `json:"input_tokens"`
	OutputTokens             int64    `json:"output_tokens"`
	CacheReadInputTokens     int64    `json:"cache_read_input_tokens"`
	CacheCreationInputTokens int64    `json:"cache_creation_input_tokens"`
	MedianDurationMS         int64    `json:"median_duration_ms"`
	P95DurationMS            int64    `json:"p95_duration_ms"`
	LastUsed                 *string  `json:"last_used"`
	Status                   string   `json:"status,omitempty"` // ok, paused, needs_login, rate_limited, removed
	RateLimitedUntil         *string  `json:"rate_limited_until,omitempty"`
	RateLimitStatus          string   `json:"rate_limit_status,omitempty"`
	Utilization5h            *float64 `json:"utilization_5h,omitempty"`
	Utilization7d            *float64 `json:"utilization_7d,omitempty"`
	Reset5h                  *string  `json:"reset_5h,omitempty"`
	Reset7d                  *string  `json:"reset_7d,omitempty"`
	Accounts                 *int     `json:"accounts,omitempty"`  // pool: accounts in the vault
	Available                *int     `json:"available,omitempty"` // pool: of them, status ok
	Since                    *string  `json:"since,omitempty"`
}

func toStatsOut(a requestlog.AccountStats, since *string) statsOut {
	name := a.Account
	out := statsOut{
		Scope: "account", Account: &name, Requests: a.Requests, Errors: a.Errors,
		InputTokens: a.InputTokens, OutputTokens: a.OutputTokens,
		CacheReadInputTokens: a.CacheReadInputTokens, CacheCreationInputTokens: a.CacheCreationInputTokens,
		MedianDurationMS: a.MedianDurationMS, P95DurationMS: a.P95DurationMS,
		LastUsed: rfc3339(a.LastUsed), Since: since, Status: "removed",
	}
	if s := a.State; s != nil {
		out.Status, out.RateLimitedUntil, out.RateLimitStatus = s.Status, rfc3339(s.RateLimitedUntil), s.RateLimitStatus
		out.Utilization5h, out.Utilization7d = util(s.Utilization5h), util(s.Utilization7d)
		out.Reset5h, out.Reset7d = rfc3339(s.Reset5h), rfc3339(s.Reset7d)
	}
	return out
}

func stats(c *cli.Context) error {
	if c.NArg() > 0 {
		return usagef("stats takes no arguments (got %q)", c.Args().First())
	}
	now := time.Now()
	var since time.Time
	if c.IsSet("since") {
		var err error
		if since, err = parseWhen("since", c.String("since"), now); err != nil {
			return err
		}
	}
	e := getEnv(c)
	cfg, err := e.config(nil)
	if err != nil {
		return err
	}
	// Stats read metadata only, never a secret: no key needed.
	if err := vault.EnsureDataDir(cfg.DataDir); err != nil {
		return err
	}
	vdb, err := store.OpenVault(cfg.DataDir)
	if err != nil {
		return fmt.Errorf("open vault: %w", err)
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
	accounts, available := 0, 0
	for _, a := range st.Accounts {
		if a.State != nil {
			accounts++
			if a.State.Status == "ok" {
				available++
			}
		}
	}
	var sinceStr *string
	if !since.IsZero() {
		s := since.UTC().Format(time.RFC3339)
		sinceStr = &s
	}
	if c.Bool("json") {
		out := newNDJSON(e.stdout)
		for _, a := range st.Accounts {
			if err := out.write(toStatsOut(a, sinceStr)); err != nil {
				return err
			}
		}
		p := toStatsOut(st.Pool, sinceStr)
		p.Scope, p.Account, p.Status = "pool", nil, ""
		p.Accounts, p.Available = &accounts, &available
		return out.write(p)
	}
	tw := tabwriter.NewWriter(e.stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ACCOUNT\tSTATUS\tREQUESTS\tERRORS\tINPUT\tOUTPUT\tCACHE READ\tCACHE WRITE\tP50\tP95\tLAST USED\t5H\t7D\tLIMITED UNTIL")
	row := func(name, status string, a requestlog.AccountStats, u5, u7 string, limited int64) {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%d\t%d\t%d\t%s\t%s\t%s\t%s\t%s\t%s\n", name, status, a.Requests, a.Errors,
			a.InputTokens, a.OutputTokens, a.CacheReadInputTokens, a.CacheCreationInputTokens,
			ms(a.MedianDurationMS), ms(a.P95DurationMS), human(a.LastUsed, now), u5, u7, human(limited, now))
	}
	for _, a := range st.Accounts {
		name := a.Account
		if name == "" {
			name = "(none)"
		}
		if s := a.State; s != nil {
			row(name, s.Status, a, pct(s.Utilization5h), pct(s.Utilization7d), s.RateLimitedUntil)
		} else {
			row(name, "removed", a, "-", "-", 0)
		}
	}
	row("TOTAL", fmt.Sprintf("%d/%d ok", available, accounts), st.Pool, "", "", 0)
	return tw.Flush()
}

func ms(v int64) string {
	return (time.Duration(v) * time.Millisecond).String()
}
