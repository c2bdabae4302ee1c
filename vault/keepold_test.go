package vault

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/claudeflare/claudeflare/store"
)

// TestRotateKeepOld: --keep-old writes the outgoing identity to a new
// private file, which still yields the backup key of backups made before;
// an existing file is refused before anything changes.
func TestRotateKeepOld(t *testing.T) {
	w := newWorld(t, KeySource{})
	idPath := filepath.Join(w.dir, IdentityFileName)
	oldText, _ := os.ReadFile(idPath)
	v := w.mustOpen(KeySource{})
	oldBackupKey, _ := v.BackupKey()
	_, oldRecipients, _ := v.Recipients(ctx)

	// An existing file: refused, nothing changed.
	taken := filepath.Join(t.TempDir(), "taken.txt")
	writeKeyFile(t, taken, "mine\n")
	before := w.dump()
	if _, err := v.Rotate(ctx, RotateOptions{Master: true, KeepOld: taken}); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Fatalf("existing --keep-old file: %v", err)
	}
	if b, _ := os.ReadFile(taken); string(b) != "mine\n" {
		t.Fatal("the existing file was overwritten")
	}
	if now, _ := os.ReadFile(idPath); !bytes.Equal(now, oldText) || w.dump() != before {
		t.Fatal("the vault changed after a refused rotation")
	}

	keep := filepath.Join(t.TempDir(), "old-identity.txt")
	res, err := v.Rotate(ctx, RotateOptions{Master: true, KeepOld: keep})
	if err != nil {
		t.Fatal(err)
	}
	if res.OldKeptIn != keep {
		t.Fatalf("OldKeptIn %q", res.OldKeptIn)
	}
	st, err := os.Stat(keep)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("kept file: %v %v", st, err)
	}
	kept, _ := os.ReadFile(keep)
	secret := ""
	for _, l := range strings.Split(string(oldText), "\n") {
		if strings.HasPrefix(l, "AGE-SECRET-KEY-") {
			secret = l
		}
	}
	if secret == "" || !strings.Contains(string(kept), secret) || !strings.Contains(string(kept), oldRecipients[0]) {
		t.Fatalf("kept file does not hold the old identity:\n%s", kept)
	}
	keys, err := BackupKeys(KeySource{IdentityFile: keep})
	if err != nil || len(keys) != 1 || !bytes.Equal(keys[0], oldBackupKey) {
		t.Fatalf("the kept identity does not give the old backup key: %v", err)
	}
	// The kept identity no longer opens the vault; the new one does.
	if _, _, err := w.open(KeySource{IdentityFile: keep}); !errors.Is(err, ErrWrongKey) {
		t.Fatalf("old identity: %v", err)
	}
	w.check(w.mustOpen(KeySource{}))
}

// TestRotateKeepOldPassphrase: a passphrase has no identity to keep.
func TestRotateKeepOldPassphrase(t *testing.T) {
	w := newWorld(t, KeySource{Passphrase: "old passphrase here"})
	v := w.mustOpen(KeySource{Passphrase: "old passphrase here"})
	keep := filepath.Join(t.TempDir(), "old.txt")
	_, err := v.Rotate(ctx, RotateOptions{Master: true, Passphrase: "new passphrase here", KeepOld: keep})
	if !errors.Is(err, ErrKeepOldPassphrase) {
		t.Fatalf("err %v", err)
	}
	if _, err := os.Stat(keep); err == nil {
		t.Fatal("a file was written")
	}
}

// TestNewPassphraseStrength: a new vault or a rotation to a passphrase
// refuses a weak one, changing nothing; a vault made with a weak
// passphrase by an earlier release still opens with it.
func TestNewPassphraseStrength(t *testing.T) {
	for _, weak := range []string{"short1", "aaaaaaaaaaaaaaaa", "1234567890123", "ABCDEFGHIJKLMNOP"} {
		if err := CheckNewPassphrase(weak); !errors.Is(err, ErrWeakPassphrase) {
			t.Errorf("%q accepted", weak)
		}
	}
	for _, ok := range []string{"correct horse battery", "Tr0ub4dor&3xyz", "purple monkey 9"} {
		if err := CheckNewPassphrase(ok); err != nil {
			t.Errorf("%q refused: %v", ok, err)
		}
	}

	dir := filepath.Join(t.TempDir(), "data")
	EnsureDataDir(dir)
	db, err := store.OpenVault(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	_, err = Open(ctx, db, KeySource{Passphrase: "hunter2", DataDir: dir}, Options{Create: true})
	if !errors.Is(err, ErrWeakPassphrase) || strings.Contains(err.Error(), "hunter2") {
		t.Fatalf("init with a weak passphrase: %v", err)
	}
	if _, err := ReadMaster(ctx, db); !errors.Is(err, ErrNotInitialised) {
		t.Fatalf("a vault was made: %v", err)
	}

	// A vault whose weak passphrase was set by an earlier release.
	old := &Vault{db: db, now: func() time.Time { return time.Now() }, keys: map[int64]*dataKey{}}
	if old.m, err = passphraseMaster("hunter2", "test"); err != nil {
		t.Fatal(err)
	}
	if err := old.initialise(ctx); err != nil {
		t.Fatal(err)
	}
	v, err := Open(ctx, db, KeySource{Passphrase: "hunter2", DataDir: dir}, Options{})
	if err != nil {
		t.Fatalf("existing weak passphrase: %v", err)
	}
	if _, err := v.Rotate(ctx, RotateOptions{Master: true, Passphrase: "zzzzzzzzzzzzzzzz"}); !errors.Is(err, ErrWeakPassphrase) {
		t.Fatalf("rotate to a weak passphrase: %v", err)
	}
	if _, err := Open(ctx, db, KeySource{Passphrase: "hunter2", DataDir: dir}, Options{}); err != nil {
		t.Fatalf("after the refused rotation: %v", err)
	}
}
