package store

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestOpenMigratesAndSetsPragmas(t *testing.T) {
	dir := t.TempDir()
	db, err := OpenLog(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx := context.Background()
	v, err := db.UserVersion(ctx)
	if err != nil || v != SchemaVersion("log") || v == 0 {
		t.Fatalf("user_version %d (%v), want %d", v, err, SchemaVersion("log"))
	}
	var mode string
	db.W.Get(&mode, "PRAGMA journal_mode")
	if mode != "wal" {
		t.Errorf("journal_mode %q", mode)
	}
	var fk, av int
	db.W.Get(&fk, "PRAGMA foreign_keys")
	db.W.Get(&av, "PRAGMA auto_vacuum")
	if fk != 1 || av != 2 {
		t.Errorf("foreign_keys %d auto_vacuum %d", fk, av)
	}
	if _, err := db.R.Exec(`DELETE FROM requests`); err == nil {
		t.Error("read pool accepted a write")
	}
	st, _ := os.Stat(filepath.Join(dir, LogFile))
	if st.Mode().Perm() != 0o600 {
		t.Errorf("mode %o", st.Mode().Perm())
	}
}

func TestNewerDatabaseRefused(t *testing.T) {
	dir := t.TempDir()
	db, err := OpenVault(dir)
	if err != nil {
		t.Fatal(err)
	}
	db.W.Exec(`PRAGMA user_version = 999`)
	db.Close()
	_, err = OpenVault(dir)
	if !errors.Is(err, ErrTooNew) {
		t.Fatalf("got %v, want ErrTooNew", err)
	}
}

func TestInsertRequestsWithPayloadsAndCascade(t *testing.T) {
	db, err := OpenLog(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx := context.Background()
	now := ToMS(time.Now())
	reqs := []Request{{ID: "a", TS: now, Method: "POST", Path: "/v1/messages", Status: 200}, {ID: "b", TS: now, Method: "GET", Path: "/v1/models", Status: 200}}
	pays := []Payload{{RequestID: "a", TS: now, KeyID: 1, Sealed: []byte{1, 2, 3}}, {RequestID: "zzz", TS: now, KeyID: 1, Sealed: []byte{1}}}
	if err := InsertRequests(ctx, db, reqs, pays); err != nil {
		t.Fatal(err)
	}
	var n int
	db.R.Get(&n, `SELECT count(*) FROM payloads`)
	if n != 1 {
		t.Fatalf("payloads %d, want 1", n)
	}
	db.W.Exec(`DELETE FROM requests WHERE id = 'a'`)
	db.R.Get(&n, `SELECT count(*) FROM payloads`)
	if n != 0 {
		t.Fatalf("payload survived its request")
	}
	if err := InsertRequests(ctx, db, []Request{{ID: "b", TS: now}}, nil); err == nil {
		t.Fatal("duplicate id accepted")
	}
	db.R.Get(&n, `SELECT count(*) FROM requests`)
	if n != 1 {
		t.Fatalf("failed batch left %d rows", n)
	}
}
