package commands

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/urfave/cli/v2"
	"golang.org/x/term"

	"github.com/claudeflare/claudeflare/config"
	"github.com/claudeflare/claudeflare/internal/statefile"
	"github.com/claudeflare/claudeflare/requestlog"
	"github.com/claudeflare/claudeflare/store"
)

// The environment variables that point status and statusline at a daemon.
const (
	envDaemonURL = "CLAUDEFLARE_URL"
	envAPIKey    = "CLAUDEFLARE_API_KEY"
)

// statusMethod is how the pool's time to exhaustion is estimated: the
// help of `status` (and so the man page) says it.
const statusMethod = "The pool's time to exhaustion is an estimate from stored data: per account and\n" +
	"window (5h, 7d), utilization per token is the window's utilization (as the\n" +
	"upstream last reported it) over the tokens the account served since the window\n" +
	"began (from the request log), tokens weighted as priced (input 1, cache writes\n" +
	"1.25, cache reads 0.1, output 5); an account that has not served in its window\n" +
	"borrows the others' ratio, scaled by tier. The pool's tokens of the last 15\n" +
	"minutes are its rate; that traffic moves to the accounts with room, windows\n" +
	"that reset on the way give their room back, a limited account rejoins when its\n" +
	"limit ends; the pool is exhausted when no usable account is below\n" +
	"routing.max_utilization (with the affinity strategy; else 100%). No time is\n" +
	"given without traffic in the last 15 minutes, before any account has a ratio,\n" +
	"or when the pool lasts more than 7 days; an API-key or cloud account has no\n" +
	"window and never runs out. Use of an account outside claudeflare shortens it."

func statusCommand() *cli.Command {
	return &cli.Command{
		Name:  "status",
		Usage: "each account's 5h and 7d utilization, reset and state; the pool's time to exhaustion",
		Description: "status prints one line per account: its 5h and 7d utilization as a bar and a\n" +
			"percentage with the countdown to each window's reset, its state (ok, paused,\n" +
			"needs_login, limited, ...) and the sessions on it; then the pool's time to\n" +
			"exhaustion at the current rate.\n\n" +
			"It asks the running daemon (GET /api/status at --url, else $" + envDaemonURL + ", else\n" +
			"the config's host and port; with the client key in $" + envAPIKey + " once client\n" +
			"keys exist: a viewer key is enough). When no daemon answers it reads the\n" +
			"database in the data dir itself (the live session counts are then unknown),\n" +
			"and when it can do neither it says which of the two it needs. The last line\n" +
			"says where the figures came from.\n\n" +
			"--watch redraws the screen every --interval (like top) until Ctrl-C; it needs\n" +
			"a terminal: in a pipe or a script it is refused (exit 2), use status once or\n" +
			"--json. With --json: one NDJSON line per account (\"type\":\"account\"), then one\n" +
			"for the pool (\"type\":\"pool\"); times in RFC 3339 UTC, utilization 0..1, null\n" +
			"when unknown.\n\n" + statusMethod,
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "json", Usage: "print NDJSON"},
			&cli.BoolFlag{Name: "watch", Usage: "redraw every --interval until Ctrl-C (on a terminal only)"},
			&cli.DurationFlag{Name: "interval", Value: 2 * time.Second, Usage: "with --watch, redraw every `DURATION`"},
			&cli.StringFlag{Name: "url", Usage: "the daemon's `URL` (default $" + envDaemonURL + ", then the config's host and port)"},
		},
		Action: status,
	}
}

