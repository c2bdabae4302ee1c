package commands_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// jsonRecords parses every line of a stderr as a JSON log record, failing
// on the first that is not.
func jsonRecords(t *testing.T, what, stderr string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for i, line := range strings.Split(strings.TrimRight(stderr, "\n"), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil || rec["level"] == nil || rec["msg"] == nil {
			t.Fatalf("%s: stderr line %d is not a JSON log record: %q\n%s", what, i+1, line, stderr)
		}
		out = append(out, rec)
	}
	return out
}

// TestDaemonJSONLogsEveryLine runs the real daemon with LOG_FORMAT=json
// through a first start (the vault and identity made), a request, a
// reload, a request log that cannot be opened and a stop, and a second
// daemon refused on the same data dir: every line either writes on stderr
// parses as JSON (so `journalctl -o cat | jq` never breaks).
func TestDaemonJSONLogsEveryLine(t *testing.T) {
	c := newCLI(t) // LOG_FORMAT=json
	data := filepath.Join(c.dir, "data")
	if err := os.MkdirAll(filepath.Join(data, "log.db"), 0o700); err != nil { // unopenable: a warning
		t.Fatal(err)
	}
	os.Chmod(data, 0o700)
	n := listenNotify(t)
	c.Env = append(c.Env, "NOTIFY_SOCKET="+n.path)
	d := c.startDaemon()
	n.expect("READY=1")
	postMessages(t, d.url, false)
	d.cmd.Process.Signal(syscall.SIGHUP)
	n.expect("RELOADING=1")
	n.expect("READY=1")

	// A second daemon on the same data dir ends with an error: a JSON
	// record too, with its hint.
	_, errs, code := c.Run("", "daemon", "--port", "0")
	recs := jsonRecords(t, "second daemon", errs)
	last := recs[len(recs)-1]
	if code != 1 || last["level"] != "ERROR" || !strings.Contains(last["msg"].(string), "another claudeflare daemon is running") || last["hint"] == nil {
		t.Fatalf("second daemon: exit %d\n%s", code, errs)
	}

	if err := d.stop(t, syscall.SIGTERM); err != nil {
		t.Fatalf("daemon exit: %v\n%s", err, d.logs())
	}

	// A config that does not load: exit 2, and the error is JSON too.
	bad := filepath.Join(c.dir, "bad.toml")
	os.WriteFile(bad, []byte("prot = 8080\n"), 0o600)
	_, errs, code = c.Run("", "--config", bad, "daemon")
	recs = jsonRecords(t, "daemon with a bad config", errs)
	if code != 2 || len(recs) != 1 || recs[0]["level"] != "ERROR" || !strings.Contains(recs[0]["msg"].(string), "prot") {
		t.Fatalf("bad config: exit %d\n%s", code, errs)
	}

	logs := d.logs()
	recs = jsonRecords(t, "daemon", logs)
	var listening, logWarned, stopped bool
	for _, r := range recs {
		msg := r["msg"].(string)
		listening = listening || strings.HasPrefix(msg, "listening on http://127.0.0.1:")
		logWarned = logWarned || strings.HasPrefix(msg, "request log unavailable") && r["level"] == "ERROR"
		stopped = stopped || msg == "stopped"
	}
	if !listening || !logWarned || !stopped {
		t.Fatalf("missing records (listening %v, request log %v, stopped %v):\n%s", listening, logWarned, stopped, logs)
	}
}

// scriptEnv is c's environment as cron would run a command: no log
// settings (the defaults: auto format, info level), stderr not a terminal.
func scriptEnv(env []string) []string {
	var out []string
	for _, kv := range env {
		if !strings.HasPrefix(kv, "LOG_") && !strings.HasPrefix(kv, "CLAUDEFLARE_LOG_") {
			out = append(out, kv)
		}
	}
	return out
}

// TestScriptOutput runs commands as a script does (stdout and stderr not
// terminals): a success leaves stderr empty (cron mails only a failure),
// never a log line next to a human line; stdout holds only the data asked
// for; a failure is one error line.
func TestScriptOutput(t *testing.T) {
	c := newCLI(t)
	c.Env = scriptEnv(c.Env)
	c.MustRun("", "init")
	c.MustRun(c.fake.NewAPIKey("work"), "accounts", "add", "work", "--api-key-stdin")

	for _, args := range [][]string{
		{"accounts", "pause", "work"},
		{"accounts", "resume", "work"},
		{"--quiet", "cleanup", "--older-than", "1d"},
		{"--quiet", "cleanup", "--type", "payloads", "--force", "--vacuum"},
	} {
		out, errs, code := c.Run("", args...)
		if code != 0 || out != "" || errs != "" {
			t.Errorf("claudeflare %s: exit %d, stdout %q, stderr %q; want 0 and nothing", strings.Join(args, " "), code, out, errs)
		}
	}

	// Data asked for goes to stdout, and only it: cleanup's answer
	// (what it deleted) too, unless --quiet.
	out, errs, code := c.Run("", "cleanup", "--older-than", "30d")
	if code != 0 || errs != "" || !strings.HasPrefix(out, "deleted 0 requests") {
		t.Errorf("cleanup: exit %d, stdout %q, stderr %q", code, out, errs)
	}
	out, errs, code = c.Run("", "cleanup", "--older-than", "30d", "--json")
	var res map[string]any
	if code != 0 || errs != "" || json.Unmarshal([]byte(out), &res) != nil || res["type"] != "all" {
		t.Errorf("cleanup --json: exit %d, stdout %q, stderr %q", code, out, errs)
	}
	out, errs, code = c.Run("", "cleanup", "--older-than", "30d", "--dry-run")
	if code != 0 || errs != "" || !strings.HasPrefix(out, "would delete 0 requests") {
		t.Errorf("cleanup --dry-run: exit %d, stdout %q, stderr %q", code, out, errs)
	}

	// A failure: one error line, nothing on stdout.
	out, errs, code = c.Run("", "accounts", "pause", "nosuch")
	if code != 1 || out != "" || !strings.HasPrefix(errs, "claudeflare: ") || strings.Count(errs, "\n") > 2 || strings.Contains(errs, `"level"`) {
		t.Errorf("failure: exit %d, stdout %q, stderr %q", code, out, errs)
	}

	// --log-level debug shows what happened, as JSON records only.
	_, errs, code = c.Run("", "--log-level", "debug", "accounts", "pause", "work")
	if code != 0 || !strings.Contains(errs, `account \"work\" paused`) {
		t.Fatalf("debug: exit %d, stderr %q", code, errs)
	}
	jsonRecords(t, "pause with --log-level debug", errs)
}
