package commands_test

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// withDataDir returns env with CLAUDEFLARE_DATA_DIR replaced by dir.
func withDataDir(env []string, dir string) []string {
	var out []string
	for _, kv := range env {
		if !strings.HasPrefix(kv, "CLAUDEFLARE_DATA_DIR=") {
			out = append(out, kv)
		}
	}
	return append(out, "CLAUDEFLARE_DATA_DIR="+dir)
}

// traffic sends requests to base until stop is closed and counts the 200s.
func traffic(base string, stop chan struct{}, ok *atomic.Int64, wg *sync.WaitGroup) {
	defer wg.Done()
	body := `{"model":"claude-sonnet-4-5","max_tokens":64,"messages":[{"role":"user","content":"hi"}]}`
	for {
		select {
		case <-stop:
			return
		default:
		}
		resp, err := http.Post(base+"/v1/messages", "application/json", strings.NewReader(body))
		if err != nil {
			continue
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode == 200 {
			ok.Add(1)
		}
	}
}

// TestBackupUnderTrafficAndRestore takes a backup while a daemon serves
// requests, restores it into an empty data dir, and starts a daemon there
// that serves with every account.
func TestBackupUnderTrafficAndRestore(t *testing.T) {
	c := newCLI(t)
	c.MustRun("", "init")
	accounts := []string{"alpha", "bravo", "charlie"}
	for _, name := range accounts {
		c.MustRun(c.fake.NewOAuthAccount(name), "accounts", "add", name, "--refresh-token-stdin")
	}
	c.MustRun(c.fake.NewAPIKey("delta")+"\n", "accounts", "add", "delta", "--api-key-stdin")
	accounts = append(accounts, "delta")
	src := filepath.Join(c.dir, "data")

	c.Env = append(c.Env, "LB_STRATEGY=round-robin")
	d := c.startDaemon()
	stop := make(chan struct{})
	var ok atomic.Int64
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go traffic(d.url, stop, &ok, &wg)
	}
	// Wait until the request log has rows (the recorder writes in batches).
	for deadline := time.Now().Add(20 * time.Second); ok.Load() < 50 || countRequests(t, c.MustRun) < 20; {
		if time.Now().After(deadline) {
			t.Fatalf("no traffic: %d ok\n%s", ok.Load(), d.logs())
		}
		time.Sleep(50 * time.Millisecond)
	}
	file := filepath.Join(c.dir, "cf.backup")
	okBefore := ok.Load()
	_, errs, code := c.Run("", "backup", file)
	okAfter := ok.Load()
	close(stop)
	wg.Wait()
	if code != 0 {
		t.Fatalf("backup: exit %d: %s", code, errs)
	}
	if okAfter == okBefore {
		t.Log("no request completed during the backup")
	}
	if errs != "" { // not a terminal: a success says nothing (cron mails only failures)
		t.Errorf("backup stderr: %q", errs)
	}
	if st, err := os.Stat(file); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("backup file: %v %v", err, st)
	}
	raw, _ := os.ReadFile(file)
	for _, tok := range c.fake.AllTokens() {
		if strings.Contains(string(raw), tok) {
			t.Fatal("backup holds a plaintext token")
		}
	}
	if err := d.stop(t, syscall.SIGTERM); err != nil {
		t.Fatalf("daemon: %v", err)
	}
	// The log the backup holds is a prefix of the live one.
	srcRequests := countRequests(t, c.MustRun)

	// Restore into an empty dir: without the key it cannot.
	dst := filepath.Join(c.dir, "restored")
	r := *c // the same fake API, another data dir
	r.Env = withDataDir(c.Env, dst)
	_, errs, code = r.Run("", "restore", file)
	if code != 1 || !strings.Contains(errs, "hint: give the master key") {
		t.Fatalf("restore without key: exit %d: %s", code, errs)
	}
	// With the source's identity file it does.
	_, errs, code = r.Run("", "--identity", filepath.Join(src, "identity.txt"), "restore", file)
	if code != 0 || !strings.Contains(errs, "restored log.db, vault.db, identity.txt into "+dst) {
		t.Fatalf("restore: exit %d: %s", code, errs)
	}
	// A second restore over the now live vault is refused.
	_, errs, code = r.Run("", "restore", file)
	if code != 1 || !strings.Contains(errs, "already has a vault") || !strings.Contains(errs, "--force") {
		t.Fatalf("restore over a vault: exit %d: %s", code, errs)
	}
	restored := countRequests(t, r.MustRun)
	if restored == 0 || restored > srcRequests {
		t.Fatalf("restored %d requests; the source has %d", restored, srcRequests)
	}
	if out := r.MustRun("", "doctor"); !strings.Contains(out, "4 accounts, 4 usable") {
		t.Fatalf("doctor on the restored dir:\n%s", out)
	}

	// A daemon on the restored dir serves with every account.
	r.Env = append(r.Env, "LB_STRATEGY=round-robin")
	rd := r.startDaemon()
	c.fake.ResetRequests()
	for i := 0; i < 4*len(accounts); i++ {
		resp, body := postMessages(t, rd.url, false)
		if resp.StatusCode != 200 {
			t.Fatalf("restored daemon: %d %s\n%s", resp.StatusCode, body, rd.logs())
		}
	}
	served := map[string]int{}
	for _, rec := range c.fake.Requests() {
		if rec.Path == "/v1/messages" && rec.Status == 200 {
			served[rec.Account]++
		}
	}
	var names []string
	for n := range served {
		names = append(names, n)
	}
	sort.Strings(names)
	if strings.Join(names, ",") != strings.Join(accounts, ",") {
		t.Fatalf("restored daemon served with %v, want every account %v", served, accounts)
	}
	// Restore refuses while that daemon runs, even with --force.
	_, errs, code = r.Run("", "restore", "--force", file)
	if code != 1 || !strings.Contains(errs, "daemon is running") {
		t.Fatalf("restore under a daemon: exit %d: %s", code, errs)
	}
	rd.stop(t, syscall.SIGTERM)

	// --force replaces it; stdin works as FILE.
	in, _ := os.ReadFile(file)
	_, errs, code = r.Run(string(in), "restore", "--force", "-")
	if code != 0 {
		t.Fatalf("restore --force -: exit %d: %s", code, errs)
	}
}

