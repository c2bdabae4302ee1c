package backup_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"filippo.io/age"

	"github.com/claudeflare/claudeflare/backup"
	"github.com/claudeflare/claudeflare/store"
	"github.com/claudeflare/claudeflare/vault"
)

type dataDir struct {
	dir   string
	ks    vault.KeySource
	vdb   *store.DB
	ldb   *store.DB
	v     *vault.Vault
	names []string
}

// newDataDir makes a data dir with an identity (or passphrase) vault,
// accounts and a request log.
func newDataDir(t *testing.T, passphrase string) *dataDir {
	t.Helper()
	ctx := context.Background()
	d := &dataDir{dir: filepath.Join(t.TempDir(), "data")}
	d.ks = vault.KeySource{DataDir: d.dir, Passphrase: passphrase}
	if err := vault.EnsureDataDir(d.dir); err != nil {
		t.Fatal(err)
	}
	var err error
	if d.vdb, err = store.OpenVault(d.dir); err != nil {
		t.Fatal(err)
	}
	if d.ldb, err = store.OpenLog(d.dir); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.vdb.Close(); d.ldb.Close() })
	if d.v, err = vault.Open(ctx, d.vdb, d.ks, vault.Options{Create: true}); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 4; i++ {
		name := fmt.Sprintf("acct-%d", i)
		if _, err := d.v.AddAccount(ctx, vault.NewAccount{Name: name, Kind: store.KindOAuth, Mode: "max", Priority: i, Tier: 1},
			vault.Secrets{AccessToken: "access-" + name, RefreshToken: "refresh-" + name, ExpiresAt: time.Now().Add(time.Hour)}); err != nil {
			t.Fatal(err)
		}
		d.names = append(d.names, name)
	}
	d.insert(t, "seed", 200)
	return d
}

func (d *dataDir) insert(t *testing.T, prefix string, n int) {
	t.Helper()
	var reqs []store.Request
	var pays []store.Payload
	for i := 0; i < n; i++ {
		id := fmt.Sprintf("%s-%06d", prefix, i)
		reqs = append(reqs, store.Request{ID: id, TS: time.Now().UnixMilli(), Method: "POST", Path: "/v1/messages",
			Model: "claude-sonnet-4-5", Account: d.names[i%len(d.names)], Status: 200})
		keyID, sealed, err := d.v.SealPayload(id, []byte("payload of "+id))
		if err != nil {
			t.Error(err)
			return
		}
		pays = append(pays, store.Payload{RequestID: id, TS: time.Now().UnixMilli(), KeyID: keyID, Sealed: sealed})
	}
	if err := store.InsertRequests(context.Background(), d.ldb, reqs, pays); err != nil {
		t.Error(err)
	}
}

func (d *dataDir) options() backup.Options {
	key, err := d.v.BackupKey()
	if err != nil {
		panic(err)
	}
	return backup.Options{DataDir: d.dir, Vault: d.vdb, Log: d.ldb, Keys: d.ks, MACKey: key, Version: "test", ScryptWorkFactor: 10}
}

// restoreOpts are the restore options for the master key source ks.
func restoreOpts(t *testing.T, dir string, ks vault.KeySource) backup.RestoreOptions {
	t.Helper()
	ids, err := backup.Identities(ks)
	if err != nil {
		t.Fatal(err)
	}
	keys, err := vault.BackupKeys(ks)
	if err != nil {
		t.Fatal(err)
	}
	return backup.RestoreOptions{DataDir: dir, Identities: ids, BackupKeys: keys}
}

func count(t *testing.T, db *store.DB, q string) int {
	t.Helper()
	var n int
	if err := db.R.Get(&n, q); err != nil {
		t.Fatal(err)
	}
	return n
}

