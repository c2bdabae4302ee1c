package commands

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/urfave/cli/v2"
	"golang.org/x/term"

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
					"--json output is JSON-escaped instead.\n\n" +
					"The table fits 80 columns: local time with its UTC offset, the account\n" +
					"(after failover the accounts tried, joined by arrows), status, duration, input\n" +
					"and output tokens (1.2k, 3.4M), and the model without its claude- prefix,\n" +
					"followed on an error row by the error. --wide adds the cost in USD (- for a\n" +
					"model without a price), the method, path, client (the client key's name,\n" +
					"else its address) and request id, and prints errors whole; --json has every\n" +
					"field (cost_usd null without a price), times in RFC 3339 UTC. The cost is at\n" +
					"the API's list prices ([pricing] in claudeflare.toml(5)): for a subscription\n" +
					"(OAuth) account it is the API-equivalent value, not money charged, as a\n" +
					"last line under a --wide listing that shows a cost says.\n\n" +
					"On a terminal the newest 50 rows are shown unless --limit N or --all\n" +
					"says otherwise, and output longer than the screen goes through $PAGER\n" +
					"(default less -FRX) unless --no-pager; elsewhere every row is printed.",
				Flags: append(logFilterFlags(),
					&cli.StringFlag{Name: "status", Usage: "only requests with status `CODE` (429), or a class (4xx, 5xx)"},
					&cli.IntFlag{Name: "limit", Usage: "keep the newest `N` rows (on a terminal 50 by default)"},
					&cli.BoolFlag{Name: "all", Usage: "print every row (the default away from a terminal)"},
					&cli.BoolFlag{Name: "wide", Usage: "also show cost, method, path, client and id, and whole errors"},
					&cli.BoolFlag{Name: "no-pager", Usage: "never page the output through $PAGER"},
					&cli.BoolFlag{Name: "json", Usage: "print NDJSON, one request a line"},
					&cli.BoolFlag{Name: "follow", Aliases: []string{"f"}, Usage: "keep printing new requests until interrupted"},
					&cli.StringFlag{Name: "interval", Value: "1s", Usage: "how often --follow polls the log (`DURATION`)"},
				),
				Action: requestsList,
			},
		},
	}
}

// whenFlag parses the optional time flag (--since, --until) with
// parseWhen; the zero time when it is not set.
func whenFlag(c *cli.Context, flag string, now time.Time) (time.Time, error) {
	if !c.IsSet(flag) {
		return time.Time{}, nil
	}
	return parseWhen(flag, c.String(flag), now)
}

// parseWhen reads a --since/--until value (requestlog.ParseWhen).
func parseWhen(flag, s string, now time.Time) (time.Time, error) {
	t, err := requestlog.ParseWhen(s, now)
	if err != nil {
		return t, usagef("--%s %v", flag, err)
	}
	return t, nil
}

