package store

import (
	"context"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
)

// TestCloudMigrationKeepsRows opens a vault made before migration 0010
// (cloud kinds): every account row keeps its id, sealed secret and state,
// owned_ids keep their rows (dropping the old accounts table must not
// cascade) and their index, and the new kinds and the upstream column work.
func TestCloudMigrationKeepsRows(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, VaultFile)
	if err := ensureFile(path); err != nil {
		t.Fatal(err)
	}
	old, err := sqlx.Open("sqlite3", "file:"+path+"?_foreign_keys=on")
	if err != nil {
		t.Fatal(err)
	}
	names, err := migrationNames("vault")
	if err != nil {
		t.Fatal(err)
	}
	before := 0
	for _, n := range names {
		if n >= "0010" {
			break
		}
		body, _ := migrations.ReadFile("migrations/vault/" + n)
		if _, err := old.Exec(string(body)); err != nil {
			t.Fatalf("%s: %v", n, err)
		}
		before++
	}
	mustExec := func(q string, args ...any) {
		t.Helper()
		if _, err := old.Exec(q, args...); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	mustExec(`PRAGMA user_version = ` + strconv.Itoa(before))
	mustExec(`INSERT INTO data_keys (id, recipient, wrapped, payload_key, created_at) VALUES (1, 'r', x'01', x'02', 1)`)
	mustExec(`INSERT INTO accounts (id, name, kind, mode, priority, key_id, secret, token_version, rl_status, overage, model_limits, unblocked_at, created_at, updated_at)
		VALUES (7, 'a', 'oauth', 'max', 3, 1, x'deadbeef', 5, 'rejected', 'allow', '{"opus":9}', 11, 100, 200)`)
	mustExec(`INSERT INTO accounts (id, name, kind, key_id, secret, created_at, updated_at) VALUES (9, 'k', 'apikey', 1, x'cafe', 1, 2)`)
	mustExec(`INSERT INTO owned_ids (id, account_id, created_at) VALUES ('msgbatch_1', 7, 50), ('file_2', 9, 60)`)
	if _, err := old.Exec(`INSERT INTO accounts (name, kind, key_id, secret, created_at, updated_at) VALUES ('b', 'bedrock', 1, x'00', 1, 2)`); err == nil {
		t.Fatal("the old schema took kind bedrock: the test does not test the migration")
	}
	old.Close()

	db, err := OpenVault(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx := context.Background()
	a, err := GetAccount(ctx, db, "a")
	if err != nil {
		t.Fatal(err)
	}
	if a.ID != 7 || a.Kind != KindOAuth || a.Mode != "max" || a.Priority != 3 || a.TokenVersion != 5 || a.RLStatus != "rejected" ||
		a.Overage != OverageAllow || a.ModelLimits != `{"opus":9}` || a.UnblockedAt != 11 || a.CreatedAt != 100 || a.UpdatedAt != 200 || a.Upstream != "" {
		t.Errorf("account a after the migration: %+v", a)
	}
	sec, err := GetSecret(ctx, db, 7)
	if err != nil || string(sec.Sealed) != "\xde\xad\xbe\xef" || sec.KeyID != 1 {
		t.Errorf("sealed secret after the migration: %x %d %v", sec.Sealed, sec.KeyID, err)
	}
	var owned []string
	if err := db.R.Select(&owned, `SELECT id || ':' || account_id FROM owned_ids ORDER BY id`); err != nil {
		t.Fatal(err)
	}
	if strings.Join(owned, ",") != "file_2:9,msgbatch_1:7" {
		t.Errorf("owned_ids after the migration: %v", owned)
	}
	var idx int
	db.R.Get(&idx, `SELECT count(*) FROM sqlite_master WHERE type = 'index' AND name = 'owned_ids_created'`)
	if idx != 1 {
		t.Error("owned_ids_created index missing")
	}
	// The cascade still works on the new table.
	if err := DeleteAccount(ctx, db, "k"); err != nil {
		t.Fatal(err)
	}
	var n int
	db.R.Get(&n, `SELECT count(*) FROM owned_ids WHERE account_id = 9`)
	if n != 0 {
		t.Error("owned_ids of a removed account survived: the foreign key is gone")
	}
	for _, kind := range []string{KindBedrock, KindVertex} {
		id, err := InsertAccount(ctx, db, NewAccount{Name: "c-" + kind, Kind: kind, KeyID: 1, Sealed: []byte{1},
			Upstream: `{"region":"us-east-1"}`}, time.Now())
		if err != nil {
			t.Fatalf("insert %s: %v", kind, err)
		}
		c, err := GetAccount(ctx, db, "c-"+kind)
		if err != nil || c.ID != id || c.Kind != kind || c.Upstream != `{"region":"us-east-1"}` {
			t.Errorf("%s account: %+v %v", kind, c, err)
		}
	}
	if _, err := InsertAccount(ctx, db, NewAccount{Name: "x", Kind: "azure", KeyID: 1, Sealed: []byte{1}}, time.Now()); err == nil {
		t.Error("an unknown kind was accepted: the CHECK is gone")
	}
	var bad []string
	if err := db.W.Select(&bad, `SELECT "table" FROM pragma_foreign_key_check`); err != nil || len(bad) != 0 {
		t.Errorf("foreign key check: %v %v", bad, err)
	}
}
