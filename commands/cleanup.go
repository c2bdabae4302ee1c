package commands

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/claudeflare/claudeflare/retention"
)

func cleanupCommand() *cli.Command {
	return &cli.Command{
		Name:  "cleanup",
		Usage: "delete old request log data; safe to run from cron while the daemon serves",
		Description: "cleanup --older-than D deletes requests (with their payloads) and payloads\n" +
			"older than D: a duration (30d, 12h, 2w) or an RFC 3339 time. --type limits it to\n" +
			"requests or payloads. --type T --force without --older-than deletes all of T.\n" +
			"Rows go in small batches of short transactions, so a running daemon never\n" +
			"waits long; --vacuum then returns the freed space to the file system without\n" +
			"taking the log offline. It prints what it deleted on stdout (nothing with\n" +
			"--quiet, as in cron, so that cron mails only a failure); --dry-run prints what\n" +
			"it would delete and --json the counts, on stdout. It runs at a lower CPU priority (nice 10), so that on a small\n" +
			"machine the daemon's requests come first.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "older-than", Usage: "delete data older than `AGE` (30d, 12h) or an RFC 3339 time"},
			&cli.StringFlag{Name: "type", Value: "all", Usage: "`TYPE` of data: requests (with their payloads), payloads, or all"},
			&cli.BoolFlag{Name: "force", Usage: "without --older-than: delete all data of --type"},
			&cli.BoolFlag{Name: "dry-run", Aliases: []string{"n"}, Usage: "count what would be deleted; delete nothing"},
			&cli.BoolFlag{Name: "vacuum", Usage: "return the freed space to the file system afterwards"},
			&cli.BoolFlag{Name: "json", Usage: "print the result as NDJSON"},
		},
		Action: cleanup,
	}
}

type cleanupArgs struct {
	opts retention.Options
	json bool
}

func parseCleanupArgs(c *cli.Context, now time.Time) (cleanupArgs, error) {
	var a cleanupArgs
	if c.NArg() > 0 {
		return a, usagef("cleanup takes no arguments (got %q)", c.Args().First())
	}
	typ, err := retention.ParseType(c.String("type"))
	if err != nil {
		return a, usagef("--type: %v", err)
	}
	a.opts = retention.Options{Type: typ, DryRun: c.Bool("dry-run"), Vacuum: c.Bool("vacuum")}
	switch {
	case c.IsSet("older-than"):
		if a.opts.Before, err = parseWhen("older-than", c.String("older-than"), now); err != nil {
			return a, err
		}
	case c.Bool("force"):
		a.opts.Everything = true
	default:
		return a, usagef("cleanup needs --older-than AGE (or --type T --force to delete all of T)")
	}
	a.json = c.Bool("json")
	return a, nil
}

// cleanupOut is the line `cleanup --json` prints.
type cleanupOut struct {
	Type       string  `json:"type"`
	DryRun     bool    `json:"dry_run"`
	Before     *string `json:"before"` // the cut; null with --force
	Requests   int64   `json:"requests"`
	Payloads   int64   `json:"payloads"`
	FreedBytes int64   `json:"freed_bytes"`
	DurationMS int64   `json:"duration_ms"`
	Complete   bool    `json:"complete"`
}

func cleanup(c *cli.Context) error {
	a, err := parseCleanupArgs(c, time.Now())
	if err != nil {
		return err
	}
	e := getEnv(c)
	cfg, err := e.config(nil)
	if err != nil {
		return err
	}
	lowerPriority(e.log)
	db, err := e.openLog(cfg)
	if err != nil {
		return err
	}
	defer db.Close()
	ctx, stop := interruptible(c.Context)
	defer stop()

	a.opts.Log = e.log
	var bar *progressBar
	if !a.json && !a.opts.DryRun && isTerminal(e.stderr) {
		bar = &progressBar{w: e.stderr}
		a.opts.Progress = bar.update
	}
	res, err := retention.Cleanup(ctx, db, a.opts)
	if bar != nil {
		bar.finish()
	}
	if err != nil && ctx.Err() != nil {
		err = errors.New("interrupted before the end: the counts printed are what was deleted")
	}
	if perr := printCleanup(e, a, res, err == nil); perr != nil && err == nil {
		err = perr
	}
	return err
}

