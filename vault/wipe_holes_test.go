package vault_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/claudeflare/claudeflare/store"
	"github.com/claudeflare/claudeflare/vault"
)

// TestRotationLeavesNoOldWraps: after `key rotate` replaces the master key
// and destroys a retired data key, no piece of the data keys' wraps to the
// old master, nor of the destroyed key's wrap, is left in vault.db or its
// WAL: whoever later gets the old master key (a leaked identity file, a
// backup of it) finds nothing in the current vault.db that it opens.
// Rotate turns secure_delete on for its writes; with it off, the freed
// cells keep the old bytes.
func TestRotationLeavesNoOldWraps(t *testing.T) {
	ctx := context.Background()
	s := newHolesSetup(t)
	dir, vdb, ldb, clk := s.dir, s.vdb, s.ldb, s.clk
	v := s.open(t)
	for _, n := range []string{"work", "home"} {
		if _, err := v.AddAccount(ctx, vault.NewAccount{Name: n, Kind: store.KindAPIKey, Tier: 1}, vault.Secrets{APIKey: "sk-ant-api03-" + n}); err != nil {
			t.Fatal(err)
		}
	}
	res, err := v.Rotate(ctx, vault.RotateOptions{Data: true, LogDB: ldb})
	if err != nil {
		t.Fatal(err)
	}
	var wraps []struct {
		ID      int64  `db:"id"`
		Wrapped []byte `db:"wrapped"`
	}
	if err := vdb.R.Select(&wraps, `SELECT id, wrapped FROM data_keys`); err != nil {
		t.Fatal(err)
	}
	if len(wraps) != 2 {
		t.Fatalf("setup: %d data keys, want the retired one and the current one", len(wraps))
	}

	// Past the grace period, no payload needs the retired key: the master
	// rotation re-wraps the current key and destroys the retired one.
	clk.Add(vault.RetiredKeyGrace + time.Minute)
	res2, err := v.Rotate(ctx, vault.RotateOptions{Master: true, LogDB: ldb})
	if err != nil {
		t.Fatal(err)
	}
	if len(res2.DeletedKeys) != 1 || res2.DeletedKeys[0] == res.DataKeyID {
		t.Fatalf("setup: destroyed %v, want the retired key only", res2.DeletedKeys)
	}
	var left int
	if err := vdb.R.Get(&left, `SELECT count(*) FROM data_keys`); err != nil || left != 1 {
		t.Fatalf("data keys left %d (%v), want 1", left, err)
	}
	state := fileBytes(t, dir)
	for _, w := range wraps {
		what := "the current key's wrap to the old master"
		if slices.Contains(res2.DeletedKeys, w.ID) {
			what = "the destroyed key's wrap"
		}
		if n := piecesIn(state, w.Wrapped); n > 0 {
			t.Errorf("%d pieces of %s (data key %d) left in vault.db", n, what, w.ID)
		}
	}
}

// fileBytes reads vault.db and, when there is one, its WAL.
func fileBytes(t *testing.T, dir string) []byte {
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

// piecesIn counts the 32-byte pieces of sealed found in data, past its
// first 64 bytes (the age header start, alike in every file).
func piecesIn(data, sealed []byte) int {
	n := 0
	for i := 64; i+32 <= len(sealed); i += 32 {
		if bytes.Contains(data, sealed[i:i+32]) {
			n++
		}
	}
	return n
}
