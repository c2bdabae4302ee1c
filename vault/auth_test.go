package vault

import (
	"bytes"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"filippo.io/age"
	"github.com/jmoiron/sqlx"
	_ "github.com/mattn/go-sqlite3"

	"github.com/claudeflare/claudeflare/store"
)

// TestAuditKeyCarriedAcrossRotation: the audit key is made once, is the
// same for every holder of the master key, and survives every kind of
// master rotation (re-wrapped), so old audit entries still verify.
func TestAuditKeyCarriedAcrossRotation(t *testing.T) {
	w := newWorld(t, KeySource{})
	v := w.mustOpen(KeySource{})
	k1, err := v.AuditKey(ctx)
	if err != nil || len(k1) != 32 {
		t.Fatalf("audit key: %v (%d bytes)", err, len(k1))
	}
	if k2, err := w.mustOpen(KeySource{}).AuditKey(ctx); err != nil || !bytes.Equal(k1, k2) {
		t.Fatalf("a second holder gets another audit key: %v", err)
	}
	for _, opts := range []RotateOptions{
		{Master: true},
		{Master: true, Data: true},
		{Master: true, Passphrase: "a new long passphrase 1"},
		{Master: true, IdentityFile: filepath.Join(t.TempDir(), "new.txt")},
	} {
		ks := KeySource{}
		if v.master().kind() == MasterPassphrase {
			ks = KeySource{Passphrase: "a new long passphrase 1"}
		}
		if f := v.master().path; f != "" && v.master().source == sourceFile {
			ks = KeySource{IdentityFile: f}
		}
		v = w.mustOpen(ks)
		if _, err := v.Rotate(ctx, opts); err != nil {
			t.Fatalf("rotate %+v: %v", opts, err)
		}
		ks = KeySource{}
		switch {
		case opts.Passphrase != "":
			ks = KeySource{Passphrase: opts.Passphrase}
		case opts.IdentityFile != "":
			ks = KeySource{IdentityFile: opts.IdentityFile}
		}
		v2 := w.mustOpen(ks)
		k, err := v2.AuditKey(ctx)
		if err != nil || !bytes.Equal(k, k1) {
			t.Fatalf("after rotate %+v: audit key changed (%v)", opts, err)
		}
		w.check(v2)
		v = v2
	}
}

// TestBackupKeyFromMasterIdentity: the backup key comes from the master's
// secret: the same from BackupKey and BackupKeys, different for another
// identity and after a rotation, and BackupKeys also yields the keys of
// rotation leftovers next to the identity file.
func TestBackupKeyFromMasterIdentity(t *testing.T) {
	w := newWorld(t, KeySource{})
	v := w.mustOpen(KeySource{})
	bk, err := v.BackupKey()
	if err != nil || len(bk) != 32 {
		t.Fatalf("backup key: %v", err)
	}
	keys, err := BackupKeys(w.ks(KeySource{}))
	if err != nil || len(keys) != 1 || !bytes.Equal(keys[0], bk) {
		t.Fatalf("BackupKeys = %d keys, %v", len(keys), err)
	}
	other, _ := age.GenerateX25519Identity()
	ok, _ := BackupKeys(KeySource{EncryptionKey: other.String()})
	if len(ok) != 1 || bytes.Equal(ok[0], bk) {
		t.Fatal("another identity gives the same backup key")
	}
	if ak, _ := v.AuditKey(ctx); bytes.Equal(ak, bk) {
		t.Fatal("audit and backup keys are the same")
	}
	// Passphrases: derived through scrypt, stable, distinct.
	p1, _ := BackupKeys(KeySource{Passphrase: "one passphrase here"})
	p1b, _ := BackupKeys(KeySource{Passphrase: "one passphrase here"})
	p2, _ := BackupKeys(KeySource{Passphrase: "two passphrase here"})
	if !bytes.Equal(p1[0], p1b[0]) || bytes.Equal(p1[0], p2[0]) {
		t.Fatal("passphrase backup keys are not a function of the passphrase")
	}
	// After a rotation the key changes; the old identity's key is the old one.
	old := readKey(t, filepath.Join(w.dir, IdentityFileName))
	if _, err := v.Rotate(ctx, RotateOptions{Master: true}); err != nil {
		t.Fatal(err)
	}
	nk, _ := v.BackupKey()
	if bytes.Equal(nk, bk) {
		t.Fatal("backup key unchanged by a master rotation")
	}
	ok, _ = BackupKeys(old)
	if !bytes.Equal(ok[0], bk) {
		t.Fatal("the old identity no longer yields the old backup key")
	}
}