// printCleanup reports the result: NDJSON on stdout with --json; what
// would go, or what went, on stdout (the command's answer, which CONTRACT
// promises), unless --quiet (cron) silences a completed deletion's line.
func printCleanup(e *env, a cleanupArgs, res retention.Result, complete bool) error {
	w := e.stdout
	if a.json {
		out := cleanupOut{
			Type: string(res.Type), DryRun: res.DryRun, Requests: res.Requests, Payloads: res.Payloads,
			FreedBytes: res.FreedBytes, DurationMS: res.Duration.Milliseconds(), Complete: complete,
		}
		if !res.Before.IsZero() {
			s := res.Before.UTC().Format(time.RFC3339)
			out.Before = &s
		}
		return newNDJSON(w).write(out)
	}
	verb := "deleted"
	if res.DryRun {
		verb = "would delete"
	}
	what := fmt.Sprintf("%s %s and %s", verb, plural(res.Requests, "request"), plural(res.Payloads, "payload"))
	if res.Type == retention.Payloads {
		what = fmt.Sprintf("%s %s", verb, plural(res.Payloads, "payload"))
	}
	if res.Before.IsZero() {
		what += " (all)"
	} else {
		what += " older than " + lineTime(res.Before)
	}
	if a.opts.Vacuum && !res.DryRun {
		what += fmt.Sprintf("; reclaimed %s", humanBytes(res.FreedBytes))
	}
	switch {
	case !res.DryRun && !complete:
		// A failure: the counts go with the error, wherever stderr is.
		_, err := fmt.Fprintf(e.stderr, "claudeflare: %s\n", what)
		return err
	case !res.DryRun && e.quiet:
		if e.log != nil {
			e.log.Debug(what)
		}
		return nil
	}
	_, err := fmt.Fprintln(w, what)
	return err
}

func plural(n int64, word string) string {
	if n == 1 {
		return "1 " + word
	}
	return fmt.Sprintf("%d %ss", n, word)
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// progressBar draws one self-overwriting line on a terminal, at most ten
// times a second.
type progressBar struct {
	w     io.Writer
	mu    sync.Mutex
	last  time.Time
	drawn bool
}

func (b *progressBar) update(p retention.Progress) {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := time.Now()
	if p.Done != p.Total && now.Sub(b.last) < 100*time.Millisecond {
		return
	}
	b.last = now
	const width = 30
	frac := 1.0
	if p.Total > 0 {
		frac = min(1, float64(p.Done)/float64(p.Total))
	}
	full := int(frac * width)
	unit := "rows"
	if p.Phase == "vacuum" {
		unit = "pages"
	}
	fmt.Fprintf(b.w, "\r%-7s [%s%s] %3.0f%%  %d/%d %s ", p.Phase, strings.Repeat("=", full), strings.Repeat(" ", width-full), frac*100, p.Done, p.Total, unit)
	b.drawn = true
}

func (b *progressBar) finish() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.drawn {
		fmt.Fprint(b.w, "\r\033[K")
	}
}

// lowerPriority sets nice 10 on every thread of the process (on Linux a
// nice value is per thread, and threads made later inherit it from the
// thread that makes them), so cleanup yields the CPU to a daemon on the
// same machine. Raising one's own niceness needs no privilege; a failure
// changes nothing that matters.
func lowerPriority(log *slog.Logger) {
	tids := []int{0}
	if entries, err := os.ReadDir("/proc/self/task"); err == nil {
		tids = tids[:0]
		for _, ent := range entries {
			if tid, err := strconv.Atoi(ent.Name()); err == nil {
				tids = append(tids, tid)
			}
		}
	}
	for _, tid := range tids {
		if err := syscall.Setpriority(syscall.PRIO_PROCESS, tid, 10); err != nil {
			log.Debug("lower cleanup priority", "err", err)
		}
	}
}
