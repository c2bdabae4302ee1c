package store

import (
	"context"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
)

// An owned id survives a reopen, follows its account out when the account
// is removed, and goes when older than the prune cutoff.
func TestOwnedIDsPersistPruneAndFollowAccount(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	db, err := OpenVault(dir)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	var keyID int64
	if err := Tx(ctx, db, func(tx *sqlx.Tx) error {
		keyID, err = InsertDataKey(ctx, tx, "age1test", []byte("w"), []byte("p"), ToMS(now))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	ids := map[string]int64{}
	for _, n := range []string{"a", "b"} {
		id, err := InsertAccount(ctx, db, NewAccount{Name: n, Kind: KindOAuth, KeyID: keyID, Sealed: []byte("x")}, now)
		if err != nil {
			t.Fatal(err)
		}
		ids[n] = id
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(PutOwnedID(ctx, db, "msgbatch_new", ids["a"], now))
	must(PutOwnedID(ctx, db, "file_old", ids["a"], now.Add(-40*24*time.Hour)))
	must(PutOwnedID(ctx, db, "file_b", ids["b"], now))
	db.Close()

	if db, err = OpenVault(dir); err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	n, err := PruneOwnedIDs(ctx, db, now.Add(-30*24*time.Hour))
	if err != nil || n != 1 {
		t.Fatalf("prune: %d, %v; want 1", n, err)
	}
	must(DeleteAccount(ctx, db, "b"))
	got, err := ListOwnedIDs(ctx, db, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].ID != "msgbatch_new" || got[0].AccountID != ids["a"] || got[0].CreatedAt != ToMS(now) {
		t.Fatalf("owned ids after reopen, prune and removal of b: %+v", got)
	}
	must(DeleteOwnedID(ctx, db, "msgbatch_new"))
	if got, _ := ListOwnedIDs(ctx, db, time.Time{}); len(got) != 0 {
		t.Fatalf("after delete: %+v", got)
	}
}