func status(c *cli.Context) error {
	if c.NArg() > 0 {
		return usagef("status takes no arguments (got %q)", c.Args().First())
	}
	e := getEnv(c)
	watch, asJSON := c.Bool("watch"), c.Bool("json")
	if watch && asJSON {
		return usagef("--watch and --json do not go together: --json prints once, for scripts")
	}
	if watch && !isTerminal(e.stdout) {
		return withHint(usagef("--watch needs a terminal on stdout"), "in a script, run status once (or with --json)")
	}
	if d := c.Duration("interval"); watch && d < 100*time.Millisecond {
		return usagef("--interval %v is too short (at least 100ms)", d)
	}
	cfg, err := e.config(nil)
	if err != nil {
		return err
	}
	r := newStatusReader(e, cfg, c.String("url"), 5*time.Second)
	defer r.close()
	if !watch {
		st, src, err := r.read(c.Context, "")
		if err != nil {
			return err
		}
		if asJSON {
			return writeStatusNDJSON(e.stdout, st)
		}
		now := statusTime(st)
		writeStatusText(e.stdout, st, now, terminalWidth(e.stdout))
		fmt.Fprintln(e.stdout, wrapText(src, terminalWidth(e.stdout)))
		return nil
	}
	return watchStatus(c.Context, e.stdout, r, c.Duration("interval"))
}

// watchStatus redraws the status every interval until ctx ends or
// SIGINT/SIGTERM; a failed read is shown in place of the figures and
// retried.
func watchStatus(ctx context.Context, w io.Writer, r *statusReader, interval time.Duration) error {
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		var b strings.Builder
		b.WriteString("\x1b[H\x1b[2J") // home, clear the screen
		fmt.Fprintf(&b, "claudeflare status, every %v (Ctrl-C to quit)    %s\n\n", interval, lineTime(time.Now()))
		st, src, err := r.read(ctx, "")
		if ctx.Err() != nil {
			break
		}
		if err != nil {
			var msg strings.Builder
			printError(&msg, err)
			b.WriteString(msg.String())
		} else {
			writeStatusText(&b, st, statusTime(st), terminalWidth(w))
			b.WriteString(wrapText(src, terminalWidth(w)) + "\n")
		}
		io.WriteString(w, b.String())
		select {
		case <-ctx.Done():
		case <-tick.C:
			continue
		}
		break
	}
	io.WriteString(w, "\n")
	return nil
}

// statusTime is the moment the status was computed (its "now").
func statusTime(st requestlog.Status) time.Time {
	if t, err := time.Parse(time.RFC3339, st.Now); err == nil {
		return t
	}
	return time.Now()
}

func writeStatusNDJSON(w io.Writer, st requestlog.Status) error {
	out := newNDJSON(w)
	for _, a := range st.Accounts {
		a.Type = "account"
		if err := out.write(a); err != nil {
			return err
		}
	}
	p := st.Pool
	p.Type = "pool"
	return out.write(p)
}

// statusLayout is how wide an account line's cells are: the bar's cells
// and whether a reset reads "resets in 2h14m" or "in 2h14m".
type statusLayout struct {
	bar  int
	long bool
}

// wideLayout is the layout where the width is unknown or ample.
var wideLayout = statusLayout{bar: 20, long: true}

// bar draws a 0..1 utilization as [#####-----]; unknown is blank.
func (l statusLayout) barText(u *float64) string {
	if u == nil {
		return "[" + strings.Repeat(" ", l.bar) + "]"
	}
	n := int(math.Round(min(max(*u, 0), 1) * float64(l.bar)))
	return "[" + strings.Repeat("#", n) + strings.Repeat("-", l.bar-n) + "]"
}

// cellWidth is the columns of one window cell.
func (l statusLayout) cellWidth() int {
	w := l.bar + 2 + 5 + len(" in ") + 6
	if l.long {
		w += len("resets ")
	}
	return w
}

// chooseLayout is the widest layout whose account lines fit cols
// columns (0 = unknown: the widest), the narrowest when none does.
func chooseLayout(cols, nameWidth, stateWidth int) statusLayout {
	if cols <= 0 {
		return wideLayout
	}
	fits := func(l statusLayout) bool {
		return nameWidth+2+3+l.cellWidth()+2+3+l.cellWidth()+2+stateWidth <= cols
	}
	for _, long := range []bool{true, false} {
		for b := 20; b >= 10; b-- {
			if l := (statusLayout{bar: b, long: long}); fits(l) {
				return l
			}
		}
	}
	for b := 9; b > 5; b-- {
		if l := (statusLayout{bar: b}); fits(l) {
			return l
		}
	}
	return statusLayout{bar: 5}
}

