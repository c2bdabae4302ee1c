package commands_test

import (
	"crypto/sha256"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/claudeflare/claudeflare/internal/testutil"
	"github.com/claudeflare/claudeflare/store"
)

// Issue 11 (client keys): rows written into vault.db by someone without
// the master key carry no valid MAC, so a running daemon never loads them
// as keys, whatever they say: a planted admin key, a role raised from api
// to admin, a revoked key made live again. Keys made by claudeflare keep
// working. apikey list marks the rows tampered (exit 0), doctor fails,
// and the daemon warns about and audits each row once.
func TestDaemonRefusesClientKeysWrittenOutsideClaudeflare(t *testing.T) {
	c := newCLI(t)
	c.MustRun(c.fake.NewAPIKey("pool"), "accounts", "add", "pool", "--api-key-stdin")
	legit := strings.TrimSpace(c.MustRun("", "apikey", "create", "legit"))
	raised := strings.TrimSpace(c.MustRun("", "apikey", "create", "raised"))
	fired := strings.TrimSpace(c.MustRun("", "apikey", "create", "fired"))
	c.MustRun("", "apikey", "revoke", "fired")
	d := c.startDaemon()

	do := func(method, path, key string) int { return keyStatus(t, d.url, method, path, key) }
	if got := do("POST", "/v1/messages", raised); got != 200 {
		t.Fatalf("raised before tampering: %d", got)
	}
	if got := do("GET", "/metrics", raised); got != 403 {
		t.Fatalf("an api key on /metrics: %d", got)
	}

	// Someone who can write vault.db, but has no master key.
	db, err := store.OpenVault(filepath.Join(c.dir, "data"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	planted := "cf_planted-by-someone-who-can-write-vault-db-000"
	h := sha256.Sum256([]byte(planted))
	// The planted row even carries a MAC copied from a real row.
	if _, err := db.W.Exec(`INSERT INTO client_keys (name, prefix, hash, role, created_at, mac)
		SELECT 'intruder', 'cf_plante', ?, 'admin', created_at, mac FROM client_keys WHERE name = 'legit'`, h[:]); err != nil {
		t.Fatal(err)
	}
	if _, err := db.W.Exec(`UPDATE client_keys SET role = 'admin' WHERE name = 'raised'`); err != nil {
		t.Fatal(err)
	}
	if _, err := db.W.Exec(`UPDATE client_keys SET revoked_at = 0 WHERE name = 'fired'`); err != nil {
		t.Fatal(err)
	}
	// The daemon's next reload finds the three rows: wait for its warnings.
	warnRE := regexp.MustCompile(`a client key row failed authentication`)
	deadline := time.Now().Add(20 * time.Second)
	for len(warnRE.FindAllString(d.logs(), -1)) < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("no warnings for the tampered rows:\n%s", d.logs())
		}
		time.Sleep(50 * time.Millisecond) // paces the poll of the log
	}
	for _, tc := range []struct {
		name, method, path, key string
	}{
		{"planted admin key", "POST", "/v1/messages", planted},
		{"planted admin key on /metrics", "GET", "/metrics", planted},
		{"role raised to admin", "GET", "/metrics", raised},
		{"role raised to admin", "POST", "/v1/messages", raised},
		{"revoked key made live", "POST", "/v1/messages", fired},
	} {
		if got := do(tc.method, tc.path, tc.key); got != 401 {
			t.Errorf("%s: %s %s answered %d, want 401", tc.name, tc.method, tc.path, got)
		}
	}
	if got := do("POST", "/v1/messages", legit); got != 200 {
		t.Fatalf("the legit key after tampering: %d", got)
	}

	// Each row is reported once: a later reload (a new key, which works)
	// does not report them again.
	fresh := strings.TrimSpace(c.MustRun("", "apikey", "create", "fresh"))
	deadline = time.Now().Add(20 * time.Second)
	for do("POST", "/v1/messages", fresh) != 200 {
		if time.Now().After(deadline) {
			t.Fatalf("the new key is not accepted:\n%s", d.logs())
		}
		time.Sleep(50 * time.Millisecond) // paces the poll of the daemon
	}
	if n := len(warnRE.FindAllString(d.logs(), -1)); n != 3 {
		t.Fatalf("%d warnings, want one per tampered row:\n%s", n, d.logs())
	}
	if err := d.stop(t, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	audit := c.MustRun("", "audit", "--json")
	for _, name := range []string{"intruder", "raised", "fired"} {
		re := regexp.MustCompile(`"action":"client_key.tampered","detail":"client key row \d+ \(\\"` + name + `\\"`)
		if n := len(re.FindAllString(audit, -1)); n != 1 {
			t.Errorf("%d audit rows for %s:\n%s", n, name, audit)
		}
	}

	// apikey list names them tampered and succeeds; doctor fails on them.
	out, errs, code := c.Run("", "apikey", "list")
	if code != 0 || !strings.Contains(errs, "3 client key rows failed authentication") {
		t.Fatalf("apikey list: exit %d\n%s\n%s", code, out, errs)
	}
	for _, re := range []string{`(?m)^intruder\s+cf_plante\.\.\.\s+admin\s+tampered\s`, `(?m)^raised\s+\S+\s+admin\s+tampered\s`,
		`(?m)^fired\s+\S+\s+api\s+tampered\s`, `(?m)^legit\s+\S+\s+api\s+live\s`, `(?m)^fresh\s+\S+\s+api\s+live\s`} {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Errorf("apikey list does not match %s:\n%s", re, out)
		}
	}
	if js := c.MustRun("", "apikey", "list", "--json"); !strings.Contains(js, `"name":"intruder","prefix":"cf_plante","role":"admin","status":"tampered"`) {
		t.Errorf("apikey list --json:\n%s", js)
	}
	out, _, code = c.Run("", "doctor")
	if code != 1 || !strings.Contains(out, `client key "intruder" (role "admin", live) failed authentication`) ||
		!strings.Contains(out, "3 of 5 client keys failed authentication") {
		t.Fatalf("doctor: exit %d\n%s", code, out)
	}
	// Revoking a tampered live key authenticates its row as revoked.
	c.MustRun("", "apikey", "revoke", "intruder")
	c.MustRun("", "apikey", "revoke", "raised")
	c.MustRun("", "apikey", "revoke", "fired")
	out, _, code = c.Run("", "doctor")
	if code != 0 || !strings.Contains(out, "5 client keys, each with a valid MAC") {
		t.Fatalf("doctor after revoking them: exit %d\n%s", code, out)
	}
	if strings.Contains(d.logs()+audit, legit) || strings.Contains(d.logs()+audit, planted) {
		t.Fatal("a client key was logged")
	}
}

