package commands_test

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// The refusals of state files open to others, linked, or owned by another
// user are tested as a transcript in testdata/script/datadir.txtar; the
// planted lock link stays here, as it waits for a daemon that must not start.

// refusal requires exit 1 and exactly two stderr lines: the error and the
// hint, matching the patterns.
func refusal(t *testing.T, stderr string, code int, msg, hint string) {
	t.Helper()
	lines := strings.Split(strings.TrimRight(stderr, "\n"), "\n")
	if code != 1 || len(lines) != 2 || !regexp.MustCompile(msg).MatchString(lines[0]) || !regexp.MustCompile(hint).MatchString(lines[1]) {
		t.Fatalf("exit %d, stderr:\n%s\nwant exit 1, %q and %q", code, stderr, msg, hint)
	}
}

// TestPlantedDaemonLockLink: a daemon.lock planted as a symbolic link
// makes the daemon refuse to start, and the file it points to is left
// byte-identical (it used to be overwritten with the pid).
func TestPlantedDaemonLockLink(t *testing.T) {
	r := newCLI(t)
	r.MustRun("", "init")
	data := filepath.Join(r.dir, "data")
	victim := filepath.Join(r.dir, "victim")
	orig := []byte("an important file\n")
	os.WriteFile(victim, orig, 0o600)
	lock := filepath.Join(data, "daemon.lock")
	if err := os.Symlink(victim, lock); err != nil {
		t.Fatal(err)
	}
	cmd := r.Cmd("", "daemon", "--port", "0")
	// Text logs: with JSON logs the daemon's error is a JSON record.
	cmd.Env = append(cmd.Env, "LOG_FORMAT=text")
	var errb bytes.Buffer
	cmd.Stderr = &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		cmd.Process.Kill()
		<-done
		t.Fatalf("the daemon started on a planted lock link:\n%s", errb.String())
	}
	refusal(t, errb.String(), cmd.ProcessState.ExitCode(),
		`^claudeflare: `+regexp.QuoteMeta(lock)+` is a symbolic link; claudeflare does not follow links for its state files$`,
		`^hint: .*rm `+regexp.QuoteMeta(lock))
	if b, _ := os.ReadFile(victim); !bytes.Equal(b, orig) {
		t.Errorf("the link's target changed: %q", b)
	}
}