// countdown is d for a person: 45s, 12m, 2h14m, 3d04h.
func countdown(d time.Duration) string {
	d = max(d, 0).Round(time.Second)
	switch {
	case d < time.Minute:
		return strconv.Itoa(int(d.Seconds())) + "s"
	case d < time.Hour:
		return strconv.Itoa(int(d.Minutes())) + "m"
	case d < 24*time.Hour:
		return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
	}
	return fmt.Sprintf("%dd%02dh", int(d.Hours())/24, int(d.Hours())%24)
}

// untilTime parses an RFC 3339 time of the status view.
func untilTime(s *string) (time.Time, bool) {
	if s == nil {
		return time.Time{}, false
	}
	t, err := time.Parse(time.RFC3339, *s)
	return t, err == nil
}

// windowCell is one window of an account line: bar, percent, reset.
func (l statusLayout) windowCell(u *float64, reset *string, now time.Time) string {
	s := l.barText(u) + fmt.Sprintf(" %4s", pct(u))
	label := " in "
	if l.long {
		label = " resets in "
	}
	if t, ok := untilTime(reset); ok {
		return s + label + fmt.Sprintf("%-6s", countdown(t.Sub(now)))
	}
	return s + strings.Repeat(" ", len(label)+6)
}

// stateText is an account's state for people: "limited (5h) 1h20m left",
// "needs_login: refresh token revoked".
func stateText(a requestlog.StatusAccount, now time.Time) string {
	s := a.State
	switch {
	case a.Window != "":
		s += " (" + a.Window + ")"
	case a.Family != "":
		s += " (" + a.Family + ")"
	}
	if t, ok := untilTime(a.Until); ok {
		s += " " + countdown(t.Sub(now)) + " left"
	}
	if a.Reason != "" {
		s += ": " + a.Reason
	}
	return printable(s)
}

// writeStatusText prints the status for people: a line per account, then
// the pool's; the account lines fit cols columns when they can (0 =
// unknown).
func writeStatusText(w io.Writer, st requestlog.Status, now time.Time, cols int) {
	nameWidth, stateWidth := 0, 0
	states := make([]string, len(st.Accounts))
	for i, a := range st.Accounts {
		nameWidth = max(nameWidth, utf8.RuneCountInString(printable(a.Name)))
		states[i] = stateText(a, now)
		if a.Sessions != nil {
			states[i] += ", " + plural(int64(*a.Sessions), "session")
		}
		stateWidth = max(stateWidth, utf8.RuneCountInString(states[i]))
	}
	if len(st.Accounts) == 0 {
		fmt.Fprintln(w, "no accounts: add one with `claudeflare accounts add NAME`")
	}
	l := chooseLayout(cols, nameWidth, stateWidth)
	for i, a := range st.Accounts {
		name := printable(a.Name)
		fmt.Fprintf(w, "%s%s  5h %s  7d %s  %s\n", name, strings.Repeat(" ", nameWidth-utf8.RuneCountInString(name)),
			l.windowCell(a.Utilization5h, a.Reset5h, now), l.windowCell(a.Utilization7d, a.Reset7d, now), states[i])
	}
	fmt.Fprintln(w, wrapText(poolText(st.Pool, now), cols))
}

// wrapText breaks a long line at spaces to fit cols columns (0 = as it
// is), indenting the continued lines by two.
func wrapText(s string, cols int) string {
	if cols < 20 || utf8.RuneCountInString(s) <= cols {
		return s
	}
	var b strings.Builder
	n := 0
	for i, word := range strings.Split(s, " ") {
		w := utf8.RuneCountInString(word)
		switch {
		case i == 0:
		case n+1+w > cols:
			b.WriteString("\n  ")
			n = 2
		default:
			b.WriteByte(' ')
			n++
		}
		b.WriteString(word)
		n += w
	}
	return b.String()
}

// terminalWidth is the columns of w when it is a terminal, else 0.
func terminalWidth(w io.Writer) int {
	f, ok := w.(*os.File)
	if !ok {
		return 0
	}
	cols, _, err := term.GetSize(int(f.Fd()))
	if err != nil {
		return 0
	}
	return cols
}

