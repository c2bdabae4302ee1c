package access_test

import (
	"context"
	"errors"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/claudeflare/claudeflare/access"
	"github.com/claudeflare/claudeflare/store"
)

// auditDB makes a vault with five audit rows.
func auditDB(t *testing.T) *store.DB {
	t.Helper()
	db, err := store.OpenVault(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	ctx := context.Background()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i, a := range []string{access.ActionAccountAdded, access.ActionAccountPaused, access.ActionClientKeyCreated, access.ActionKeyRotated, access.ActionConfigReloaded} {
		if err := access.AuditAt(ctx, db, t0.Add(time.Duration(i)*time.Hour), "cli:alice", a, "row "+a); err != nil {
			t.Fatal(err)
		}
	}
	if n, err := access.VerifyAudit(ctx, db); err != nil || n != 5 {
		t.Fatalf("fresh chain: %d rows, %v", n, err)
	}
	return db
}

// sql edits the database as someone with a shell would: with the sqlite3
// CLI when it is installed, else through database/sql.
func sql(t *testing.T, db *store.DB, stmt string) {
	t.Helper()
	if bin, err := exec.LookPath("sqlite3"); err == nil {
		out, err := exec.Command(bin, db.Path, stmt).CombinedOutput()
		if err != nil {
			t.Fatalf("sqlite3: %v: %s", err, out)
		}
		return
	}
	if _, err := db.W.Exec(stmt); err != nil {
		t.Fatal(err)
	}
}

func wantTampered(t *testing.T, db *store.DB, row int64, reason string) {
	t.Helper()
	_, err := access.VerifyAudit(context.Background(), db)
	var ce *access.ChainError
	if !errors.As(err, &ce) || !errors.Is(err, access.ErrTampered) {
		t.Fatalf("verify after tampering: %v", err)
	}
	if ce.ID != row || !strings.Contains(ce.Reason, reason) {
		t.Fatalf("verify names row %d (%s), want row %d (%s)", ce.ID, ce.Reason, row, reason)
	}
}

func TestAuditEditedRowDetected(t *testing.T) {
	db := auditDB(t)
	sql(t, db, `UPDATE audit_log SET detail = 'nothing to see' WHERE id = 3`)
	wantTampered(t, db, 3, "edited")
}

func TestAuditRehashedRowDetected(t *testing.T) {
	db := auditDB(t)
	// Someone who edits a row and recomputes its hash breaks the next link.
	sql(t, db, `UPDATE audit_log SET actor = 'cli:mallory', hash = randomblob(32) WHERE id = 2`)
	wantTampered(t, db, 2, "edited")
}

func TestAuditDeletedRowDetected(t *testing.T) {
	db := auditDB(t)
	sql(t, db, `DELETE FROM audit_log WHERE id = 2`)
	wantTampered(t, db, 3, "deleted")
}

func TestAuditDeletedFirstRowDetected(t *testing.T) {
	db := auditDB(t)
	sql(t, db, `DELETE FROM audit_log WHERE id = 1`)
	wantTampered(t, db, 2, "deleted")
}

func TestAuditTruncatedTailDetected(t *testing.T) {
	db := auditDB(t)
	sql(t, db, `DELETE FROM audit_log WHERE id >= 4`)
	wantTampered(t, db, 5, "deleted")
	// Appending afterwards does not hide it.
	if err := access.Audit(context.Background(), db, "daemon", access.ActionConfigReloaded, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := access.VerifyAudit(context.Background(), db); !errors.Is(err, access.ErrTampered) {
		t.Fatalf("verify after tail cut and append: %v", err)
	}
}

func TestAuditEmptiedDetected(t *testing.T) {
	db := auditDB(t)
	sql(t, db, `DELETE FROM audit_log`)
	wantTampered(t, db, 0, "every row")
}

func TestAuditSanitisesAndLists(t *testing.T) {
	db, err := store.OpenVault(filepath.Join(t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx := context.Background()
	secret := "cf_" + strings.Repeat("Zx9", 14)
	if err := access.Audit(ctx, db, "cli:bob", access.ActionClientKeyCreated, "oops "+secret+"\nsecond line"); err != nil {
		t.Fatal(err)
	}
	var got []access.Entry
	access.ListAudit(ctx, db, time.Now().Add(-time.Minute), func(e access.Entry) error { got = append(got, e); return nil })
	if len(got) != 1 || strings.Contains(got[0].Detail, secret) || strings.Contains(got[0].Detail, "\n") {
		t.Fatalf("entry: %+v", got)
	}
	got = nil
	access.ListAudit(ctx, db, time.Now().Add(time.Minute), func(e access.Entry) error { got = append(got, e); return nil })
	if len(got) != 0 {
		t.Fatal("--since not applied")
	}
}
