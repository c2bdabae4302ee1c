package commands

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/claudeflare/claudeflare/config"
	"github.com/claudeflare/claudeflare/requestlog"
	"github.com/claudeflare/claudeflare/store"
)

func requestsCommand() *cli.Command {
	return &cli.Command{
		Name:  "requests",
		Usage: "show the request log",
		Subcommands: []*cli.Command{
			{
				Name:  "list",
				Usage: "list logged requests, oldest first; --follow keeps printing new ones",
				Description: "Times for --since and --until are a duration back from now (30m, 12h, 7d,\n" +
					"2w) or an RFC 3339 time. --limit N keeps the newest N rows. --follow prints\n" +
					"new rows as the daemon writes them, like tail -f (the last 10 rows first\n" +
					"unless --since or --limit say otherwise), until interrupted.\n\n" +
					"Logged strings are untrusted (clients send the path and the model): the\n" +
					"table shows them escaped, as in a Go string literal, so that\n" +
					"none can move the cursor, clear the screen or fake a row: a backslash is\n" +
					"shown as \\\\, a control character as \\n, \\r, \\t or \\x1b, another\n" +
					"non-printable character (such as U+202E) as \\u202e, a byte that is not\n" +
					"UTF-8 as \\xff. The same holds for every table the other commands print;\n" +
					"--json output is JSON-escaped instead. The CLIENT column is the client\n" +
					"key's name, else the client's address.",
				Flags: append(logFilterFlags(),
					&cli.StringFlag{Name: "status", Usage: "only requests with status `CODE` (429), or a class (4xx, 5xx)"},
					&cli.IntFlag{Name: "limit", Usage: "keep the newest `N` rows"},
					&cli.BoolFlag{Name: "json", Usage: "print NDJSON, one request a line"},
					&cli.BoolFlag{Name: "follow", Aliases: []string{"f"}, Usage: "keep printing new requests until interrupted"},
					&cli.StringFlag{Name: "interval", Value: "1s", Usage: "how often --follow polls the log (`DURATION`)"},
				),
				Action: requestsList,
			},
		},
	}
}

// logFilterFlags are the flags logFilter reads, shared by requests list
// and payload export.
func logFilterFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "since", Usage: "only requests since `WHEN` (a duration back from now, or an RFC 3339 time)"},
		&cli.StringFlag{Name: "until", Usage: "only requests until `WHEN` (a duration back from now, or an RFC 3339 time)"},
		&cli.StringFlag{Name: "account", Usage: "only requests served by account `NAME`"},
	}
}

// parseWhen reads a --since/--until value: a duration back from now (Go
// syntax plus d and w) or an RFC 3339 time (a bare date also works).
func parseWhen(flag, s string, now time.Time) (time.Time, error) {
	s = strings.TrimSpace(s)
	if d, err := config.ParseDuration(s); err == nil {
		if d < 0 {
			return time.Time{}, usagef("--%s %s: the duration must not be negative", flag, s)
		}
		return now.Add(-d), nil
	}
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05", "2006-01-02"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t, nil
		}
	}
	return time.Time{}, usagef("--%s %q: want a duration (30m, 12h, 7d) or an RFC 3339 time", flag, s)
}

