package store

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
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

func TestUnblockClearsBlocksNotLogin(t *testing.T) {
	ctx := context.Background()
	db, err := OpenVault(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	now := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	var keyID int64
	if err := Tx(ctx, db, func(tx *sqlx.Tx) error {
		keyID, err = InsertDataKey(ctx, tx, "age1test", []byte("w"), []byte("p"), ToMS(now))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"q", "login"} {
		if _, err := InsertAccount(ctx, db, NewAccount{Name: n, Kind: KindOAuth, KeyID: keyID, Sealed: []byte("x")}, now); err != nil {
			t.Fatal(err)
		}
	}
	q, _ := GetAccount(ctx, db, "q")
	l, _ := GetAccount(ctx, db, "login")
	if err := SetStatus(ctx, db, q.ID, StatusQuarantined, "organization disabled", now); err != nil {
		t.Fatal(err)
	}
	if err := SetStatus(ctx, db, l.ID, StatusNeedsLogin, "invalid_grant", now); err != nil {
		t.Fatal(err)
	}
	until := ToMS(now.Add(time.Hour))
	for _, id := range []int64{q.ID, l.ID} {
		if err := SaveRateState(ctx, db, id, RateState{RateLimitedUntil: until, RLStatus: "rejected", CooldownMS: 5000,
			OverageUntil: until, ModelLimits: `{"opus":1}`}); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range []string{"q", "login"} {
		before, err := Unblock(ctx, db, n, now)
		if err != nil {
			t.Fatal(err)
		}
		if before.RateLimitedUntil != until {
			t.Errorf("%s: before = %+v", n, before)
		}
	}
	q, _ = GetAccount(ctx, db, "q")
	l, _ = GetAccount(ctx, db, "login")
	if q.Status != StatusOK || q.StatusReason != "" || q.RateLimitedUntil != 0 || q.CooldownMS != 0 || q.OverageUntil != 0 || q.ModelLimits != "" || q.UnblockedAt != ToMS(now) {
		t.Errorf("q after unblock: %+v", q)
	}
	if l.Status != StatusNeedsLogin || l.StatusReason != "invalid_grant" || l.RateLimitedUntil != 0 {
		t.Errorf("login after unblock: %+v", l)
	}
	// A second unblock at the same instant still moves unblocked_at.
	if _, err := Unblock(ctx, db, "q", now); err != nil {
		t.Fatal(err)
	}
	if q2, _ := GetAccount(ctx, db, "q"); q2.UnblockedAt <= q.UnblockedAt {
		t.Errorf("unblocked_at did not move: %d then %d", q.UnblockedAt, q2.UnblockedAt)
	}
	if _, err := Unblock(ctx, db, "nobody", now); !errors.Is(err, ErrNoAccount) {
		t.Errorf("unblock of a missing account: %v", err)
	}
}
