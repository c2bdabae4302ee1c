package audit_test

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/claudeflare/claudeflare/audit"
	"github.com/claudeflare/claudeflare/internal/testutil"
	"github.com/claudeflare/claudeflare/store"
	"github.com/claudeflare/claudeflare/vault"
)

// auditKey returns v's audit key, the way every writer gets it.
func auditKey(t *testing.T, v *vault.Vault) []byte {
	t.Helper()
	p, err := audit.Prepare(context.Background(), v, time.Now(), "test", true)
	if err != nil {
		t.Fatal(err)
	}
	if p.Problem != nil {
		t.Fatalf("prepare audit: %v", p.Problem)
	}
	return p.Key
}

type auditVault struct {
	dir string
	db  *store.DB
	v   *vault.Vault
	key []byte
}

func openAuditVault(t *testing.T, dir string) *auditVault {
	t.Helper()
	db, err := store.OpenVault(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	v, err := vault.Open(context.Background(), db, vault.KeySource{DataDir: dir}, vault.Options{Create: true})
	if err != nil {
		t.Fatal(err)
	}
	return &auditVault{dir: dir, db: db, v: v}
}

// auditDB makes a real vault whose audit log holds the row that started
// the keyed chain and five more: rows 1 to 6.
func auditDB(t *testing.T) *auditVault {
	t.Helper()
	a := openAuditVault(t, t.TempDir())
	a.key = auditKey(t, a.v)
	ctx := context.Background()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i, act := range []string{audit.ActionAccountAdded, audit.ActionAccountPaused, audit.ActionClientKeyCreated, audit.ActionKeyRotated, audit.ActionConfigReloaded} {
		if err := audit.WriteAt(ctx, a.db, a.key, t0.Add(time.Duration(i)*time.Hour), "cli:alice", act, "row "+act); err != nil {
			t.Fatal(err)
		}
	}
	if st, err := audit.Verify(ctx, a.db, a.key, nil); err != nil || st.Entries != 6 || !st.Keyed || st.LastID != 6 {
		t.Fatalf("fresh chain: %+v, %v", st, err)
	}
	return a
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

func wantTampered(t *testing.T, a *auditVault, expect []byte, row int64, reason string) {
	t.Helper()
	_, err := audit.Verify(context.Background(), a.db, a.key, expect)
	var ce *audit.ChainError
	if !errors.As(err, &ce) || !errors.Is(err, audit.ErrTampered) {
		t.Fatalf("verify after tampering: %v", err)
	}
	if ce.ID != row || !strings.Contains(ce.Reason, reason) {
		t.Fatalf("verify names row %d (%s), want row %d (%s)", ce.ID, ce.Reason, row, reason)
	}
}

// wantProblem is wantTampered as `audit --verify` sees it: Prepare
// knows whether the vault's log must be keyed.
func wantProblem(t *testing.T, a *auditVault, reason string) {
	t.Helper()
	p, err := audit.Prepare(context.Background(), a.v, time.Now(), "cli:bob", false)
	if err != nil {
		t.Fatal(err)
	}
	if p.Problem == nil || !errors.Is(p.Problem, audit.ErrTampered) || !strings.Contains(p.Problem.Error(), reason) || p.Sealed {
		t.Fatalf("after tampering: %+v, want a problem with %q", p, reason)
	}
}

// rechain recomputes every row's hash from row `from` on as an attacker
// without the key would (the unkeyed SHA-256 link of the first release)
// to row `to` (0: the last) and moves the head, with plain SQL.
func rechain(t *testing.T, db *store.DB, from, to int64) {
	t.Helper()
	var rows []audit.Entry
	if err := db.R.Select(&rows, `SELECT id, ts, actor, action, detail, prev_hash, hash FROM audit_log ORDER BY id`); err != nil {
		t.Fatal(err)
	}
	prev := make([]byte, 32)
	var stmts []string
	for _, e := range rows {
		if e.ID < from {
			prev = e.Hash
			continue
		}
		if to != 0 && e.ID > to {
			break
		}
		b, _ := json.Marshal([]any{e.ID, e.TS, e.Actor, e.Action, e.Detail})
		h := sha256.Sum256(append(append([]byte{}, prev...), b...))
		stmts = append(stmts, fmt.Sprintf(`UPDATE audit_log SET prev_hash = X'%x', hash = X'%x' WHERE id = %d;`, prev, h[:], e.ID))
		stmts = append(stmts, fmt.Sprintf(`UPDATE audit_head SET last_id = %d, hash = X'%x';`, e.ID, h[:]))
		prev = h[:]
	}
	sql(t, db, strings.Join(stmts, "\n"))
}

func TestAuditEditedRowDetected(t *testing.T) {
	a := auditDB(t)
	sql(t, a.db, `UPDATE audit_log SET detail = 'nothing to see' WHERE id = 3`)
	wantTampered(t, a, nil, 3, "edited")
}

func TestAuditRehashedRowDetected(t *testing.T) {
	a := auditDB(t)
	sql(t, a.db, `UPDATE audit_log SET actor = 'cli:mallory', hash = randomblob(32) WHERE id = 2`)
	wantTampered(t, a, nil, 2, "edited")
}

// The attack the unkeyed chain let through: edit a row, then recompute
// every hash after it and the head with a short script.
func TestAuditEditedAndRechainedDetected(t *testing.T) {
	a := auditDB(t)
	sql(t, a.db, `UPDATE audit_log SET actor = 'cli:mallory' WHERE id = 4`)
	rechain(t, a.db, 4, 0)
	wantTampered(t, a, nil, 4, "re-chained without the audit key")
	// Re-chaining the whole log without the key leaves no keyed row,
	// which the vault's audit key rules out.
	rechain(t, a.db, 1, 0)
	wantProblem(t, a, "carry no MAC")
}

func TestAuditDeletedRowDetected(t *testing.T) {
	a := auditDB(t)
	sql(t, a.db, `DELETE FROM audit_log WHERE id = 3`)
	wantTampered(t, a, nil, 4, "row 3 was deleted")
}

func TestAuditDeletedFirstRowDetected(t *testing.T) {
	a := auditDB(t)
	sql(t, a.db, `DELETE FROM audit_log WHERE id = 1`)
	wantTampered(t, a, nil, 2, "row 1 was deleted")
}

// Ids must run from 1 without gaps, even when the links are recomputed.
func TestAuditRenumberedDetected(t *testing.T) {
	a := auditDB(t)
	sql(t, a.db, `DELETE FROM audit_log WHERE id = 3; UPDATE audit_log SET id = id + 10 WHERE id > 3`)
	wantTampered(t, a, nil, 14, "rows 3 to 13 were deleted")
}

func TestAuditTruncatedTailDetected(t *testing.T) {
	a := auditDB(t)
	sql(t, a.db, `DELETE FROM audit_log WHERE id >= 5`)
	wantTampered(t, a, nil, 6, "rows after row 4 were deleted")
	// Appending afterwards does not hide it.
	if err := audit.Write(context.Background(), a.db, a.key, "daemon", audit.ActionConfigReloaded, ""); err != nil {
		t.Fatal(err)
	}
	wantTampered(t, a, nil, 7, "rows 5 to 6 were deleted")
}

// Cutting the newest rows and moving the head back leaves a chain that
// looks as it did earlier: only an anchored head finds it.
func TestAuditTruncatedTailWithHeadMovedNeedsAnchor(t *testing.T) {
	a := auditDB(t)
	ctx := context.Background()
	st, err := audit.Verify(ctx, a.db, a.key, nil)
	if err != nil {
		t.Fatal(err)
	}
	anchor := st.Head // what `audit --head` printed and was kept elsewhere
	// A head the chain passed through verifies too: rows appended since.
	if err := audit.Write(ctx, a.db, a.key, "daemon", audit.ActionConfigReloaded, "after the anchor"); err != nil {
		t.Fatal(err)
	}
	if st, err := audit.Verify(ctx, a.db, a.key, anchor); err != nil || st.ExpectedAt != 6 {
		t.Fatalf("anchored head 6 then one more row: %+v %v", st, err)
	}
	sql(t, a.db, `DELETE FROM audit_log WHERE id >= 5;
		UPDATE audit_head SET last_id = 4, hash = (SELECT hash FROM audit_log WHERE id = 4)`)
	if _, err := audit.Verify(ctx, a.db, a.key, nil); err != nil {
		t.Fatalf("without an anchor the cut is invisible (documented), got %v", err)
	}
	wantTampered(t, a, anchor, 0, "is not a row of the chain")
	// A later append leaves a gap: AUTOINCREMENT never reuses row 7's id.
	if err := audit.Write(ctx, a.db, a.key, "daemon", audit.ActionConfigReloaded, ""); err != nil {
		t.Fatal(err)
	}
	wantTampered(t, a, nil, 8, "rows 5 to 7 were deleted")
}

func TestAuditEmptiedDetected(t *testing.T) {
	a := auditDB(t)
	sql(t, a.db, `DELETE FROM audit_log`)
	wantTampered(t, a, nil, 0, "every row")
}

// Deleting every row and the head: the vault's authenticated metadata
// says it has an audit key, so the log cannot be new.
func TestAuditWipedDetected(t *testing.T) {
	a := auditDB(t)
	sql(t, a.db, `DELETE FROM audit_log; DELETE FROM audit_head; DELETE FROM sqlite_sequence`)
	ctx := context.Background()
	// A reader reports it and writes nothing.
	p, err := audit.Prepare(ctx, a.v, time.Now(), "cli:bob", false)
	if err != nil {
		t.Fatal(err)
	}
	if p.Problem == nil || !strings.Contains(p.Problem.Error(), "every row and the head were deleted") || p.State.Entries != 0 {
		t.Fatalf("reader after a wipe: %+v", p)
	}
	// A writer restarts the chain with a row that keeps the finding on record.
	p, err = audit.Prepare(ctx, a.v, time.Now(), "cli:bob", true)
	if err != nil || !p.Restarted || p.Problem == nil {
		t.Fatalf("writer after a wipe: %+v %v", p, err)
	}
	if err := audit.Write(ctx, a.db, p.Key, "cli:bob", audit.ActionAccountAdded, "later"); err != nil {
		t.Fatal(err)
	}
	wantTampered(t, a, nil, 1, "restarted the chain here")
}

// Replacing the log by rows that look like the first release's (plain
// hashes) after it was keyed is refused too.
func TestAuditReplacedByUnkeyedDetected(t *testing.T) {
	a := auditDB(t)
	sql(t, a.db, `DELETE FROM audit_log WHERE id > 3`)
	rechain(t, a.db, 1, 0)
	wantProblem(t, a, "carry no MAC")
}

func TestAuditWithoutKeyRefused(t *testing.T) {
	db, err := store.OpenVault(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := audit.Write(context.Background(), db, nil, "cli:bob", audit.ActionAccountAdded, "x"); err == nil {
		t.Fatal("audit row written without a key")
	}
	var n int
	db.R.Get(&n, `SELECT count(*) FROM audit_log`)
	if n != 0 {
		t.Fatalf("%d rows written", n)
	}
}

// A log made by the first release (testdata/upgrade/v1) verifies as a
// plain chain and is keyed on the first open by the master key holder.
func TestAuditLegacyChainKeyedOnFirstOpen(t *testing.T) {
	dir := testutil.FirstReleaseDataDir(t)
	a := openAuditVault(t, dir)
	ctx := context.Background()
	p, err := audit.Prepare(ctx, a.v, time.Now(), "cli:bob", false)
	if err != nil || p.Problem != nil {
		t.Fatalf("prepare: %+v %v", p, err)
	}
	if !p.Sealed || p.State.Legacy != 3 || p.State.Entries != 4 || !p.State.Keyed {
		t.Fatalf("legacy chain not keyed: %+v", p)
	}
	a.key = p.Key
	var last audit.Entry
	audit.List(ctx, a.db, time.Time{}, func(e audit.Entry) error { last = e; return nil })
	if last.Action != audit.ActionAuditKeyed || !strings.Contains(last.Detail, "3 earlier entries") {
		t.Fatalf("keyed row: %+v", last)
	}
	// Once keyed, the legacy rows are covered: edit and re-chain them up
	// to the keyed row, and link that row to them.
	sql(t, a.db, `UPDATE audit_log SET actor = 'cli:mallory' WHERE id = 2`)
	rechain(t, a.db, 2, 3)
	sql(t, a.db, `UPDATE audit_log SET prev_hash = (SELECT hash FROM audit_log WHERE id = 3) WHERE id = 4;
		UPDATE audit_head SET last_id = 4, hash = (SELECT hash FROM audit_log WHERE id = 4)`)
	wantTampered(t, a, nil, 4, "re-chained without the audit key")
	// Or re-chain the keyed row too: no keyed row is left.
	rechain(t, a.db, 2, 0)
	wantProblem(t, a, "carry no MAC")
	// The second open does not key again.
	p, err = audit.Prepare(ctx, a.v, time.Now(), "cli:bob", false)
	if err != nil || p.Sealed || p.Problem == nil {
		t.Fatalf("second open: %+v %v", p, err)
	}
}

// A legacy log edited before the upgrade is reported, not keyed.
func TestAuditBrokenLegacyChainNotKeyed(t *testing.T) {
	dir := testutil.FirstReleaseDataDir(t)
	a := openAuditVault(t, dir)
	sql(t, a.db, `UPDATE audit_log SET detail = 'x' WHERE id = 2`)
	p, err := audit.Prepare(context.Background(), a.v, time.Now(), "cli:bob", true)
	var ce *audit.ChainError
	if err != nil || !errors.As(p.Problem, &ce) || ce.ID != 2 || p.Sealed {
		t.Fatalf("broken legacy chain: %+v %v", p, err)
	}
}

func TestAuditSanitisesAndLists(t *testing.T) {
	a := auditDB(t)
	ctx := context.Background()
	secret := "cf_" + strings.Repeat("Zx9", 14)
	if err := audit.Write(ctx, a.db, a.key, "cli:bob", audit.ActionClientKeyCreated, "oops "+secret+"\nsecond line"); err != nil {
		t.Fatal(err)
	}
	var got []audit.Entry
	audit.List(ctx, a.db, time.Now().Add(-time.Minute), func(e audit.Entry) error { got = append(got, e); return nil })
	if len(got) != 2 || strings.Contains(got[1].Detail, secret) || strings.Contains(got[1].Detail, "\n") {
		t.Fatalf("entries: %+v", got)
	}
	got = nil
	audit.List(ctx, a.db, time.Now().Add(time.Minute), func(e audit.Entry) error { got = append(got, e); return nil })
	if len(got) != 0 {
		t.Fatal("--since not applied")
	}
}