// parseStatus reads --status (requestlog.ParseStatus).
func parseStatus(s string) (lo, hi int, err error) {
	lo, hi, err = requestlog.ParseStatus(s)
	if err != nil {
		return 0, 0, usagef("--status %v", err)
	}
	return lo, hi, nil
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

// logFilter builds the filter shared by requests list and payload export.
func logFilter(c *cli.Context, now time.Time) (requestlog.Filter, error) {
	var f requestlog.Filter
	var err error
	if f.Since, err = whenFlag(c, "since", now); err != nil {
		return f, err
	}
	if f.Until, err = whenFlag(c, "until", now); err != nil {
		return f, err
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
	wide     bool
	pager    bool // page through $PAGER when longer than the screen
	capped   bool // the terminal's default limit applies: say when rows were left out
	interval time.Duration
}

// terminalLimit is how many rows a person gets without --limit or --all.
const terminalLimit = 50

// parseListArgs reads the flags; tty says stdout is a terminal, where the
// newest terminalLimit rows are the default and long output is paged.
func parseListArgs(c *cli.Context, now time.Time, tty bool) (listArgs, error) {
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
	if c.Bool("all") && c.IsSet("limit") {
		return a, usagef("--all and --limit exclude each other")
	}
	a.json, a.follow, a.wide = c.Bool("json"), c.Bool("follow"), c.Bool("wide")
	switch {
	case a.follow && !c.IsSet("limit") && !c.IsSet("since") && !c.Bool("all"):
		f.Limit = 10 // like tail -f
	case tty && !a.follow && !c.IsSet("limit") && !c.Bool("all"):
		// A person at a terminal wants the latest rows, not 56k of them;
		// one more is read to know whether any were left out.
		f.Limit, a.capped = terminalLimit+1, true
	}
	a.pager = tty && !a.follow && !c.Bool("no-pager")
	a.filter = f
	if a.interval, err = config.ParseDuration(c.String("interval")); err != nil || a.interval <= 0 {
		return a, usagef("--interval %q: want a positive duration", c.String("interval"))
	}
	return a, nil
}

func requestsList(c *cli.Context) error {
	e := getEnv(c)
	a, err := parseListArgs(c, time.Now(), isTerminal(e.stdout))
	if err != nil {
		return err
	}
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

	if a.pager {
		err = listPaged(ctx, db, a, e)
	} else {
		bw := bufio.NewWriterSize(e.stdout, 32<<10)
		print, t := a.printer(bw)
		if err = listAndFollow(ctx, db, a, bw, print); err == nil && t != nil && !a.follow {
			if err = t.footnote(bw); err == nil {
				err = bw.Flush()
			}
		}
	}
	if closedPipe(err) || ctx.Err() != nil {
		// The reader went away, or SIGINT/SIGTERM: a normal end (the
		// query may report the interruption in its own words).
		return nil
	}
	return err
}

// printer prints one row as asked: NDJSON or the table.
// The table is returned too (nil for NDJSON), for its footnote.
func (a listArgs) printer(w io.Writer) (func(*store.Request) error, *requestTable) {
	if a.json {
		out := newNDJSON(w)
		return func(r *store.Request) error { return out.write(requestlog.NewRequestLine(r)) }, nil
	}
	t := &requestTable{w: w, wide: a.wide}
	return t.row, t
}

// listPaged prints the listing (no --follow) for a person at a terminal:
// the newest rows (capped), through the pager when longer than the screen.
func listPaged(ctx context.Context, db *store.DB, a listArgs, e *env) error {
	var rows []*store.Request
	if err := requestlog.List(ctx, db, a.filter, func(r *store.Request) error {
		c := *r
		rows = append(rows, &c)
		return nil
	}); err != nil {
		return err
	}
	left := false
	if a.capped && len(rows) > terminalLimit {
		rows, left = rows[len(rows)-terminalLimit:], true
	}
	var buf bytes.Buffer
	print, t := a.printer(&buf)
	for _, r := range rows {
		if err := print(r); err != nil {
			return err
		}
	}
	if t != nil {
		if err := t.footnote(&buf); err != nil {
			return err
		}
	}
	if left && !a.json {
		fmt.Fprintf(&buf, "(the newest %d rows; --limit N or --all for more)\n", terminalLimit)
	}
	return page(e, buf.Bytes())
}

// page writes out to stdout, through $PAGER (default less -FRX, as git
// does) when out has more lines than the terminal; PAGER="" or cat
// writes it directly.
func page(e *env, out []byte) error {
	pager, set := os.LookupEnv("PAGER")
	if !set {
		pager = "less -FRX"
	}
	pager = strings.TrimSpace(pager)
	f, _ := e.stdout.(*os.File)
	if pager == "" || pager == "cat" || f == nil || bytes.Count(out, []byte("\n")) < screenRows(f) {
		_, err := e.stdout.Write(out)
		return err
	}
	cmd := exec.Command("/bin/sh", "-c", pager)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = bytes.NewReader(out), f, e.stderr
	if os.Getenv("LESS") == "" {
		cmd.Env = append(os.Environ(), "LESS=FRX")
	}
	if err := cmd.Run(); err != nil {
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			return nil // the pager quit (q, or its own error already shown)
		}
		return fmt.Errorf("pager %q: %w", pager, err)
	}
	return nil
}

// screenRows is the terminal's height, 24 when it cannot be told.
func screenRows(f *os.File) int {
	if _, h, err := term.GetSize(int(f.Fd())); err == nil && h > 0 {
		return h
	}
	return 24
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
// line up with the ones before them. The default fits 80 columns; wide
// adds the method, path, client and id and prints errors whole.
type requestTable struct {
	w      io.Writer
	wide   bool
	header bool
	// costShown: a row showed a cost (--wide), which the footnote
	// qualifies.
	costShown bool
}

// footnote ends a listing (not --follow) whose rows showed a cost: for a
// subscription account it is the API-equivalent value.
func (t *requestTable) footnote(w io.Writer) error {
	if !t.costShown {
		return nil
	}
	_, err := fmt.Fprintln(w, requestlog.SubscriptionNote)
	return err
}

// tableWidth is what the default table fits in.
const tableWidth = 80

func (t *requestTable) row(r *store.Request) error {
	if !t.header {
		t.header = true
		h := fmt.Sprintf("%-20s %-12s %4s %6s %9s  %s", "TIME", "ACCOUNT", "CODE", "TOOK", "IN/OUT", "MODEL")
		if t.wide {
			h = fmt.Sprintf("%-20s %-12s %4s %6s %9s  %-20s  %8s  %-6s  %-28s  %-16s  %s", "TIME", "ACCOUNT", "CODE", "TOOK", "IN/OUT",
				"MODEL", "COST", "METHOD", "PATH", "CLIENT", "ID")
		}
		if _, err := fmt.Fprintln(t.w, h); err != nil {
			return err
		}
	}
	// Every logged string is untrusted (the client sent the path and the
	// model; the upstream wrote the error): printed escaped, so that it
	// cannot drive the terminal or fake a row.
	line := fmt.Sprintf("%-20s %-12s %4s %6s %9s  ", tableTime(r.TS), clip(printable(triedAccounts(r)), 12),
		statusText(r.Status), humanDuration(r.DurationMS), humanTokens(r.InputTokens)+"/"+humanTokens(r.OutputTokens))
	model := printable(orDash(strings.TrimPrefix(r.Model, "claude-")))
	if t.wide {
		t.costShown = t.costShown || (r.CostUSD != nil && *r.CostUSD > 0)
		line += fmt.Sprintf("%-20s  %8s  %-6s  %-28s  %-16s  %s", clip(model, 20), humanUSD(r.CostUSD), printable(r.Method),
			clip(printable(r.Path), 28), clip(printable(orDash(r.Client)), 16), printable(r.ID))
		if r.Error != "" {
			line += "  " + printable(r.Error)
		}
	} else {
		rest := model
		if r.Error != "" {
			rest += ": " + printable(r.Error)
		}
		line += clip(rest, tableWidth-utf8.RuneCountInString(line))
	}
	_, err := fmt.Fprintln(t.w, line)
	return err
}

// triedAccounts is the account that answered, after those tried before
// it on failover: a→b.
func triedAccounts(r *store.Request) string {
	if len(r.AccountsTried) > 1 {
		return strings.Join(r.AccountsTried, "→")
	}
	return orDash(r.Account)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func statusText(code int) string {
	if code == 0 {
		return "-"
	}
	return strconv.Itoa(code)
}

// humanUSD is a cost in USD in at most 8 characters: $0.0123, $1.23,
// $1234; "-" when unknown (a model without a price).
func humanUSD(v *float64) string {
	switch {
	case v == nil:
		return "-"
	case *v == 0:
		return "$0"
	case *v < 0.0001:
		return "<$0.0001"
	case *v < 1:
		return "$" + strconv.FormatFloat(*v, 'f', 4, 64)
	case *v < 1000:
		return "$" + strconv.FormatFloat(*v, 'f', 2, 64)
	default:
		return "$" + strconv.FormatFloat(*v, 'f', 0, 64)
	}
}

// humanTokens is a token count in at most 4 characters: 999, 1.2k, 12k,
// 3.4M.
func humanTokens(n int64) string {
	switch {
	case n < 1000:
		return strconv.FormatInt(n, 10)
	case n < 9950:
		return strconv.FormatFloat(float64(n)/1e3, 'f', 1, 64) + "k"
	case n < 999500:
		return strconv.FormatInt((n+500)/1000, 10) + "k"
	case n < 9950000:
		return strconv.FormatFloat(float64(n)/1e6, 'f', 1, 64) + "M"
	default:
		return strconv.FormatInt((n+500000)/1000000, 10) + "M"
	}
}

// humanDuration is a duration in at most 6 characters: 850ms, 1.2s,
// 12s, 2m03s, 1h05m.
func humanDuration(ms int64) string {
	d := time.Duration(ms) * time.Millisecond
	switch {
	case d < time.Second:
		return strconv.FormatInt(ms, 10) + "ms"
	case d < 10*time.Second:
		return strconv.FormatFloat(d.Seconds(), 'f', 1, 64) + "s"
	case d < time.Minute:
		return strconv.Itoa(int(d.Seconds())) + "s"
	case d < time.Hour:
		return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
	default:
		return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
	}
}
