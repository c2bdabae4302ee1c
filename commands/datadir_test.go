package commands_test

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// dirSums hashes every file in dir with its mode and owner.
func dirSums(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		st := fi.Sys().(*syscall.Stat_t)
		sum := ""
		if fi.Mode().IsRegular() {
			b, _ := os.ReadFile(p)
			sum = fmt.Sprintf("%x", sha256.Sum256(b))
		}
		out[p] = fmt.Sprintf("%v %d %s", fi.Mode(), st.Uid, sum)
		return nil
	})
	return out
}

func sameSums(t *testing.T, before, after map[string]string) {
	t.Helper()
	for p, s := range before {
		if after[p] != s {
			t.Errorf("%s changed: %s -> %s", p, s, after[p])
		}
	}
	for p := range after {
		if _, ok := before[p]; !ok {
			t.Errorf("%s was created", p)
		}
	}
}

// refusal requires exit 1 and exactly two stderr lines: the error and the
// hint, matching the patterns.
func refusal(t *testing.T, stderr string, code int, msg, hint string) {
	t.Helper()
	lines := strings.Split(strings.TrimRight(stderr, "\n"), "\n")
	if code != 1 || len(lines) != 2 || !regexp.MustCompile(msg).MatchString(lines[0]) || !regexp.MustCompile(hint).MatchString(lines[1]) {
		t.Fatalf("exit %d, stderr:\n%s\nwant exit 1, %q and %q", code, stderr, msg, hint)
	}
}

func chownOrSkip(t *testing.T, path string) {
	t.Helper()
	if err := os.Lchown(path, 65534, 65534); err != nil {
		if os.Geteuid() != 0 {
			t.Skip("not root and chown failed: cannot make a file of another user")
		}
		t.Fatal(err)
	}
}

// TestDataDirOfAnotherUser: run as root (or anyone) on a data dir owned
// by another user, every command refuses, names the owner in a hint, and
// touches nothing (issue 11, item 7).
func TestDataDirOfAnotherUser(t *testing.T) {
	r := newCLI(t)
	r.MustRun("", "init")
	data := filepath.Join(r.dir, "data")
	chownOrSkip(t, data)
	before := dirSums(t, data)
	msg := `^claudeflare: data dir ` + regexp.QuoteMeta(data) + ` is owned by \S+ \(uid 65534\), not by .*uid \d+\) who runs claudeflare$`
	for _, args := range [][]string{{"accounts", "list"}, {"requests", "list"}, {"init"}, {"daemon", "--port", "0"}, {"apikey", "list"}} {
		_, stderr, code := r.Run("", args...)
		refusal(t, stderr, code, msg, `^hint: the data dir is owned by \S+; run as that user: sudo -u \S+ claudeflare \.\.\.$`)
	}
	sameSums(t, before, dirSums(t, data))
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

// TestStateFilesOpenToOthersOrLinked: a vault.db open to others is
// refused with a chmod hint and left as it is (not silently fixed); a
// linked identity.txt or vault.db is refused; another user's log.db is
// refused with the owner in the hint.
func TestStateFilesOpenToOthersOrLinked(t *testing.T) {
	r := newCLI(t)
	r.MustRun("", "init")
	r.MustRun("", "requests", "list")
	data := filepath.Join(r.dir, "data")
	vaultDB := filepath.Join(data, "vault.db")

	os.Chmod(vaultDB, 0o644)
	before := dirSums(t, data)
	_, stderr, code := r.Run("", "accounts", "list")
	refusal(t, stderr, code,
		`^claudeflare: (open vault: )?`+regexp.QuoteMeta(vaultDB)+` is open to group or others \(mode 0644\)$`,
		`^hint: chmod 600 `+regexp.QuoteMeta(vaultDB)+`$`)
	sameSums(t, before, dirSums(t, data))
	os.Chmod(vaultDB, 0o600)
	r.MustRun("", "accounts", "list")

	id := filepath.Join(data, "identity.txt")
	moved := filepath.Join(r.dir, "identity-elsewhere.txt")
	os.Rename(id, moved)
	os.Symlink(moved, id)
	_, stderr, code = r.Run("", "accounts", "list")
	refusal(t, stderr, code, `^claudeflare: `+regexp.QuoteMeta(id)+` is a symbolic link`, `^hint: .*rm `+regexp.QuoteMeta(id))
	os.Remove(id)
	os.Rename(moved, id)

	logDB := filepath.Join(data, "log.db")
	chownOrSkip(t, logDB)
	_, stderr, code = r.Run("", "requests", "list")
	refusal(t, stderr, code,
		`^claudeflare: (open request log: )?`+regexp.QuoteMeta(logDB)+` is owned by \S+ \(uid 65534\), not by `,
		`^hint: log\.db is owned by \S+; run as that user: sudo -u \S+ claudeflare \.\.\.$`)
}
