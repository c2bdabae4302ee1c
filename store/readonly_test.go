package store

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// TestOpenReadOnlyCreatesAndWritesNothing: a missing database is an
// error and stays missing; an existing one reads, passes the integrity
// check, and refuses writes.
func TestOpenReadOnlyCreatesAndWritesNothing(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	missing := filepath.Join(dir, "nothing.db")
	if db, err := OpenReadOnly(missing); err == nil {
		db.Close()
		t.Fatal("opened a missing database")
	}
	if _, err := os.Stat(missing); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("OpenReadOnly created %s: %v", missing, err)
	}
	w, err := OpenVault(dir)
	if err != nil {
		t.Fatal(err)
	}
	w.Close()
	db, err := OpenReadOnly(filepath.Join(dir, VaultFile))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.IntegrityCheck(ctx); err != nil {
		t.Fatalf("integrity of a new vault: %v", err)
	}
	if v, err := db.UserVersion(ctx); err != nil || v != SchemaVersion("vault") {
		t.Fatalf("user_version %d, %v", v, err)
	}
	if _, err := db.W.ExecContext(ctx, `CREATE TABLE x (a)`); err == nil {
		t.Fatal("a read-only open wrote")
	}
}