// Item 14 for client keys: the keys made by the previous release
// (testdata/upgrade/v1/client-keys.txt) get their MACs on the first open
// by the master key holder, which names them, and keep working in the
// daemon; a key planted afterwards does not.
func TestUpgradeV1ClientKeysKeepWorking(t *testing.T) {
	c := newCLI(t)
	c.copyV1Data()
	keys := strings.Fields(string(testutil.FirstReleaseFile(t, "client-keys.txt")))
	if len(keys) != 2 {
		t.Fatalf("fixture keys: %q", keys)
	}
	laptop, viewer := keys[0], keys[1]
	out, errs, code := c.Run("", "apikey", "list")
	if code != 0 || !strings.Contains(errs, `2 client keys made by an earlier release are now authenticated with the vault's key: "laptop" ("api"), "viewer1" ("viewer")`) ||
		!regexp.MustCompile(`(?m)^laptop\s+\S+\s+api\s+live\s`).MatchString(out) || strings.Contains(out, "tampered") {
		t.Fatalf("first open: exit %d\n%s\n%s", code, out, errs)
	}
	if _, errs = c.mustRunErr("", "apikey", "list"); strings.Contains(errs, "earlier release") {
		t.Fatalf("second open sealed again: %s", errs)
	}
	// A usable account (the fixture's API key is fake).
	c.MustRun(c.fake.NewAPIKey("pool2"), "accounts", "add", "pool2", "--api-key-stdin", "--priority", "0")
	c.MustRun("", "accounts", "pause", "pool")

	// A row planted after the upgrade, without a MAC, is not sealed by a
	// later open (nor by the daemon's).
	db, err := store.OpenVault(filepath.Join(c.dir, "data"))
	if err != nil {
		t.Fatal(err)
	}
	planted := "cf_planted-after-the-upgrade-0000000000000000000"
	h := sha256.Sum256([]byte(planted))
	if _, err := db.W.Exec(`INSERT INTO client_keys (name, prefix, hash, role, created_at) VALUES ('late', 'cf_plante', ?, 'admin', 1)`, h[:]); err != nil {
		t.Fatal(err)
	}
	db.Close()

	d := c.startDaemon()
	get := func(method, path, key string) int { return keyStatus(t, d.url, method, path, key) }
	if got := get("POST", "/v1/messages", laptop); got != 200 {
		t.Fatalf("v1 api key: %d\n%s", got, d.logs())
	}
	if got := get("GET", "/metrics", viewer); got != 200 {
		t.Fatalf("v1 viewer key on /metrics: %d", got)
	}
	if got := get("GET", "/metrics", planted); got != 401 {
		t.Fatalf("key planted after the upgrade: %d", got)
	}
	if err := d.stop(t, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if out, _, _ := c.Run("", "apikey", "list"); !regexp.MustCompile(`(?m)^late\s+\S+\s+admin\s+tampered\s`).MatchString(out) {
		t.Fatalf("planted row after the upgrade:\n%s", out)
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// keyStatus sends a one-token message request with client key key to
// base+path and returns the status code.
func keyStatus(t *testing.T, base, method, path, key string) int {
	t.Helper()
	req, _ := http.NewRequest(method, base+path, strings.NewReader(`{"model":"claude-sonnet-4-5","max_tokens":1,"messages":[{"role":"user","content":"x"}]}`))
	req.Header.Set("content-type", "application/json")
	req.Header.Set("x-api-key", key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}