// parseStatus reads --status: a code (429) or a class (4xx).
func parseStatus(s string) (lo, hi int, err error) {
	s = strings.ToLower(strings.TrimSpace(s))
	if len(s) == 3 && strings.HasSuffix(s, "xx") && s[0] >= '1' && s[0] <= '5' {
		c := int(s[0]-'0') * 100
		return c, c + 99, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 100 || n > 599 {
		return 0, 0, usagef("--status %q: want a status code (429) or a class (4xx)", s)
	}
	return n, n, nil
}

// logFilter builds the filter shared by requests list and payload export.
func logFilter(c *cli.Context, now time.Time) (requestlog.Filter, error) {
	var f requestlog.Filter
	var err error
	if c.IsSet("since") {
		if f.Since, err = parseWhen("since", c.String("since"), now); err != nil {
			return f, err
		}
	}
	if c.IsSet("until") {
		if f.Until, err = parseWhen("until", c.String("until"), now); err != nil {
			return f, err
		}
	}
	if !f.Since.IsZero() && !f.Until.IsZero() && f.Until.Before(f.Since) {
		return f, usagef("--until is before --since")
	}
	f.Account = c.String("account")
	return f, nil
}

// interruptible returns a context cancelled by SIGINT or SIGTERM, and
// makes writes to a closed stdout pipe fail with EPIPE instead of killing
// the process, so that `| head` ends a command cleanly.
func interruptible(ctx context.Context) (context.Context, context.CancelFunc) {
	signal.Notify(make(chan os.Signal, 1), syscall.SIGPIPE)
	return signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
}

// closedPipe reports whether err is a write to a reader that went away.
func closedPipe(err error) bool {
	return errors.Is(err, syscall.EPIPE)
}

type listArgs struct {
	filter   requestlog.Filter
	json     bool
	follow   bool
	interval time.Duration
}

func parseListArgs(c *cli.Context, now time.Time) (listArgs, error) {
	var a listArgs
	if c.NArg() > 0 {
		return a, usagef("requests list takes no arguments (got %q)", c.Args().First())
	}
	f, err := logFilter(c, now)
	if err != nil {
		return a, err
	}
	if c.IsSet("status") {
		if f.StatusMin, f.StatusMax, err = parseStatus(c.String("status")); err != nil {
			return a, err
		}
	}
	if f.Limit = c.Int("limit"); f.Limit < 0 {
		return a, usagef("--limit must be 0 or more")
	}
	a.json, a.follow = c.Bool("json"), c.Bool("follow")
	if a.follow && !c.IsSet("limit") && !c.IsSet("since") {
		f.Limit = 10 // like tail -f
	}
	a.filter = f
	if a.interval, err = config.ParseDuration(c.String("interval")); err != nil || a.interval <= 0 {
		return a, usagef("--interval %q: want a positive duration", c.String("interval"))
	}
	return a, nil
}

func requestsList(c *cli.Context) error {
	a, err := parseListArgs(c, time.Now())
	if err != nil {
		return err
	}
	e := getEnv(c)
	cfg, err := e.config(nil)
	if err != nil {
		return err
	}
	db, err := e.openLog(cfg)
	if err != nil {
		return err
	}
	defer db.Close()
	ctx, stop := interruptible(c.Context)
	defer stop()

	bw := bufio.NewWriterSize(e.stdout, 32<<10)
	var print func(r *store.Request) error
	if a.json {
		out := newNDJSON(bw)
		print = func(r *store.Request) error { return out.write(requestlog.NewRequestLine(r)) }
	} else {
		t := &requestTable{w: bw}
		print = t.row
	}
	err = listAndFollow(ctx, db, a, bw, print)
	if closedPipe(err) || ctx.Err() != nil {
		// The reader went away, or SIGINT/SIGTERM: a normal end (the
		// query may report the interruption in its own words).
		return nil
	}
	return err
}

// listAndFollow prints the listing, then with --follow new rows as they
// are written, flushing after every batch.
func listAndFollow(ctx context.Context, db *store.DB, a listArgs, bw *bufio.Writer, print func(*store.Request) error) error {
	hw, err := requestlog.HighWater(ctx, db)
	if err != nil {
		return err
	}
	f := a.filter
	if a.follow {
		f.UpToSeq = hw // what follows comes from Follow
	}
	if !a.follow || hw > 0 {
		if err := requestlog.List(ctx, db, f, print); err != nil {
			return err
		}
	}
	if err := bw.Flush(); err != nil || !a.follow {
		return err
	}
	t := time.NewTicker(a.interval)
	defer t.Stop()
	f = a.filter
	f.Limit = 0
	return requestlog.Follow(ctx, db, f, hw, t.C, func(r *store.Request) error {
		if err := print(r); err != nil {
			return err
		}
		// A follower wants each row as soon as it is read; rows of one
		// poll arrive together, so this costs little.
		return bw.Flush()
	})
}

// requestTable prints fixed-width rows, so that rows printed by --follow
// line up with the ones before them.
type requestTable struct {
	w      io.Writer
	header bool
}

func (t *requestTable) row(r *store.Request) error {
	if !t.header {
		t.header = true
		if _, err := fmt.Fprintf(t.w, "%-23s  %-12s  %-6s  %-28s  %-20s  %-16s  %6s  %8s  %13s  %s\n",
			"TIME", "ACCOUNT", "METHOD", "PATH", "MODEL", "CLIENT", "STATUS", "DURATION", "TOKENS IN/OUT", "ID"); err != nil {
			return err
		}
	}
	status := strconv.Itoa(r.Status)
	if r.Status == 0 {
		status = "-"
	}
	orDash := func(s string) string {
		if s == "" {
			return "-"
		}
		return s
	}
	note := ""
	if r.Error != "" {
		note = "  " + printable(r.Error)
	}
	// Every logged string is untrusted (the client sent the path and the
	// model; the upstream wrote the error): printed
	// escaped, so that it cannot drive the terminal or fake a row.
	_, err := fmt.Fprintf(t.w, "%-23s  %-12s  %-6s  %-28s  %-20s  %-16s  %6s  %8s  %13s  %s%s\n",
		time.UnixMilli(r.TS).Local().Format("2006-01-02 15:04:05.000"), clip(printable(orDash(r.Account)), 12), printable(r.Method),
		clip(printable(r.Path), 28), clip(printable(orDash(r.Model)), 20), clip(printable(orDash(r.Client)), 16),
		status, (time.Duration(r.DurationMS) * time.Millisecond).String(),
		fmt.Sprintf("%d/%d", r.InputTokens, r.OutputTokens), printable(r.ID), note)
	return err
}
