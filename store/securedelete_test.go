package store_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jmoiron/sqlx"

	"github.com/claudeflare/claudeflare/store"
	"github.com/claudeflare/claudeflare/vault"
)

// stateBytes reads vault.db and, when there is one, vault.db-wal.
func stateBytes(t *testing.T, dir string) []byte {
	t.Helper()
	var all []byte
	for _, name := range []string{store.VaultFile, store.VaultFile + "-wal"} {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
		all = append(all, b...)
	}
	return all
}

// sealedIn counts the 32-byte pieces of sealed that appear in data,
// past the first 32 bytes ("age-encryption.org/v1\n-> X25519 ", the same
// in every age file).
func sealedIn(data, sealed []byte) int {
	n := 0
	for i := 32; i+32 <= len(sealed); i += 32 {
		if bytes.Contains(data, sealed[i:i+32]) {
			n++
		}
	}
	return n
}

// TestRemovedAccountLeavesNoSealedBytes: once an account is removed and
// the WAL checkpointed, no piece of its sealed secret is left in vault.db
// or its WAL (issue 11, item 8: PRAGMA secure_delete on the vault). Both
// as a one-shot command does it (open, remove, close) and as the daemon
// does (the database stays open; a checkpoint runs).
func TestRemovedAccountLeavesNoSealedBytes(t *testing.T) {
	for _, closeBetween := range []bool{true, false} {
		name := "daemon"
		if closeBetween {
			name = "command"
		}
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			dir := t.TempDir()
			ks := vault.KeySource{DataDir: dir}
			db, err := store.OpenVault(dir)
			if err != nil {
				t.Fatal(err)
			}
			v, err := vault.Open(ctx, db, ks, vault.Options{Create: true})
			if err != nil {
				t.Fatal(err)
			}
			// Another account, so that the removed one shares its page
			// with a live row (a free page alone is not the whole story).
			for _, n := range []string{"keep", "gone"} {
				if _, err := v.AddAccount(ctx, vault.NewAccount{Name: n, Kind: store.KindAPIKey},
					vault.Secrets{APIKey: "sk-ant-api03-" + strings.Repeat(n, 40)}); err != nil {
					t.Fatal(err)
				}
			}
			acct, err := store.GetAccount(ctx, db, "gone")
			if err != nil {
				t.Fatal(err)
			}
			sec, err := store.GetSecret(ctx, db, acct.ID)
			if err != nil || len(sec.Sealed) < 64 {
				t.Fatalf("sealed %d bytes, %v", len(sec.Sealed), err)
			}
			if _, err := db.W.Exec(`PRAGMA wal_checkpoint(TRUNCATE)`); err != nil {
				t.Fatal(err)
			}
			if sealedIn(stateBytes(t, dir), sec.Sealed) == 0 {
				t.Fatal("the sealed secret is not found in vault.db before removal: the search is broken")
			}

			if closeBetween {
				db.Close()
				if db, err = store.OpenVault(dir); err != nil {
					t.Fatal(err)
				}
			}
			if err := store.DeleteAccount(ctx, db, "gone"); err != nil {
				t.Fatal(err)
			}
			if closeBetween {
				db.Close()
			} else {
				if _, err := db.W.Exec(`PRAGMA wal_checkpoint(TRUNCATE)`); err != nil {
					t.Fatal(err)
				}
				defer db.Close()
			}
			if n := sealedIn(stateBytes(t, dir), sec.Sealed); n != 0 {
				t.Errorf("%d pieces of the removed account's sealed secret are still in vault.db or its WAL", n)
			}
		})
	}
}

// TestSecureDeleteOnEveryVaultConnection: the writer and every reader of
// the vault have secure_delete on; the request log does not pay for it.
func TestSecureDeleteOnEveryVaultConnection(t *testing.T) {
	dir := t.TempDir()
	db, err := store.OpenVault(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var w, r int
	if err := db.W.Get(&w, "PRAGMA secure_delete"); err != nil {
		t.Fatal(err)
	}
	if err := db.R.Get(&r, "PRAGMA secure_delete"); err != nil {
		t.Fatal(err)
	}
	if w != 1 || r != 1 {
		t.Errorf("secure_delete writer %d reader %d, want 1 and 1", w, r)
	}
}

// TestOldVaultScrubbedOnce: a vault from a release without secure_delete
// keeps the bytes of an account removed then; the first open by this
// release rewrites it (VACUUM) so they are gone, and marks it so that
// later opens do not rewrite it again.
func TestOldVaultScrubbedOnce(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	db, err := store.OpenVault(dir)
	if err != nil {
		t.Fatal(err)
	}
	v, err := vault.Open(ctx, db, vault.KeySource{DataDir: dir}, vault.Options{Create: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"keep", "gone"} {
		if _, err := v.AddAccount(ctx, vault.NewAccount{Name: n, Kind: store.KindAPIKey},
			vault.Secrets{APIKey: "sk-ant-api03-" + strings.Repeat(n, 40)}); err != nil {
			t.Fatal(err)
		}
	}
	acct, _ := store.GetAccount(ctx, db, "gone")
	sec, err := store.GetSecret(ctx, db, acct.ID)
	if err != nil {
		t.Fatal(err)
	}
	db.Close()

	// As the previous release removed it: no secure_delete, no mark.
	old, err := sqlx.Open("sqlite3", "file:"+filepath.Join(dir, store.VaultFile)+"?_secure_delete=off&_foreign_keys=on")
	if err != nil {
		t.Fatal(err)
	}
	old.SetMaxOpenConns(1)
	for _, q := range []string{`PRAGMA application_id = 0`, `DELETE FROM accounts WHERE name = 'gone'`, `PRAGMA wal_checkpoint(TRUNCATE)`} {
		if _, err := old.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	old.Close()
	if sealedIn(stateBytes(t, dir), sec.Sealed) == 0 {
		t.Fatal("without secure_delete the removed secret's bytes are gone anyway: the test proves nothing")
	}

	db, err = store.OpenVault(dir)
	if err != nil {
		t.Fatal(err)
	}
	var id int64
	db.W.Get(&id, "PRAGMA application_id")
	db.Close()
	if n := sealedIn(stateBytes(t, dir), sec.Sealed); n != 0 {
		t.Errorf("%d pieces of an account removed before the upgrade are still in vault.db", n)
	}
	if id == 0 {
		t.Error("the scrubbed vault is not marked")
	}

	// Marked: the next open leaves the file as it is.
	before, _ := os.ReadFile(filepath.Join(dir, store.VaultFile))
	db, err = store.OpenVault(dir)
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	if after, _ := os.ReadFile(filepath.Join(dir, store.VaultFile)); !bytes.Equal(before, after) {
		t.Error("a scrubbed vault was rewritten again")
	}
}
