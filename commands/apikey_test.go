package commands_test

import (
	"bufio"
	"database/sql"
	"encoding/json"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	_ "github.com/mattn/go-sqlite3"
)

var clientKeyRE = regexp.MustCompile(`^cf_[A-Za-z0-9_-]{43}\n$`)

func TestAPIKeyCommands(t *testing.T) {
	c := newCLI(t)
	out, errs, code := c.Run("", "apikey", "create", "laptop")
	if code != 0 || !clientKeyRE.MatchString(out) {
		t.Fatalf("create: exit %d, stdout %q, stderr %s", code, out, errs)
	}
	laptop := strings.TrimSpace(out)
	if !strings.Contains(errs, `client key "laptop" (`+laptop[:11]+`...) created with role api`) {
		t.Fatalf("create stderr: %s", errs)
	}
	// Flags after the name, as after any positional argument.
	out = c.MustRun("", "apikey", "create", "grafana", "--role", "viewer")
	grafana := strings.TrimSpace(out)
	if !clientKeyRE.MatchString(out) || grafana == laptop {
		t.Fatalf("second key %q", out)
	}

	for _, tc := range []struct {
		args []string
		code int
		err  string
	}{
		{[]string{"apikey", "create", "laptop"}, 1, `a client key with this name already exists: "laptop"`},
		{[]string{"apikey", "create", "x", "--role", "root"}, 2, `--role: unknown role "root"`},
		{[]string{"apikey", "create", "bad name"}, 2, "invalid client key name"},
		{[]string{"apikey", "create"}, 2, "needs exactly one key NAME"},
		{[]string{"apikey", "revoke", "nobody"}, 1, `no such client key: "nobody"`},
		{[]string{"apikey", "list", "extra"}, 2, "takes no arguments"},
	} {
		out, errs, code := c.Run("", tc.args...)
		if code != tc.code || !strings.Contains(errs, tc.err) || out != "" {
			t.Errorf("%v: exit %d, stdout %q, stderr %q; want exit %d and %q", tc.args, code, out, errs, tc.code, tc.err)
		}
	}

	table := c.MustRun("", "apikey", "list")
	if !regexp.MustCompile(`(?m)^laptop\s+cf_\S{8}\.\.\.\s+api\s+live\s`).MatchString(table) ||
		!regexp.MustCompile(`(?m)^grafana\s+cf_\S{8}\.\.\.\s+viewer\s+live\s`).MatchString(table) {
		t.Fatalf("list:\n%s", table)
	}
	lines := c.MustRun("", "apikey", "list", "--json")
	sc := bufio.NewScanner(strings.NewReader(lines))
	var n int
	for sc.Scan() {
		var k map[string]any
		if err := json.Unmarshal(sc.Bytes(), &k); err != nil {
			t.Fatalf("not NDJSON: %q", sc.Text())
		}
		for _, f := range []string{"name", "prefix", "role", "status", "created_at", "last_used_at", "revoked_at"} {
			if _, ok := k[f]; !ok {
				t.Fatalf("no %s in %q", f, sc.Text())
			}
		}
		n++
	}
	if n != 2 {
		t.Fatalf("%d keys listed", n)
	}

	_, errs = c.mustRunErr("", "apikey", "revoke", "laptop")
	if !strings.Contains(errs, `client key "laptop" revoked`) || strings.Contains(errs, "no client keys remain") {
		t.Fatalf("revoke: %s", errs)
	}
	if !regexp.MustCompile(`(?m)^laptop\s+\S+\s+api\s+revoked\s`).MatchString(c.MustRun("", "apikey", "list")) {
		t.Fatal("revoked key not shown as revoked")
	}
	_, errs = c.mustRunErr("", "apikey", "revoke", "grafana")
	if !strings.Contains(errs, "no client keys remain") {
		t.Fatalf("no warning when the last key goes: %s", errs)
	}
	// A revoked key's name may be used again.
	c.MustRun("", "apikey", "create", "laptop")

	// Neither key is anywhere in plaintext: outputs, data dir.
	all := table + lines + c.MustRun("", "apikey", "list", "--json") + c.MustRun("", "audit", "--json")
	for _, k := range []string{laptop, grafana} {
		if strings.Contains(all, k) {
			t.Fatal("a key is printed again after create")
		}
	}
	filepath.WalkDir(filepath.Join(c.dir, "data"), func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, _ := os.ReadFile(p)
		for _, k := range []string{laptop, grafana} {
			if strings.Contains(string(b), k) {
				t.Errorf("%s holds a client key in plaintext", p)
			}
		}
		return nil
	})
}

func (c *runner) mustRunErr(stdin string, args ...string) (string, string) {
	c.t.Helper()
	out, errs, code := c.Run(stdin, args...)
	if code != 0 {
		c.t.Fatalf("claudeflare %v: exit %d: %s", args, code, errs)
	}
	return out, errs
}