// TestAppendedRecipientIsRefused: a recipient added to the master record
// with plain SQL makes Open fail (nothing written), and makes a vault that
// is already open refuse to make a new data key.
func TestAppendedRecipientIsRefused(t *testing.T) {
	w := newWorld(t, KeySource{})
	running := w.mustOpen(KeySource{})
	stranger, _ := age.GenerateX25519Identity()
	db := w.rawDB()
	if _, err := db.Exec(`UPDATE master SET recipients = recipients || char(10) || ?`, stranger.Recipient().String()); err != nil {
		t.Fatal(err)
	}
	before := w.dump()
	_, _, err := w.open(KeySource{})
	if !errors.Is(err, ErrTampered) {
		t.Fatalf("open after tampering: %v", err)
	}
	if strings.Contains(err.Error(), "\n") {
		t.Fatalf("error is not one line: %q", err)
	}
	if _, err := running.Rotate(ctx, RotateOptions{Data: true}); !errors.Is(err, ErrTampered) {
		t.Fatalf("rotate --data after tampering: %v", err)
	}
	if after := w.dump(); after != before {
		t.Fatal("the vault changed after refusing")
	}
	// The stranger's key opens nothing of the vault's.
	if _, _, err := w.open(KeySource{EncryptionKey: stranger.String()}); !errors.Is(err, ErrWrongKey) {
		t.Fatalf("stranger: %v", err)
	}
}

// TestForgedDataKeyIsRefused: a data key made by someone without the
// master key (wrapped to the public recipient, made current) is refused at
// Open and by a running vault that learns about it.
func TestForgedDataKeyIsRefused(t *testing.T) {
	w := newWorld(t, KeySource{})
	running := w.mustOpen(KeySource{})
	_, rs, _ := running.Recipients(ctx)
	to, err := age.ParseRecipients(strings.NewReader(strings.Join(rs, "\n")))
	if err != nil {
		t.Fatal(err)
	}
	row, err := newDataKeyRow(to, running.now())
	if err != nil {
		t.Fatal(err)
	}
	db := w.rawDB()
	if _, err := db.Exec(`UPDATE data_keys SET retired_at = 1`); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`INSERT INTO data_keys (recipient, wrapped, payload_key, created_at, bound) VALUES (?, ?, ?, 1, 1)`,
		row.Recipient, row.Wrapped, row.PayloadKey); err != nil {
		t.Fatal(err)
	}
	if _, _, err := w.open(KeySource{}); !errors.Is(err, ErrTampered) {
		t.Fatalf("open: %v", err)
	}
	if _, err := running.syncKeys(ctx); !errors.Is(err, ErrTampered) {
		t.Fatalf("running vault: %v", err)
	}
	if running.currentKey().recipient.(interface{ String() string }).String() == row.Recipient {
		t.Fatal("running vault seals to the forged key")
	}
}

// TestMACsSurviveEveryRotation: a legitimate rotation of each kind leaves
// a vault whose MACs verify.
func TestMACsSurviveEveryRotation(t *testing.T) {
	w := newWorld(t, KeySource{})
	glass, _ := age.GenerateX25519Identity()
	for _, opts := range []RotateOptions{
		{Data: true},
		{Master: true},
		{Master: true, AddRecipients: []string{glass.Recipient().String()}},
		{Master: true, Data: true},
	} {
		v := w.mustOpen(KeySource{})
		if _, err := v.Rotate(ctx, opts); err != nil {
			t.Fatalf("rotate %+v: %v", opts, err)
		}
		w.check(w.mustOpen(KeySource{}))
		if err := w.mustOpen(KeySource{}).CheckMAC(ctx); err != nil {
			t.Fatalf("after %+v: %v", opts, err)
		}
	}
}