// poolText is the pool's line.
func poolText(p requestlog.StatusPool, now time.Time) string {
	if p.Total == 0 {
		return "pool: no accounts"
	}
	head := fmt.Sprintf("pool: %d of %s usable; ", p.Usable, plural(int64(p.Total), "account"))
	limit := strconv.Itoa(int(math.Round(p.MaxUtilization*100))) + "%"
	switch p.Estimate {
	case requestlog.EstimateRate:
		s := head + "exhausted in "
		if p.TimeToExhaustionSeconds != nil {
			s += countdown(time.Duration(*p.TimeToExhaustionSeconds) * time.Second)
		}
		if t, ok := untilTime(p.ExhaustedAt); ok {
			s += " (" + lineTime(t) + ")"
		}
		return s + fmt.Sprintf(" at the rate of the last 15 minutes (%s weighted tokens/min; every usable account at %s)",
			strconv.FormatFloat(p.TokensPerMinute, 'f', 0, 64), limit)
	case requestlog.EstimateExhausted:
		return head + "exhausted now: no usable account is below " + limit
	case requestlog.EstimateNoTraffic:
		return head + "time to exhaustion unknown: no traffic in the last 15 minutes"
	case requestlog.EstimateNoData:
		return head + "time to exhaustion unknown: no account has served in a window of known utilization yet"
	case requestlog.EstimateLasts:
		return head + "lasts more than 7 days at the rate of the last 15 minutes"
	case requestlog.EstimateUnlimited:
		return head + "does not run out: " + printable(p.Method)
	}
	return head + printable(p.Method)
}

// statusReader gets the status view: from the running daemon when one
// answers, else from the database in the data dir.
type statusReader struct {
	cfg     *config.Config
	url     string // the daemon's base URL ("" = none to ask)
	urlFrom string // where the URL came from, for messages
	key     string // client key for the daemon ("" = none)
	client  *http.Client

	vdb, ldb *store.DB // opened on the first read from the database
}