func TestDaemonRefusesNonLoopbackWithOnlyRevokedKeys(t *testing.T) {
	c := newCLI(t)
	c.MustRun("", "apikey", "create", "gone")
	c.MustRun("", "apikey", "revoke", "gone")
	_, errs, code := c.Run("", "daemon", "--host", "0.0.0.0", "--port", "0")
	if code != 1 || !strings.Contains(errs, "non-loopback") {
		t.Fatalf("exit %d: %s", code, errs)
	}
}

func TestAuditCommand(t *testing.T) {
	c := newCLI(t)
	c.MustRun("", "apikey", "create", "a")
	c.MustRun("", "apikey", "create", "b", "--role", "admin")
	c.MustRun("", "apikey", "revoke", "a")

	table := c.MustRun("", "audit")
	for _, want := range []string{`client_key.created\s+client key "a"`, `client_key.created\s+client key "b" .* role admin`, `client_key.revoked\s+client key "a"`} {
		if !regexp.MustCompile(`(?m)^\d+\s+20\S+Z\s+cli\S*\s+` + want).MatchString(table) {
			t.Errorf("audit table lacks %s:\n%s", want, table)
		}
	}
	js := c.MustRun("", "audit", "--json", "--since", "1h")
	rows := strings.Split(strings.TrimSpace(js), "\n")
	// Row 1 started the keyed chain (the first command with the master key).
	if len(rows) != 4 || !strings.Contains(rows[0], `"action":"audit.keyed"`) {
		t.Fatalf("audit --json: %q", js)
	}
	var row struct {
		ID     int64  `json:"id"`
		Time   string `json:"time"`
		Actor  string `json:"actor"`
		Action string `json:"action"`
		Detail string `json:"detail"`
		Hash   string `json:"hash"`
	}
	if err := json.Unmarshal([]byte(rows[3]), &row); err != nil || row.ID != 4 || row.Action != "client_key.revoked" || len(row.Hash) != 64 || !strings.HasSuffix(row.Time, "Z") {
		t.Fatalf("row: %+v %v", row, err)
	}
	if out := c.MustRun("", "audit", "--since", "0s"); strings.Contains(out, "client_key") {
		t.Fatalf("--since 0s lists old rows:\n%s", out)
	}
	if _, errs, code := c.Run("", "audit", "--since", "yesterday"); code != 2 || !strings.Contains(errs, "--since") {
		t.Fatalf("bad --since: exit %d %s", code, errs)
	}

	if out := c.MustRun("", "audit", "--verify"); !regexp.MustCompile(`^audit log verified: 4 entries, head [0-9a-f]{64} \(row 4\)\n$`).MatchString(out) {
		t.Fatalf("verify: %q", out)
	}
	if out := c.MustRun("", "audit", "--verify", "--json"); !regexp.MustCompile(`^\{"verified":true,"entries":4,"last_id":4,"head":"[0-9a-f]{64}","legacy_entries":0\}\n$`).MatchString(out) {
		t.Fatalf("verify --json: %q", out)
	}

	// Someone edits row 3 with an SQL shell.
	vaultDB := filepath.Join(c.dir, "data", "vault.db")
	edit := `UPDATE audit_log SET detail = 'client key "b" created with role api' WHERE id = 3`
	if bin, err := exec.LookPath("sqlite3"); err == nil {
		if out, err := exec.Command(bin, vaultDB, edit).CombinedOutput(); err != nil {
			t.Fatalf("sqlite3: %v %s", err, out)
		}
	} else {
		db, err := sql.Open("sqlite3", vaultDB)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := db.Exec(edit); err != nil {
			t.Fatal(err)
		}
		db.Close()
	}
	out, errs, code := c.Run("", "audit", "--verify")
	if code != 1 || out != "" || !strings.Contains(errs, "claudeflare: audit log tampered with at row 3: its MAC does not match its content") ||
		!strings.Contains(errs, "hint: ") {
		t.Fatalf("verify after an edit: exit %d, stdout %q, stderr %s", code, out, errs)
	}
}

func TestAccountEventsAudited(t *testing.T) {
	c := newCLI(t)
	c.MustRun(c.fake.NewAPIKey("pool")+"\n", "accounts", "add", "pool", "--api-key-stdin")
	c.MustRun("", "accounts", "pause", "pool")
	c.MustRun("", "accounts", "resume", "pool")
	c.MustRun("", "accounts", "remove", "pool", "--force")
	out := c.MustRun("", "audit")
	for _, want := range []string{`account.added\s+account "pool" added`, `account.paused\s+account "pool" paused`,
		`account.resumed\s+account "pool" resumed`, `account.removed\s+account "pool" removed`} {
		if !regexp.MustCompile(`(?m)\scli\S*\s+` + want + `$`).MatchString(out) {
			t.Errorf("audit lacks %s:\n%s", want, out)
		}
	}
	c.MustRun("", "audit", "--verify")
}