// openRestored opens the restored dir with ks and checks every account's
// secrets and every payload.
func openRestored(t *testing.T, dir string, ks vault.KeySource, names []string) (requests int) {
	t.Helper()
	ctx := context.Background()
	vdb, err := store.OpenVault(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer vdb.Close()
	ldb, err := store.OpenLog(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer ldb.Close()
	v, err := vault.Open(ctx, vdb, ks, vault.Options{})
	if err != nil {
		t.Fatalf("open restored vault: %v", err)
	}
	accts, err := store.ListAccounts(ctx, vdb)
	if err != nil {
		t.Fatal(err)
	}
	if len(accts) != len(names) {
		t.Fatalf("restored %d accounts, want %d", len(accts), len(names))
	}
	for _, a := range accts {
		s, err := v.Secrets(ctx, a.ID)
		if err != nil || s.RefreshToken != "refresh-"+a.Name {
			t.Fatalf("account %s secrets: %v", a.Name, err)
		}
	}
	var pays []struct {
		ID     string `db:"request_id"`
		KeyID  int64  `db:"key_id"`
		Sealed []byte `db:"sealed"`
	}
	if err := ldb.R.Select(&pays, `SELECT r.id AS request_id, p.key_id, p.sealed FROM payloads p JOIN requests r ON r.seq = p.request_seq`); err != nil {
		t.Fatal(err)
	}
	for _, p := range pays {
		plain, err := v.OpenPayload(p.KeyID, p.ID, p.Sealed)
		if err != nil || string(plain) != "payload of "+p.ID {
			t.Fatalf("payload %s: %v", p.ID, err)
		}
	}
	n := count(t, ldb, `SELECT count(*) FROM requests`)
	if len(pays) != n {
		t.Fatalf("%d payloads for %d requests", len(pays), n)
	}
	return n
}

func TestBackupUnderConcurrentWritesAndRestore(t *testing.T) {
	d := newDataDir(t, "")
	ctx := context.Background()

	// Writers keep inserting requests (and refreshing tokens) during the backup.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var batches atomic.Int64
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			d.insert(t, fmt.Sprintf("live%d", i), 20)
			batches.Add(1)
		}
	}()
	for batches.Load() < 3 {
		time.Sleep(time.Millisecond)
	}
	before := count(t, d.ldb, `SELECT count(*) FROM requests`)
	path := filepath.Join(t.TempDir(), "cf.backup")
	m, size, err := backup.CreateFile(ctx, path, d.options())
	after := count(t, d.ldb, `SELECT count(*) FROM requests`)
	close(stop)
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o600 || st.Size() != size {
		t.Fatalf("backup file mode %v size %d (%d)", st.Mode().Perm(), st.Size(), size)
	}
	if m.MasterKind != vault.MasterIdentity || len(m.Files) != 3 {
		t.Fatalf("manifest: %+v", m)
	}
	// The archive is age: no plaintext inside.
	raw, _ := os.ReadFile(path)
	if !bytes.HasPrefix(raw, []byte("age-encryption.org/v1")) || bytes.Contains(raw, []byte("SQLite format")) {
		t.Fatal("backup is not age-encrypted")
	}
	// No snapshot temp dir is left behind.
	if left, _ := filepath.Glob(filepath.Join(d.dir, ".backup-*")); len(left) > 0 {
		t.Fatalf("left behind: %v", left)
	}

	// Restore into an empty dir with the master key from the source dir.
	dst := filepath.Join(t.TempDir(), "restored")
	f, _ := os.Open(path)
	res, err := backup.Restore(ctx, f, restoreOpts(t, dst, vault.KeySource{IdentityFile: filepath.Join(d.dir, "identity.txt")}))
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(res.Restored, ",") != "log.db,vault.db,identity.txt" || !res.Authenticated {
		t.Fatalf("restored %v", res.Restored)
	}
	st, _ := os.Stat(dst)
	if st.Mode().Perm() != 0o700 {
		t.Errorf("restored dir mode %v", st.Mode().Perm())
	}
	for _, name := range res.Restored {
		if st, _ := os.Stat(filepath.Join(dst, name)); st.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %v", name, st.Mode().Perm())
		}
	}
	// The restored identity.txt (default key source) opens the restored vault.
	n := openRestored(t, dst, vault.KeySource{DataDir: dst}, d.names)
	if n < before || n > after {
		t.Fatalf("restored %d requests; the log had %d before and %d after the backup", n, before, after)
	}
}

