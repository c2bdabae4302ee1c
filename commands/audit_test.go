package commands_test

import (
	"crypto/sha256"
	"database/sql"
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/claudeflare/claudeflare/internal/testutil"
)

// auditSQL edits vault.db as someone with a shell would: with the sqlite3
// CLI when it is installed, else through database/sql.
func auditSQL(t *testing.T, c *runner, stmt string) {
	t.Helper()
	path := filepath.Join(c.dir, "data", "vault.db")
	if bin, err := exec.LookPath("sqlite3"); err == nil {
		if out, err := exec.Command(bin, path, stmt).CombinedOutput(); err != nil {
			t.Fatalf("sqlite3: %v %s", err, out)
		}
		return
	}
	db, err := sql.Open("sqlite3", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(stmt); err != nil {
		t.Fatal(err)
	}
}

// auditRechain is the short script of the issue: recompute every row's
// link from row `from` on with plain SHA-256 (all an attacker without the
// key can do) and move the head.
func auditRechain(t *testing.T, c *runner, from int64) {
	t.Helper()
	db, err := sql.Open("sqlite3", filepath.Join(c.dir, "data", "vault.db"))
	if err != nil {
		t.Fatal(err)
	}
	rows, err := db.Query(`SELECT id, ts, actor, action, detail, hash FROM audit_log ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	prev := make([]byte, 32)
	var stmts []string
	for rows.Next() {
		var id, ts int64
		var actor, action, detail string
		var hash []byte
		if err := rows.Scan(&id, &ts, &actor, &action, &detail, &hash); err != nil {
			t.Fatal(err)
		}
		if id < from {
			prev = hash
			continue
		}
		b, _ := json.Marshal([]any{id, ts, actor, action, detail})
		h := sha256.Sum256(append(append([]byte{}, prev...), b...))
		stmts = append(stmts, fmt.Sprintf(`UPDATE audit_log SET prev_hash = X'%x', hash = X'%x' WHERE id = %d;`, prev, h[:], id),
			fmt.Sprintf(`UPDATE audit_head SET last_id = %d, hash = X'%x';`, id, h[:]))
		prev = h[:]
	}
	rows.Close()
	db.Close()
	auditSQL(t, c, strings.Join(stmts, "\n"))
}

// auditCLI is a data dir whose audit log holds 6 rows: the row that
// started the keyed chain, then five events.
func auditCLI(t *testing.T) *runner {
	t.Helper()
	c := newCLI(t)
	c.MustRun("", "apikey", "create", "a")
	c.MustRun("", "apikey", "create", "b")
	c.MustRun("", "apikey", "create", "c")
	c.MustRun("", "apikey", "revoke", "a")
	c.MustRun("", "apikey", "revoke", "b")
	if out := c.MustRun("", "audit", "--verify"); !strings.Contains(out, "6 entries") {
		t.Fatalf("verify: %s", out)
	}
	return c
}

func wantVerifyFails(t *testing.T, c *runner, args []string, want string) {
	t.Helper()
	out, errs, code := c.Run("", append([]string{"audit", "--verify"}, args...)...)
	if code != 1 || out != "" || !strings.Contains(errs, "claudeflare: "+want) || !strings.Contains(errs, "\nhint: ") {
		t.Fatalf("audit --verify %v: exit %d, stdout %q, stderr %s\nwant %q", args, code, out, errs, want)
	}
}

// The attacks of issue 11 item 3 that re-chain rows with plain SHA-256,
// each with plain SQL on the real vault.db. The ones that only delete rows
// are in testdata/script/audit_tamper.txtar.
func TestAuditVerifyCatchesTampering(t *testing.T) {
	t.Run("edit and re-chain", func(t *testing.T) {
		c := auditCLI(t)
		auditSQL(t, c, `UPDATE audit_log SET actor = 'cli:nobody' WHERE id = 4`)
		auditRechain(t, c, 4)
		wantVerifyFails(t, c, nil, "audit log tampered with at row 4: its MAC does not match its content")
	})
	t.Run("re-chain everything", func(t *testing.T) {
		c := auditCLI(t)
		auditSQL(t, c, `DELETE FROM audit_log WHERE id = 2`)
		auditSQL(t, c, `UPDATE audit_log SET id = id - 1 WHERE id > 2`)
		auditRechain(t, c, 1)
		wantVerifyFails(t, c, nil, "audit log tampered with: the vault has had an audit key, but its 5 rows carry no MAC")
	})
}

// Item 14: a log made by the previous release verifies and is keyed by
// the first command that opens the vault with the master key, which says so.
func TestAuditLegacyChainUpgrade(t *testing.T) {
	c := newCLI(t)
	testutil.CopyFirstRelease(t, filepath.Join(c.dir, "data"))
	// The first command that opens the vault with the master key keys
	// the log, whatever it does, and says so.
	_, errs, code := c.Run("", "payload", "export", "--output", filepath.Join(c.dir, "p.ndjson"))
	if code != 0 || !strings.Contains(errs, "claudeflare: the audit log made by an earlier release (3 entries) verified as a plain hash chain; it is now keyed") {
		t.Fatalf("first open: exit %d %s", code, errs)
	}
	out, errs, code := c.Run("", "audit", "--verify")
	if code != 0 || strings.Contains(errs, "earlier release") || !strings.Contains(out, "audit log verified: 4 entries") ||
		!strings.Contains(out, "rows 1 to 3 were made by an earlier release") {
		t.Fatalf("verify: exit %d\n%s\n%s", code, out, errs)
	}
	list := c.MustRun("", "audit")
	if !regexp.MustCompile(`(?m)^4\s+\S+\s+cli\S*\s+audit\.keyed\s+audit chain keyed: 3 earlier entries`).MatchString(list) {
		t.Fatalf("no audit.keyed row:\n%s", list)
	}
	// Said once only.
	if _, errs, _ := c.Run("", "audit", "--verify"); strings.Contains(errs, "earlier release") {
		t.Fatalf("keyed again: %s", errs)
	}
	// From now on, a rewrite of the old rows with plain hashes is caught.
	auditSQL(t, c, `UPDATE audit_log SET detail = 'nothing' WHERE id = 2`)
	auditRechain(t, c, 2)
	wantVerifyFails(t, c, nil, "audit log tampered with: the vault has had an audit key, but its 4 rows carry no MAC")
}