func countRequests(t *testing.T, mustRun func(stdin string, args ...string) string) int {
	t.Helper()
	out := mustRun("", "accounts", "list", "--json")
	n := 0
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		var a struct {
			Requests int `json:"requests"`
		}
		if err := json.Unmarshal([]byte(l), &a); err != nil {
			t.Fatalf("accounts list: %q: %v", l, err)
		}
		n += a.Requests
	}
	return n
}

func TestBackupErrors(t *testing.T) {
	c := newCLI(t)
	_, errs, code := c.Run("", "backup")
	if code != 2 {
		t.Fatalf("no FILE: exit %d %s", code, errs)
	}
	_, errs, code = c.Run("", "backup", filepath.Join(c.dir, "x"))
	if code != 1 || !strings.Contains(errs, "nothing to back up") {
		t.Fatalf("no vault: exit %d %s", code, errs)
	}
	if _, err := os.Stat(filepath.Join(c.dir, "data")); err == nil {
		t.Error("backup created a data dir")
	}
	c.MustRun("", "init")
	_, errs, code = c.Run("", "backup", filepath.Join(c.dir, "no-such-dir", "x"))
	if code != 1 || !strings.HasPrefix(errs, "claudeflare: ") {
		t.Fatalf("bad path: exit %d %s", code, errs)
	}
	if left, _ := filepath.Glob(filepath.Join(c.dir, "data", ".backup-*")); len(left) > 0 {
		t.Fatalf("left behind: %v", left)
	}
	// Vault only, to stdout.
	out, errs, code := c.Run("", "backup", "--no-log", "-")
	if code != 0 || !strings.HasPrefix(out, "age-encryption.org/v1") || errs != "" {
		t.Fatalf("backup -: exit %d %s", code, errs)
	}
}