func TestRestoreRefusals(t *testing.T) {
	d := newDataDir(t, "")
	ctx := context.Background()
	var buf bytes.Buffer
	if _, err := backup.Create(ctx, &buf, d.options()); err != nil {
		t.Fatal(err)
	}
	archive := buf.Bytes()
	ropts := func(dir string) backup.RestoreOptions { return restoreOpts(t, dir, d.ks) }

	// Over a live vault: refused without Force; nothing changes.
	_, err := backup.Restore(ctx, bytes.NewReader(archive), ropts(d.dir))
	if !errors.Is(err, backup.ErrVaultExists) {
		t.Fatalf("existing vault: %v", err)
	}

	// While a daemon holds the lock: refused, even with Force.
	dst := filepath.Join(t.TempDir(), "locked")
	os.MkdirAll(dst, 0o700)
	unlock, err := backup.LockDataDir(dst)
	if err != nil {
		t.Fatal(err)
	}
	o := ropts(dst)
	o.Force = true
	_, err = backup.Restore(ctx, bytes.NewReader(archive), o)
	if !errors.Is(err, backup.ErrDaemonRunning) {
		t.Fatalf("locked: %v", err)
	}
	unlock()

	// A wrong key.
	other, _ := age.GenerateX25519Identity()
	_, err = backup.Restore(ctx, bytes.NewReader(archive), backup.RestoreOptions{DataDir: dst, Identities: []age.Identity{other}})
	var wk *backup.WrongKeyError
	if !errors.Is(err, backup.ErrWrongKey) || !errors.As(err, &wk) || len(wk.Recipients) != 1 || !strings.Contains(err.Error(), d.recipient(t)) {
		t.Fatalf("wrong key: %v", err)
	}
	// A damaged archive: refused before anything is installed.
	bad := append([]byte(nil), archive...)
	bad[len(bad)/2] ^= 0xff
	_, err = backup.Restore(ctx, bytes.NewReader(bad), ropts(dst))
	if err == nil {
		t.Fatal("damaged archive restored")
	}
	_, err = backup.Restore(ctx, bytes.NewReader(archive[:len(archive)-100]), ropts(dst))
	if err == nil {
		t.Fatal("truncated archive restored")
	}
	if entries, _ := os.ReadDir(dst); len(entries) != 1 || entries[0].Name() != backup.LockFile {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Fatalf("failed restores left %v", names)
	}

	// With Force over a live data dir of another key: the archive's
	// identity would replace the data dir's: refused unless asked for,
	// and nothing changes.
	e := newDataDir(t, "")
	eopts := restoreOpts(t, e.dir, e.ks)
	e.insert(t, "more", 50)
	os.WriteFile(filepath.Join(e.dir, "log.db-wal"), []byte("stale"), 0o600)
	e.vdb.Close()
	e.ldb.Close()
	before := snapshotDir(t, e.dir)
	o = ropts(e.dir)
	o.Identities = append(o.Identities, eopts.Identities...)
	o.BackupKeys = append(o.BackupKeys, eopts.BackupKeys...)
	o.Force = true
	if _, err := backup.Restore(ctx, bytes.NewReader(archive), o); !errors.Is(err, backup.ErrIdentityDiffers) {
		t.Fatalf("identity replaced without ReplaceIdentity: %v", err)
	}
	if after := snapshotDir(t, e.dir); after != before {
		t.Fatalf("a refused restore changed the data dir:\n%s\n%s", before, after)
	}
	// With ReplaceIdentity: the new state replaces the old, stale WAL
	// files are removed and the data dir's identity is kept aside.
	o.ReplaceIdentity = true
	res, err := backup.Restore(ctx, bytes.NewReader(archive), o)
	if err != nil {
		t.Fatal(err)
	}
	if res.IdentityMovedAside == "" {
		t.Fatal("the data dir's own identity was not kept")
	}
	if b, err := os.ReadFile(res.IdentityMovedAside); err != nil || !strings.Contains(string(b), "AGE-SECRET-KEY-") {
		t.Fatalf("identity moved aside: %v", err)
	}
	if n := openRestored(t, e.dir, vault.KeySource{DataDir: e.dir}, d.names); n != 200 {
		t.Fatalf("restored %d requests, want 200", n)
	}
}

