package commands_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"

	"golang.org/x/sys/unix"

	"github.com/claudeflare/claudeflare/internal/testutil"
)

// runWith runs the binary with extra environment variables.
func (c *runner) runWith(extra []string, stdin string, args ...string) (string, string, int) {
	c.t.Helper()
	cmd := c.Cmd(stdin, args...)
	cmd.Env = append(append([]string{}, cmd.Env...), extra...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		return out.String(), errb.String(), ee.ExitCode()
	case err != nil:
		c.t.Fatal(err)
	}
	return out.String(), errb.String(), 0
}

// sessionMessage sends one message as Claude Code does, with its session
// id in the header.
func sessionMessage(t *testing.T, base, session, key string) {
	t.Helper()
	body := `{"model":"claude-sonnet-4-5","max_tokens":64,"messages":[{"role":"user","content":"hi"}]}`
	req, _ := http.NewRequest("POST", base+"/v1/messages?beta=true", strings.NewReader(body))
	req.Header.Set("content-type", "application/json")
	req.Header.Set("anthropic-version", "2023-06-01")
	req.Header.Set("x-claude-code-session-id", session)
	if key != "" {
		req.Header.Set("x-api-key", key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("message: %d %s", resp.StatusCode, b)
	}
}

// statusLines is `status --json`: the account lines by name, the pool's.
func statusLines(t *testing.T, out string) (map[string]map[string]any, map[string]any) {
	t.Helper()
	accts := map[string]map[string]any{}
	var pool map[string]any
	for _, l := range jsonLines(t, out) {
		switch l["type"] {
		case "account":
			accts[l["name"].(string)] = l
		case "pool":
			if pool != nil {
				t.Fatalf("two pool lines: %s", out)
			}
			pool = l
		default:
			t.Fatalf("line of type %v: %s", l["type"], out)
		}
	}
	if pool == nil {
		t.Fatalf("no pool line: %s", out)
	}
	return accts, pool
}

const ccSession = "5b7c0f6e-1d2a-4c3b-9e8f-7a6b5c4d3e2f"

// status and statusline against both sources: the running daemon (found
// by --url, $CLAUDEFLARE_URL, with a viewer key once keys exist) and,
// with no daemon, the database; neither: one clear line.
func TestStatusDaemonAndDatabase(t *testing.T) {
	c := newCLI(t)
	c.MustRun("", "init")
	c.MustRun(c.fake.NewOAuthAccount("work"), "accounts", "add", "work", "--refresh-token-stdin")
	c.MustRun(c.fake.NewOAuthAccount("spare"), "accounts", "add", "spare", "--refresh-token-stdin", "--priority", "5")
	c.MustRun("", "accounts", "pause", "spare")
	c.fake.SetBudget("work", 4, 5*time.Hour)

	// No daemon: the database, sessions unknown.
	out := c.MustRun("", "status", "--json")
	accts, pool := statusLines(t, out)
	if len(accts) != 2 || accts["work"]["state"] != "ok" || accts["spare"]["state"] != "paused" ||
		accts["work"]["sessions"] != nil || accts["work"]["utilization_5h"] != nil {
		t.Fatalf("from the database: %s", out)
	}
	if pool["usable"] != 1.0 || pool["total"] != 2.0 || pool["estimate"] != "no_traffic" || pool["time_to_exhaustion_seconds"] != nil {
		t.Fatalf("pool from the database: %v", pool)
	}
	if out := c.MustRun("", "status"); !strings.Contains(out, "from the database in ") {
		t.Fatalf("status does not say its source: %s", out)
	}

	d := c.startDaemon()
	for range 2 {
		sessionMessage(t, d.url, ccSession, "")
	}
	var st map[string]map[string]any
	testutil.WaitFor(t, "work's 5h utilization in status", func() bool {
		out = c.MustRun("", "status", "--json", "--url", d.url)
		st, pool = statusLines(t, out)
		return st["work"]["utilization_5h"] == 0.5
	})
	if st["work"]["sessions"] != 1.0 || st["spare"]["sessions"] != 0.0 || st["work"]["reset_5h"] == nil {
		t.Fatalf("from the daemon: %s", out)
	}
	if _, err := time.Parse(time.RFC3339, st["work"]["reset_5h"].(string)); err != nil || !strings.HasSuffix(st["work"]["reset_5h"].(string), "Z") {
		t.Errorf("reset_5h %v: not RFC 3339 UTC", st["work"]["reset_5h"])
	}
	// Two requests of a 4-message budget at 0.5: the rate drains the rest.
	if pool["estimate"] != "rate" || pool["time_to_exhaustion_seconds"] == nil {
		t.Errorf("pool from the daemon: %v", pool)
	}
	url := []string{"CLAUDEFLARE_URL=" + d.url}
	if o, _, _ := c.runWith(url, "", "status"); !strings.Contains(o, "from the daemon at "+d.url) || !strings.Contains(o, "1 session") {
		t.Errorf("status with $CLAUDEFLARE_URL: %s", o)
	}

	// statusline: the session's account, from the daemon.
	in := fmt.Sprintf(`{"session_id":%q,"model":{"id":"claude-sonnet-4-5","display_name":"Sonnet"},"workspace":{"current_dir":"/tmp"},"version":"2.0.0"}`, ccSession)
	line, errs, code := c.runWith(url, in, "statusline")
	if code != 0 || errs != "" || !regexp.MustCompile(`^claudeflare: work · 5h 50% · 7d 1% · resets [0-9]h[0-9]{2}m\n$`).MatchString(line) {
		t.Fatalf("statusline: exit %d %q %q", code, line, errs)
	}
	// A session that sent nothing yet: the account it would get.
	if line, _, code := c.runWith(url, `{"session_id":"another"}`, "statusline"); code != 0 || !strings.HasPrefix(line, "claudeflare: new session · next work · 5h 50%") {
		t.Errorf("new session: exit %d %q", code, line)
	}
	// Bad input: a short line, exit 0.
	if line, errs, code := c.runWith(url, `{not json`, "statusline"); code != 0 || errs != "" || strings.Count(line, "\n") != 1 || !strings.HasPrefix(line, "claudeflare: next work") {
		t.Errorf("bad input: exit %d %q %q", code, line, errs)
	}

	// Once client keys exist the daemon wants one: without it status
	// falls back to the database and says why; with a viewer key it asks
	// the daemon.
	viewer := strings.TrimSpace(c.MustRun("", "apikey", "create", "dash", "--role", "viewer"))
	testutil.WaitFor(t, "the daemon to require keys", func() bool {
		o, _, _ := c.runWith(url, "", "status")
		return strings.Contains(o, "answered 401")
	})
	o, _, _ := c.runWith(url, "", "status")
	if !strings.Contains(o, "from the database in ") || !strings.Contains(o, "CLAUDEFLARE_API_KEY") {
		t.Errorf("without a key: %s", o)
	}
	o, _, code = c.runWith(append(url, "CLAUDEFLARE_API_KEY="+viewer), "", "status")
	if code != 0 || !strings.Contains(o, "from the daemon at ") || strings.Contains(o, viewer) {
		t.Errorf("with a viewer key: exit %d %s", code, o)
	}

	// The daemon stopped: statusline finds the session in the database.
	if err := d.stop(t, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	line, errs, code = c.runWith(url, in, "statusline")
	if code != 0 || errs != "" || !strings.HasPrefix(line, "claudeflare: work · 5h 50% · 7d 1% · resets ") {
		t.Fatalf("statusline from the database: exit %d %q %q", code, line, errs)
	}

	// Neither a daemon nor a database: status says which it needs (exit
	// 1), statusline still prints a line (exit 0).
	none := []string{"CLAUDEFLARE_DATA_DIR=" + filepath.Join(c.dir, "nothing-here")}
	_, errs, code = c.runWith(append(none, url...), "", "status")
	if code != 1 || !strings.HasPrefix(errs, "claudeflare: status needs a running daemon or a readable data dir: no daemon answered at "+d.url) ||
		!strings.Contains(errs, "no database in ") || !strings.Contains(errs, "\nhint: ") {
		t.Errorf("neither: exit %d %q", code, errs)
	}
	if _, err := os.Stat(filepath.Join(c.dir, "nothing-here")); err == nil {
		t.Error("status created the data dir")
	}
	if line, errs, code := c.runWith(append(none, url...), in, "statusline"); code != 0 || errs != "" || line != "claudeflare: no daemon and no readable database\n" {
		t.Errorf("statusline with neither: exit %d %q %q", code, line, errs)
	}
	// --watch needs a terminal.
	if _, errs, code := c.Run("", "status", "--watch"); code != 2 || !strings.Contains(errs, "--watch needs a terminal") {
		t.Errorf("--watch in a pipe: exit %d %q", code, errs)
	}
}

// ptyOutput collects what a process writes to its terminal.
type ptyOutput struct{ testutil.Buffer }

// startOnPTY starts the binary with stdout and stderr on a fresh
// pseudo-terminal of cols columns (0: the kernel's default, no size);
// the output is collected until the process exits.
func (c *runner) startOnPTY(cols uint16, args ...string) (*exec.Cmd, *ptyOutput, chan struct{}) {
	c.t.Helper()
	if _, err := os.Stat("/dev/ptmx"); err != nil {
		testutil.Missing(c.t, "no pseudo-terminal (/dev/ptmx): the status terminal test needs one")
	}
	master, slave := openPTY(c.t)
	if cols > 0 {
		if err := unix.IoctlSetWinsize(int(master.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Row: 24, Col: cols}); err != nil {
			c.t.Fatal(err)
		}
	}
	cmd := c.Cmd("", args...)
	cmd.Stdout, cmd.Stderr = slave, slave
	if err := cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	slave.Close()
	out := &ptyOutput{}
	done := make(chan struct{})
	go func() { io.Copy(out, master); close(done) }()
	c.t.Cleanup(func() { cmd.Process.Kill(); <-done })
	return cmd, out, done
}

// On a terminal: a line per account with its two bars, percentages,
// reset countdown and state, and the pool's line; --watch redraws until
// Ctrl-C.
func TestStatusOnATerminal(t *testing.T) {
	c := newCLI(t)
	c.MustRun("", "init")
	c.MustRun(c.fake.NewOAuthAccount("work"), "accounts", "add", "work", "--refresh-token-stdin")
	c.MustRun(c.fake.NewOAuthAccount("spare"), "accounts", "add", "spare", "--refresh-token-stdin", "--priority", "5")
	c.MustRun("", "accounts", "pause", "spare")
	c.fake.SetBudget("work", 4, 5*time.Hour)
	d := c.startDaemon()
	sessionMessage(t, d.url, ccSession, "")
	// The utilization comes with the answer; the rate with the log's row,
	// written a moment later by the recorder: wait for both.
	testutil.WaitFor(t, "work's utilization and the request in the log", func() bool {
		accts, pool := statusLines(t, c.MustRun("", "status", "--json", "--url", d.url))
		return accts["work"]["utilization_5h"] == 0.25 && pool["estimate"] == "rate"
	})

	cmd, out, done := c.startOnPTY(0, "status", "--url", d.url)
	<-done
	if err := cmd.Wait(); err != nil {
		t.Fatalf("status: %v: %s", err, out.String())
	}
	screen := strings.ReplaceAll(out.String(), "\r\n", "\n")
	work := regexp.MustCompile(`(?m)^work   5h \[#{5}-{15}\]  25% resets in [45]h[0-9]{2}m +7d \[-{20}\]   1% resets in [0-9]+d[0-9]{2}h +ok, 1 session$`)
	spare := regexp.MustCompile(`(?m)^spare  5h \[ {20}\]    - +7d \[ {20}\]    - +paused, 0 sessions$`)
	if !work.MatchString(screen) || !spare.MatchString(screen) {
		t.Fatalf("terminal shows:\n%s", screen)
	}
	if !strings.Contains(screen, "pool: 1 of 2 accounts usable; exhausted in ") || !strings.Contains(screen, "from the daemon at "+d.url) {
		t.Fatalf("no pool line or source:\n%s", screen)
	}

	// --watch: redraws (clear screen, home) until SIGINT, then exit 0.
	// On 80 columns the account lines fit: shorter bars, "in 4h59m".
	cmd, out, done = c.startOnPTY(80, "status", "--url", d.url)
	<-done
	if err := cmd.Wait(); err != nil {
		t.Fatalf("status: %v: %s", err, out.String())
	}
	screen = strings.ReplaceAll(out.String(), "\r\n", "\n")
	if !regexp.MustCompile(`(?m)^work   5h \[#+-+\]  25% in [45]h[0-9]{2}m +7d \[-+\]   1% in [0-9]+d[0-9]{2}h +ok, 1 session$`).MatchString(screen) {
		t.Fatalf("80 columns:\n%s", screen)
	}
	for _, l := range strings.Split(screen, "\n") {
		if n := utf8.RuneCountInString(l); n > 80 {
			t.Errorf("%d columns: %q", n, l)
		}
	}
	if !strings.Contains(screen, "\n  ") {
		t.Errorf("the pool's line is not wrapped:\n%s", screen)
	}

	cmd, out, done = c.startOnPTY(0, "status", "--watch", "--interval", "100ms", "--url", d.url)
	testutil.WaitFor(t, "three redraws", func() bool { return strings.Count(out.String(), "\x1b[2J") >= 3 })
	cmd.Process.Signal(os.Interrupt)
	<-done
	if err := cmd.Wait(); err != nil {
		t.Fatalf("status --watch after Ctrl-C: %v", err)
	}
	if s := out.String(); !strings.Contains(s, "Ctrl-C to quit") || !strings.Contains(s, "25% resets in") {
		t.Fatalf("watch shows:\n%s", s)
	}
}

// status --url: a redirect is not followed (it would carry the client
// key elsewhere) and a password in the URL is not printed.
func TestStatusURLRedirectAndPassword(t *testing.T) {
	c := newCLI(t)
	var hit atomic.Bool
	elsewhere := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { hit.Store(true) }))
	defer elsewhere.Close()
	redirect := httptest.NewServer(http.RedirectHandler(elsewhere.URL+"/api/status", http.StatusFound))
	defer redirect.Close()
	none := []string{"CLAUDEFLARE_DATA_DIR=" + filepath.Join(c.dir, "nothing-here"), "CLAUDEFLARE_API_KEY=cf_viewer-secret"}
	u := strings.Replace(redirect.URL, "http://", "http://me:url-secret@", 1)
	_, errs, code := c.runWith(none, "", "status", "--url", u)
	if code != 1 || !strings.Contains(errs, "answered 302") || !strings.Contains(errs, "http://me:xxxxx@") {
		t.Errorf("exit %d %q", code, errs)
	}
	if strings.Contains(errs, "url-secret") || strings.Contains(errs, "viewer-secret") {
		t.Errorf("a secret in the error: %q", errs)
	}
	if hit.Load() {
		t.Error("status followed the redirect")
	}
}
