package commands_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"filippo.io/age"

	"github.com/claudeflare/claudeflare/store"
)

func TestDoctor(t *testing.T) {
	c := newCLI(t)
	c.MustRun("", "init")
	c.MustRun(c.fake.NewOAuthAccount("work"), "accounts", "add", "work", "--refresh-token-stdin")
	data := filepath.Join(c.dir, "data")

	out, errs, code := c.Run("", "doctor")
	if code != 0 {
		t.Fatalf("healthy: exit %d\n%s%s", code, out, errs)
	}
	for _, want := range []string{"ok     config", "ok     vault ", "ok     log ", "ok     key ", "ok     vault_key", "ok     accounts", "ok     disk"} {
		if !strings.Contains(out, want) {
			t.Errorf("healthy output lacks %q:\n%s", want, out)
		}
	}

	// --json: NDJSON with stable keys.
	out = c.MustRun("", "doctor", "--json")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) < 8 {
		t.Fatalf("--json: %s", out)
	}
	for _, l := range lines {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil || m["check"] == nil || m["status"] == nil || m["message"] == nil {
			t.Fatalf("--json line %q: %v", l, err)
		}
	}

	// A group-readable key file: exit 1, the problem on one line with a hint.
	key := filepath.Join(data, "identity.txt")
	os.Chmod(key, 0o640)
	out, errs, code = c.Run("", "doctor")
	if code != 1 || !strings.Contains(errs, "claudeflare: doctor found") {
		t.Fatalf("readable key: exit %d\n%s%s", code, out, errs)
	}
	if !hasLine(out, "error", "key", "mode 0640", "hint: chmod 600 "+key) {
		t.Errorf("readable key line missing:\n%s", out)
	}
	// The exit message counts the error lines printed (one computation,
	// doctor.Problems).
	if n := strings.Count("\n"+out, "\nerror "); n == 0 || !strings.Contains(errs, fmt.Sprintf("doctor found %d problem", n)) {
		t.Errorf("%d error lines, message %q", n, errs)
	}
	os.Chmod(key, 0o600)

	// A wrong key.
	id, _ := age.GenerateX25519Identity()
	c.Env = append(c.Env, "CLAUDEFLARE_ENCRYPTION_KEY="+id.String())
	out, _, code = c.Run("", "doctor", "--json")
	if code != 1 || !strings.Contains(out, `"check":"vault_key","status":"error"`) || !strings.Contains(out, `"hint":`) {
		t.Fatalf("wrong key: exit %d\n%s", code, out)
	}
	if strings.Contains(out, id.String()) {
		t.Fatal("the key is in the output")
	}
	c.Env = c.Env[:len(c.Env)-1]

	// A corrupted request log.
	logPath := filepath.Join(data, "log.db")
	growLog(t, data)
	f, err := os.OpenFile(logPath, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	st, _ := f.Stat()
	f.WriteAt([]byte(strings.Repeat("\xff\x00", 4096)), st.Size()/2/4096*4096+64)
	f.Close()
	out, _, code = c.Run("", "doctor")
	if code != 1 || !hasLine(out, "error", "log", "integrity check", "hint: ") {
		t.Fatalf("corrupted log: exit %d\n%s", code, out)
	}

	// A bad config: exit 2, named on stdout and stderr.
	cfg := filepath.Join(c.dir, "bad.toml")
	os.WriteFile(cfg, []byte("prot = 1\n"), 0o600)
	out, errs, code = c.Run("", "--config", cfg, "doctor")
	if code != 2 || !strings.Contains(out, "error  config") || !strings.Contains(errs, "prot") {
		t.Fatalf("bad config: exit %d\n%s%s", code, out, errs)
	}
}

// hasLine reports whether one line of out holds every part, in order.
func hasLine(out string, parts ...string) bool {
	for _, l := range strings.Split(out, "\n") {
		rest, ok := l, true
		for _, p := range parts {
			i := strings.Index(rest, p)
			if i < 0 {
				ok = false
				break
			}
			rest = rest[i+len(p):]
		}
		if ok {
			return true
		}
	}
	return false
}

// growLog writes request rows, so that the middle of log.db is data.
func growLog(t *testing.T, dataDir string) {
	t.Helper()
	db, err := store.OpenLog(dataDir)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var reqs []store.Request
	for i := 0; i < 500; i++ {
		reqs = append(reqs, store.Request{ID: fmt.Sprintf("grow-%04d", i), TS: time.Now().UnixMilli(), Method: "POST",
			Path: "/v1/messages", Model: "claude-sonnet-4-5", Account: "work", Status: 200, Error: strings.Repeat("x", 100)})
	}
	if err := store.InsertRequests(context.Background(), db, reqs, nil); err != nil {
		t.Fatal(err)
	}
}