func TestPassphraseVault(t *testing.T) {
	d := newDataDir(t, "correct horse battery staple")
	ctx := context.Background()
	var buf bytes.Buffer
	m, err := backup.Create(ctx, &buf, d.options())
	if err != nil {
		t.Fatal(err)
	}
	if m.MasterKind != vault.MasterPassphrase || len(m.Files) != 2 {
		t.Fatalf("manifest %+v", m)
	}
	// The backup needs the vault's own passphrase.
	opts := d.options()
	opts.Keys.Passphrase = ""
	if _, err := backup.Create(ctx, &bytes.Buffer{}, opts); !errors.Is(err, backup.ErrNeedPassphrase) {
		t.Fatalf("no passphrase: %v", err)
	}
	opts.Keys.Passphrase = "wrong"
	if _, err := backup.Create(ctx, &bytes.Buffer{}, opts); !errors.Is(err, vault.ErrWrongKey) {
		t.Fatalf("wrong passphrase: %v", err)
	}

	dst := filepath.Join(t.TempDir(), "restored")
	wrong, _ := backup.Identities(vault.KeySource{Passphrase: "wrong"})
	if _, err := backup.Restore(ctx, bytes.NewReader(buf.Bytes()), backup.RestoreOptions{DataDir: dst, Identities: wrong}); !errors.Is(err, backup.ErrWrongKey) {
		t.Fatalf("wrong passphrase restore: %v", err)
	}
	if res, err := backup.Restore(ctx, bytes.NewReader(buf.Bytes()), restoreOpts(t, dst, d.ks)); err != nil || !res.Authenticated {
		t.Fatal(err)
	}
	openRestored(t, dst, vault.KeySource{DataDir: dst, Passphrase: "correct horse battery staple"}, d.names)
}

func TestVaultOnlyBackup(t *testing.T) {
	d := newDataDir(t, "")
	ctx := context.Background()
	opts := d.options()
	opts.Log = nil
	var buf bytes.Buffer
	m, err := backup.Create(ctx, &buf, opts)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range m.Files {
		if f.Name == store.LogFile {
			t.Fatal("log in a vault-only backup")
		}
	}
	dst := filepath.Join(t.TempDir(), "restored")
	if _, err := backup.Restore(ctx, &buf, restoreOpts(t, dst, d.ks)); err != nil {
		t.Fatal(err)
	}
	if n := openRestored(t, dst, vault.KeySource{DataDir: dst}, d.names); n != 0 {
		t.Fatalf("%d requests in a vault-only restore", n)
	}
}

func TestIdentitiesRefusesReadableKeyFile(t *testing.T) {
	d := newDataDir(t, "")
	os.Chmod(filepath.Join(d.dir, "identity.txt"), 0o644)
	if _, err := backup.Identities(d.ks); !errors.Is(err, vault.ErrKeyFileMode) {
		t.Fatalf("readable key: %v", err)
	}
	if _, err := backup.Identities(vault.KeySource{DataDir: t.TempDir()}); !errors.Is(err, vault.ErrNoKey) {
		t.Fatalf("no key: %v", err)
	}
}