func newStatusReader(e *env, cfg *config.Config, flagURL string, timeout time.Duration) *statusReader {
	r := &statusReader{cfg: cfg, key: strings.TrimSpace(e.getenv(envAPIKey)), client: &http.Client{
		Timeout: timeout,
		// A redirect would carry the client key elsewhere: never follow.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
	switch {
	case flagURL != "":
		r.url, r.urlFrom = flagURL, "--url"
	case e.getenv(envDaemonURL) != "":
		r.url, r.urlFrom = e.getenv(envDaemonURL), envDaemonURL
	default:
		r.url, r.urlFrom = configURL(cfg), "the config"
	}
	r.url = strings.TrimRight(r.url, "/")
	return r
}

// configURL is where a daemon started with cfg listens ("" when its port
// is picked at start).
func configURL(cfg *config.Config) string {
	if cfg.Port == 0 {
		return ""
	}
	host := cfg.Host
	switch host {
	case "", "0.0.0.0":
		host = "127.0.0.1"
	case "::":
		host = "::1"
	}
	scheme := "http"
	if cfg.Server.TLSCert != "" {
		scheme = "https"
	}
	return scheme + "://" + net.JoinHostPort(host, strconv.Itoa(cfg.Port))
}

func (r *statusReader) close() {
	if r.vdb != nil {
		r.vdb.Close()
	}
	if r.ldb != nil {
		r.ldb.Close()
	}
}

// read gets the status (with sessionHash's account when set) and a line
// saying where it came from.
func (r *statusReader) read(ctx context.Context, sessionHash string) (requestlog.Status, string, error) {
	st, derr := r.fromDaemon(ctx, sessionHash)
	if derr == nil {
		return st, "from the daemon at " + r.where(), nil
	}
	if ctx.Err() != nil {
		return st, "", ctx.Err()
	}
	if locked, _ := statefile.DataDirLocked(r.cfg.DataDir); locked {
		derr = fmt.Errorf("%w; a daemon holds the data dir: give its address with --url or $%s", derr, envDaemonURL)
	}
	st, berr := r.fromDatabase(ctx, sessionHash)
	if berr == nil {
		return st, "from the database in " + printable(r.cfg.DataDir) + " (" + derr.Error() + "; live session counts unknown)", nil
	}
	return st, "", withHint(fmt.Errorf("status needs a running daemon or a readable data dir: %v; %v", derr, berr),
		"start `claudeflare daemon`, or point at one with --url or $"+envDaemonURL+" (and $"+envAPIKey+" once client keys exist), or give the data dir with --data-dir")
}

// where is the daemon's address for messages, a password in it hidden.
func (r *statusReader) where() string {
	if u, err := url.Parse(r.url); err == nil {
		return printable(u.Redacted())
	}
	return printable(r.url)
}

// fromDaemon asks GET /api/status.
func (r *statusReader) fromDaemon(ctx context.Context, sessionHash string) (requestlog.Status, error) {
	var st requestlog.Status
	if r.url == "" {
		return st, errors.New("no daemon address (the config's port is 0: give --url or $" + envDaemonURL + ")")
	}
	u, err := url.Parse(r.url)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return st, fmt.Errorf("daemon address %q from %s is not an http(s) URL", r.where(), r.urlFrom)
	}
	target := r.url + "/api/status"
	if sessionHash != "" {
		target += "?session=" + url.QueryEscape(sessionHash)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		return st, err
	}
	if r.key != "" {
		req.Header.Set("x-api-key", r.key)
	}
	resp, err := r.client.Do(req)
	if err != nil {
		return st, fmt.Errorf("no daemon answered at %s: %s", r.where(), netReason(err))
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return st, fmt.Errorf("the daemon at %s: read the answer: %v", r.where(), err)
	}
	if resp.StatusCode != http.StatusOK {
		var ae struct {
			Error struct {
				Message string `json:"message"`
			} `json:"error"`
		}
		msg := http.StatusText(resp.StatusCode)
		if json.Unmarshal(body, &ae) == nil && ae.Error.Message != "" {
			msg = strings.TrimPrefix(ae.Error.Message, "claudeflare: ")
		}
		if resp.StatusCode == http.StatusUnauthorized && r.key == "" {
			msg += "; set $" + envAPIKey + " to a viewer key"
		}
		return st, fmt.Errorf("the daemon at %s answered %d: %s", r.where(), resp.StatusCode, printable(clip(msg, 200)))
	}
	if err := json.Unmarshal(body, &st); err != nil {
		return st, fmt.Errorf("the daemon at %s: not a status answer", r.where())
	}
	return st, nil
}

// netReason is a connection error in a few words.
func netReason(err error) string {
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, context.DeadlineExceeded), os.IsTimeout(err):
		return "timed out"
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		return printable(ue.Err.Error())
	}
	return printable(err.Error())
}

// fromDatabase computes the status from the data dir's databases,
// opened read-only (nothing is created or migrated).
func (r *statusReader) fromDatabase(ctx context.Context, sessionHash string) (requestlog.Status, error) {
	var st requestlog.Status
	dir := r.cfg.DataDir
	if r.vdb == nil {
		vaultPath := filepath.Join(dir, store.VaultFile)
		if _, err := os.Stat(vaultPath); err != nil {
			if errors.Is(err, os.ErrNotExist) {
				return st, fmt.Errorf("no database in %s", printable(dir))
			}
			return st, fmt.Errorf("cannot read the data dir: %v", err)
		}
		vdb, err := store.OpenReadOnly(vaultPath)
		if err != nil {
			return st, fmt.Errorf("cannot read %s: %v", printable(vaultPath), err)
		}
		r.vdb = vdb
		if ldb, err := store.OpenReadOnly(filepath.Join(dir, store.LogFile)); err == nil {
			r.ldb = ldb
		}
	}
	st, err := requestlog.ComputeStatus(ctx, r.vdb, r.ldb, requestlog.StatusOptions{
		MaxUtilization: requestlog.StatusMaxUtilization(r.cfg), SessionHash: sessionHash,
	})
	if err != nil {
		return st, fmt.Errorf("read the database in %s: %v", printable(dir), err)
	}
	return st, nil
}