// rawDB opens the vault file directly, as someone with write access to
// the data dir would.
func (w *world) rawDB() *sqlx.DB {
	w.t.Helper()
	db, err := sqlx.Open("sqlite3", "file:"+filepath.Join(w.dir, store.VaultFile)+"?_busy_timeout=5000")
	if err != nil {
		w.t.Fatal(err)
	}
	w.t.Cleanup(func() { db.Close() })
	return db
}

// dump is the vault's key metadata and secrets as text.
func (w *world) dump() string {
	w.t.Helper()
	db := w.rawDB()
	var b strings.Builder
	for _, q := range []string{
		`SELECT kind, recipients, hex(mac), hex(audit_key) FROM master`,
		`SELECT id, recipient, hex(wrapped), hex(mac), ifnull(retired_at, 0), bound FROM data_keys ORDER BY id`,
		`SELECT id, key_id, hex(secret) FROM accounts ORDER BY id`,
	} {
		rows, err := db.Queryx(q)
		if err != nil {
			w.t.Fatal(err)
		}
		for rows.Next() {
			vals, err := rows.SliceScan()
			if err != nil {
				w.t.Fatal(err)
			}
			fmt.Fprintln(&b, vals...)
		}
		rows.Close()
	}
	return b.String()
}

// TestLongRunningHolderAfterRotation: a vault opened before another
// process rotated the master key in place still checks the metadata (it
// reads the identity file again); one whose key came from the environment
// is told the key was replaced, not that the vault was tampered with.
func TestLongRunningHolderAfterRotation(t *testing.T) {
	w := newWorld(t, KeySource{})
	daemon := w.mustOpen(KeySource{})
	envKey := readKey(t, filepath.Join(w.dir, IdentityFileName))
	envDaemon := w.mustOpen(envKey)
	ak, err := w.mustOpen(KeySource{}).AuditKey(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.mustOpen(KeySource{}).Rotate(ctx, RotateOptions{Master: true}); err != nil {
		t.Fatal(err)
	}
	_, rs, err := daemon.Recipients(ctx)
	if err != nil || len(rs) != 1 {
		t.Fatalf("recipients after the rotation: %v", err)
	}
	if got, err := daemon.AuditKey(ctx); err != nil || !bytes.Equal(got, ak) {
		t.Fatalf("audit key after the rotation: %v", err)
	}
	if err := daemon.CheckMAC(ctx); err != nil {
		t.Fatal(err)
	}
	if _, _, err := envDaemon.Recipients(ctx); !errors.Is(err, errMasterReplaced) {
		t.Fatalf("env key after the rotation: %v", err)
	}
}

// TestStrippedMACsAreRefused: a vault of this release whose MACs were all
// removed (to pass it off as an earlier release's, which the next open
// would seal as it finds it) is refused once it has an audit key (made by
// the first command that writes an audit row).
func TestStrippedMACsAreRefused(t *testing.T) {
	w := newWorld(t, KeySource{})
	if _, err := w.mustOpen(KeySource{}).AuditKey(ctx); err != nil {
		t.Fatal(err)
	}
	stranger, _ := age.GenerateX25519Identity()
	db := w.rawDB()
	for _, q := range []string{
		`UPDATE master SET mac = NULL, next_mac = NULL`,
		`UPDATE data_keys SET mac = NULL, mac_next = NULL, bound = 0`,
	} {
		if _, err := db.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := db.Exec(`UPDATE master SET recipients = recipients || char(10) || ?`, stranger.Recipient().String()); err != nil {
		t.Fatal(err)
	}
	if _, _, err := w.open(KeySource{}); !errors.Is(err, ErrTampered) {
		t.Fatalf("open: %v", err)
	}
}
