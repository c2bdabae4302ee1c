package commands_test

import (
	"database/sql"
	"encoding/json"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	_ "github.com/mattn/go-sqlite3"
)

func (c *runner) mustRunErr(stdin string, args ...string) (string, string) {
	c.t.Helper()
	out, errs, code := c.Run(stdin, args...)
	if code != 0 {
		c.t.Fatalf("claudeflare %v: exit %d: %s", args, code, errs)
	}
	return out, errs
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
