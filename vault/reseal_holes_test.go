package vault

import (
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/claudeflare/claudeflare/store"
)

// TestMasterRotationResealsStaleSecret: a daemon whose master key came
// from the environment cannot open a data key made by `key rotate --data`
// after the master moved to a file, so it saves refreshed tokens under the
// retired key it holds. A later master-only `key rotate` (no --data) must
// re-seal that secret under the current data key: the retired key can then
// be destroyed without losing the account.
func TestMasterRotationResealsStaleSecret(t *testing.T) {
	w := newWorld(t, KeySource{EncryptionKey: envKey})
	daemon := w.mustOpen(KeySource{EncryptionKey: envKey})
	newFile := filepath.Join(t.TempDir(), "new.txt")
	cli := w.mustOpen(KeySource{EncryptionKey: envKey})
	if _, err := cli.Rotate(ctx, RotateOptions{Master: true, IdentityFile: newFile}); err != nil {
		t.Fatal(err)
	}
	cli2 := w.mustOpen(KeySource{IdentityFile: newFile})
	dataRes, err := cli2.Rotate(ctx, RotateOptions{Data: true})
	if err != nil {
		t.Fatal(err)
	}
	var id int64
	for id = range w.want {
		break
	}
	s, err := store.GetSecret(ctx, daemon.DB(), id)
	if err != nil {
		t.Fatal(err)
	}
	next := Secrets{AccessToken: "at-stale-daemon", RefreshToken: "rt-stale-daemon"}
	if _, err := daemon.SwapTokens(ctx, id, s.Version, next); err != nil {
		t.Fatalf("a daemon with an old master key could not save tokens: %v", err)
	}
	w.want[id] = next
	ss, err := store.GetSecret(ctx, daemon.DB(), id)
	if err != nil {
		t.Fatal(err)
	}
	if ss.KeyID == dataRes.DataKeyID {
		t.Fatal("setup: the stale daemon sealed under the new data key; the test needs a secret under a retired key")
	}

	// Master only: re-wraps the data keys, and re-seals the stale secret.
	res, err := cli2.Rotate(ctx, RotateOptions{Master: true, Passphrase: "correct horse battery staple again"})
	if err != nil {
		t.Fatal(err)
	}
	if res.Resealed != 1 || res.StillRetired != 0 {
		t.Fatalf("master rotation: resealed %d, still retired %d; want 1 and 0", res.Resealed, res.StillRetired)
	}
	ss, err = store.GetSecret(ctx, cli2.DB(), id)
	if err != nil {
		t.Fatal(err)
	}
	if ss.KeyID != dataRes.DataKeyID {
		t.Fatalf("secret under data key %d after the master rotation, want the current key %d", ss.KeyID, dataRes.DataKeyID)
	}
	if ss.Version != s.Version+1 {
		t.Fatalf("re-sealing changed the token version: %d, want %d", ss.Version, s.Version+1)
	}
	w.check(w.mustOpen(KeySource{Passphrase: "correct horse battery staple again"}))
}

// TestPruneKeepsKeyAnAccountUses: a stale daemon (see above) saves tokens
// under a retired data key after the rotation re-sealed every account (it
// cannot open the new key, so it keeps writing under the old one). A
// prune past the grace period, with no payload left on the key, must keep
// that key: destroying it would lose the account's tokens.
func TestPruneKeepsKeyAnAccountUses(t *testing.T) {
	w := newWorld(t, KeySource{EncryptionKey: envKey})
	daemon := w.mustOpen(KeySource{EncryptionKey: envKey})
	newFile := filepath.Join(t.TempDir(), "new.txt")
	cli := w.mustOpen(KeySource{EncryptionKey: envKey})
	if _, err := cli.Rotate(ctx, RotateOptions{Master: true, IdentityFile: newFile}); err != nil {
		t.Fatal(err)
	}
	cli2, db := w.mustOpenDB(KeySource{IdentityFile: newFile}, Options{})
	if _, err := cli2.Rotate(ctx, RotateOptions{Data: true}); err != nil {
		t.Fatal(err)
	}
	var id int64
	for id = range w.want {
		break
	}
	s, err := store.GetSecret(ctx, db, id)
	if err != nil {
		t.Fatal(err)
	}
	next := Secrets{AccessToken: "at-after-reseal", RefreshToken: "rt-after-reseal"}
	if _, err := daemon.SwapTokens(ctx, id, s.Version, next); err != nil {
		t.Fatal(err)
	}
	w.want[id] = next
	ss, err := store.GetSecret(ctx, db, id)
	if err != nil {
		t.Fatal(err)
	}
	if ss.KeyID == cli2.currentKey().id {
		t.Fatal("setup: the stale daemon sealed under the new data key")
	}
	logDB := w.logDB()
	if _, err := logDB.W.Exec(`DELETE FROM requests`); err != nil {
		t.Fatal(err)
	}
	w.payloads = nil
	deleted, err := PruneDataKeys(ctx, db, logDB, time.Now().Add(2*RetiredKeyGrace))
	if err != nil {
		t.Fatal(err)
	}
	if slices.Contains(deleted, ss.KeyID) {
		t.Fatalf("destroyed data key %d, which account %d's secret is sealed under", ss.KeyID, id)
	}
	w.check(w.mustOpen(KeySource{IdentityFile: newFile}))
}
