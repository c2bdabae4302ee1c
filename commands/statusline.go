package commands

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/claudeflare/claudeflare/proxy"
	"github.com/claudeflare/claudeflare/requestlog"
)

// maxStatusLineInput bounds what statusline reads from stdin.
const maxStatusLineInput = 1 << 20

// statusLineStdinWait bounds the wait for stdin's end.
const statusLineStdinWait = 2 * time.Second

// statusLineTimeout bounds the question to the daemon: Claude Code runs
// the command often and waits for it.
const statusLineTimeout = time.Second

func statuslineCommand() *cli.Command {
	return &cli.Command{
		Name:  "statusline",
		Usage: "one status line for Claude Code: the session's account, its utilization and reset",
		Description: "statusline is meant for Claude Code's status-line hook: in settings.json,\n" +
			"\"statusLine\": {\"type\": \"command\", \"command\": \"claudeflare statusline\"}.\n" +
			"Claude Code passes the session as JSON on stdin (session_id, model, workspace,\n" +
			"...); statusline finds the account that served the session's latest request\n" +
			"(the request log keeps a hash of the session id that Claude Code sends in its\n" +
			"x-claude-code-session-id header, within the last day) and prints one plain\n" +
			"line, e.g.\n\n" +
			"    claudeflare: work · 5h 42% · 7d 18% · resets 1h12m\n\n" +
			"(the reset of the fuller window). A session that has sent nothing yet gets the\n" +
			"account a new session would most likely get (the most headroom). It asks the\n" +
			"daemon or reads the database as `status` does (--url, $" + envDaemonURL + ",\n" +
			"$" + envAPIKey + "), waiting at most a second for the daemon. It always exits 0\n" +
			"with one short line, also on bad input or when neither is reachable: Claude\n" +
			"Code blanks the line on a failure.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "url", Usage: "the daemon's `URL` (default $" + envDaemonURL + ", then the config's host and port)"},
		},
		Action: statusline,
	}
}

// statusLineInput is the part of Claude Code's status-line JSON used.
type statusLineInput struct {
	SessionID string `json:"session_id"`
}

func statusline(c *cli.Context) error {
	e := getEnv(c)
	fmt.Fprintln(e.stdout, statusLineText(c, e))
	return nil
}

// statusLineText is the line statusline prints; never an error.
func statusLineText(c *cli.Context, e *env) string {
	var in statusLineInput
	inputOK := false
	if !isTerminal(e.stdin) {
		// Claude Code writes the JSON and closes stdin; a stdin left open
		// by something else is given up on rather than waited for.
		type read struct {
			b   []byte
			err error
		}
		got := make(chan read, 1)
		go func() {
			b, err := io.ReadAll(io.LimitReader(e.stdin, maxStatusLineInput))
			got <- read{b, err}
		}()
		select {
		case r := <-got:
			inputOK = r.err == nil && json.Unmarshal(r.b, &in) == nil
		case <-time.After(statusLineStdinWait):
		}
	}
	cfg, err := e.config(nil)
	if err != nil {
		return "claudeflare: config error (run `claudeflare config check`)"
	}
	r := newStatusReader(e, cfg, c.String("url"), statusLineTimeout)
	defer r.close()
	hash := proxy.ClaudeCodeSessionHash(in.SessionID)
	st, _, err := r.read(c.Context, hash)
	if err != nil {
		return "claudeflare: no daemon and no readable database"
	}
	return formatStatusLine(st, inputOK && hash != "", statusTime(st))
}

// formatStatusLine is the line for the status st: the session's account
// when st holds one, else the account a new session would likely get.
func formatStatusLine(st requestlog.Status, withSession bool, now time.Time) string {
	find := func(name string) *requestlog.StatusAccount {
		for i := range st.Accounts {
			if st.Accounts[i].Name == name {
				return &st.Accounts[i]
			}
		}
		return nil
	}
	if withSession && st.Session != nil && st.Session.Account != nil {
		if a := find(*st.Session.Account); a != nil {
			return "claudeflare: " + accountSummary(*a, now)
		}
		return "claudeflare: " + printable(*st.Session.Account) + " (removed)"
	}
	prefix := "claudeflare: "
	if withSession {
		prefix += "new session · "
	}
	if a := bestAccount(st.Accounts); a != nil {
		return prefix + "next " + accountSummary(*a, now)
	}
	if len(st.Accounts) == 0 {
		return prefix + "no accounts"
	}
	return prefix + fmt.Sprintf("no usable account (%d of %d)", st.Pool.Usable, st.Pool.Total)
}

// accountSummary is "work · 5h 42% · 7d 18% · resets 1h12m", with the
// state when it is not ok.
func accountSummary(a requestlog.StatusAccount, now time.Time) string {
	parts := []string{printable(a.Name)}
	if a.Utilization5h != nil {
		parts = append(parts, "5h "+pct(a.Utilization5h))
	}
	if a.Utilization7d != nil {
		parts = append(parts, "7d "+pct(a.Utilization7d))
	}
	reset := a.Reset5h
	if a.Utilization7d != nil && (a.Utilization5h == nil || *a.Utilization7d > *a.Utilization5h) && a.Reset7d != nil {
		reset = a.Reset7d
	}
	if t, ok := untilTime(reset); ok {
		parts = append(parts, "resets "+countdown(t.Sub(now)))
	}
	if a.State != "ok" {
		parts = append(parts, stateText(a, now))
	}
	return strings.Join(parts, " · ")
}

// bestAccount is the usable account with the most headroom (tier times
// the unused share of its fuller window), as the affinity strategy places
// a new session; nil when none is usable.
func bestAccount(accts []requestlog.StatusAccount) *requestlog.StatusAccount {
	var best *requestlog.StatusAccount
	bestRoom := -1.0
	for i := range accts {
		a := &accts[i]
		if a.State != "ok" && a.State != "limited_model" {
			continue
		}
		used := 0.0
		for _, u := range []*float64{a.Utilization5h, a.Utilization7d} {
			if u != nil {
				used = max(used, *u)
			}
		}
		room := float64(max(a.Tier, 1)) * max(0, 1-used)
		if room > bestRoom {
			best, bestRoom = a, room
		}
	}
	return best
}
