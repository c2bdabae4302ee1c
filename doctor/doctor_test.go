package doctor_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"filippo.io/age"
	"golang.org/x/sys/unix"

	"github.com/claudeflare/claudeflare/doctor"
	"github.com/claudeflare/claudeflare/internal/testutil"
	"github.com/claudeflare/claudeflare/store"
	"github.com/claudeflare/claudeflare/vault"
)

// setup makes a data dir with a vault (default identity file), three
// accounts, and a request log with some rows.
func setup(t *testing.T) string {
	t.Helper()
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "data")
	if err := vault.EnsureDataDir(dir); err != nil {
		t.Fatal(err)
	}
	db, err := store.OpenVault(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	v, err := vault.Open(ctx, db, vault.KeySource{DataDir: dir}, vault.Options{Create: true})
	if err != nil {
		t.Fatal(err)
	}
	for i, name := range []string{"work", "home", "spare"} {
		_, err := v.AddAccount(ctx, vault.NewAccount{Name: name, Kind: store.KindOAuth, Mode: "max", Priority: i, Tier: 1},
			vault.Secrets{AccessToken: fmt.Sprintf("at-%d-placeholder", i), RefreshToken: "rt-placeholder", ExpiresAt: time.Now().Add(time.Hour)})
		if err != nil {
			t.Fatal(err)
		}
	}
	ldb, err := store.OpenLog(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer ldb.Close()
	var reqs []store.Request
	for i := 0; i < 500; i++ {
		reqs = append(reqs, store.Request{ID: fmt.Sprintf("req-%04d", i), TS: time.Now().UnixMilli(), Method: "POST",
			Path: "/v1/messages", Model: "claude-sonnet-4-5", Account: "work", Status: 200, Error: strings.Repeat("x", 100)})
	}
	if err := store.InsertRequests(ctx, ldb, reqs, nil); err != nil {
		t.Fatal(err)
	}
	return dir
}

func bigDisk(string) (uint64, uint64, error) { return 50 << 30, 100 << 30, nil }

func run(t *testing.T, opts doctor.Options) []doctor.Result {
	t.Helper()
	if opts.Statfs == nil {
		opts.Statfs = bigDisk
	}
	if opts.Keys.DataDir == "" {
		opts.Keys.DataDir = opts.DataDir
	}
	return doctor.Run(context.Background(), opts)
}

// find returns the results of check.
func find(rs []doctor.Result, check string) []doctor.Result {
	var out []doctor.Result
	for _, r := range rs {
		if r.Check == check {
			out = append(out, r)
		}
	}
	return out
}

func expect(t *testing.T, rs []doctor.Result, check string, st doctor.Status, msg, hint string) {
	t.Helper()
	for _, r := range find(rs, check) {
		if r.Status == st && strings.Contains(r.Message, msg) && strings.Contains(r.Hint, hint) {
			if (st == doctor.Error || st == doctor.Warn) && r.Hint == "" {
				t.Errorf("%s: %s without a hint", check, st)
			}
			return
		}
	}
	t.Fatalf("no %s %s result with %q and hint %q in:\n%s", check, st, msg, hint, dump(rs))
}

func dump(rs []doctor.Result) string {
	var b strings.Builder
	for _, r := range rs {
		fmt.Fprintf(&b, "  %-6s %-12s %s (hint: %s)\n", r.Status, r.Check, r.Message, r.Hint)
	}
	return b.String()
}

func TestHealthy(t *testing.T) {
	dir := setup(t)
	rs := run(t, doctor.Options{DataDir: dir})
	if doctor.Problems(rs) > 0 {
		t.Fatalf("healthy data dir fails:\n%s", dump(rs))
	}
	expect(t, rs, "vault", doctor.OK, "integrity ok", "")
	expect(t, rs, "log", doctor.OK, "integrity ok", "")
	expect(t, rs, "key", doctor.OK, "identity.txt", "")
	expect(t, rs, "vault_key", doctor.OK, "opens the vault", "")
	expect(t, rs, "accounts", doctor.OK, "3 accounts, 3 usable", "")
	expect(t, rs, "disk", doctor.OK, "free", "")
	expect(t, rs, "daemon", doctor.OK, "no daemon", "")
}

// corrupt overwrites bytes in the middle of a database file.
func corrupt(t *testing.T, path string) {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Size() < 8*4096 {
		t.Fatalf("%s is only %d bytes", path, st.Size())
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	junk := []byte(strings.Repeat("\xde\xad\xbe\xef", 2048))
	if _, err := f.WriteAt(junk, st.Size()/2/4096*4096+100); err != nil {
		t.Fatal(err)
	}
}

func TestCorruptedDatabase(t *testing.T) {
	for _, tc := range []struct{ check, file string }{{"log", store.LogFile}, {"vault", store.VaultFile}} {
		t.Run(tc.check, func(t *testing.T) {
			dir := setup(t)
			// Grow the vault too, so that its middle is data, not header.
			if tc.check == "vault" {
				db, err := store.OpenVault(dir)
				if err != nil {
					t.Fatal(err)
				}
				v, err := vault.Open(context.Background(), db, vault.KeySource{DataDir: dir}, vault.Options{})
				if err != nil {
					t.Fatal(err)
				}
				for i := 0; i < 200; i++ {
					if _, err := v.AddAccount(context.Background(), vault.NewAccount{Name: fmt.Sprintf("extra-%03d", i), Kind: store.KindAPIKey, Tier: 1},
						vault.Secrets{APIKey: strings.Repeat("k", 200)}); err != nil {
						t.Fatal(err)
					}
				}
				db.Close()
			}
			path := filepath.Join(dir, tc.file)
			corrupt(t, path)
			before, _ := os.ReadFile(path)
			rs := run(t, doctor.Options{DataDir: dir})
			if doctor.Problems(rs) == 0 {
				t.Fatalf("corruption not found:\n%s", dump(rs))
			}
			expect(t, rs, tc.check, doctor.Error, "integrity check", "restore")
			if tc.check == "vault" {
				expect(t, rs, "vault_key", doctor.Skip, "", "")
			} else {
				expect(t, rs, "vault", doctor.OK, "integrity ok", "")
			}
			// Doctor only reads.
			if after, _ := os.ReadFile(path); string(after) != string(before) {
				t.Error("doctor changed the database file")
			}
		})
	}
}

func TestGroupReadableKeyFile(t *testing.T) {
	dir := setup(t)
	key := filepath.Join(dir, "identity.txt")
	if err := os.Chmod(key, 0o640); err != nil {
		t.Fatal(err)
	}
	rs := run(t, doctor.Options{DataDir: dir})
	if doctor.Problems(rs) == 0 {
		t.Fatalf("readable key not reported:\n%s", dump(rs))
	}
	expect(t, rs, "key", doctor.Error, "mode 0640", "chmod 600 "+key)
	expect(t, rs, "vault_key", doctor.Skip, "", "")

	// The same for an explicit identity file.
	other := filepath.Join(t.TempDir(), "id.txt")
	b, _ := os.ReadFile(key)
	os.WriteFile(other, b, 0o604)
	os.Chmod(other, 0o604)
	rs = run(t, doctor.Options{DataDir: dir, Keys: vault.KeySource{IdentityFile: other, DataDir: dir}})
	expect(t, rs, "key", doctor.Error, "mode 0604", "chmod 600 "+other)
}

func TestWrongKey(t *testing.T) {
	dir := setup(t)
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	rs := run(t, doctor.Options{DataDir: dir, Keys: vault.KeySource{EncryptionKey: id.String(), DataDir: dir}})
	if doctor.Problems(rs) == 0 {
		t.Fatalf("wrong key not reported:\n%s", dump(rs))
	}
	expect(t, rs, "key", doctor.OK, "CLAUDEFLARE_ENCRYPTION_KEY", "")
	expect(t, rs, "vault_key", doctor.Error, "does not open the vault", "CLAUDEFLARE_ENCRYPTION_KEY")
	for _, r := range rs {
		if strings.Contains(r.Message+r.Hint, id.String()) {
			t.Fatal("the key appears in the report")
		}
	}

	rs = run(t, doctor.Options{DataDir: dir, Keys: vault.KeySource{Passphrase: "not it", DataDir: dir}})
	expect(t, rs, "vault_key", doctor.Error, "does not open the vault", "")

	// A missing identity file.
	os.Remove(filepath.Join(dir, "identity.txt"))
	rs = run(t, doctor.Options{DataDir: dir})
	expect(t, rs, "key", doctor.Error, "does not exist", "identity.txt")
}

func TestAccountsNeedingLogin(t *testing.T) {
	dir := setup(t)
	db, err := store.OpenVault(dir)
	if err != nil {
		t.Fatal(err)
	}
	accts, _ := store.ListAccounts(context.Background(), db)
	for _, a := range accts {
		if a.Name == "home" {
			store.SetStatus(context.Background(), db, a.ID, store.StatusNeedsLogin, "invalid_grant", time.Now())
		}
	}
	store.SetPaused(context.Background(), db, "spare", true, time.Now())
	db.Close()
	rs := run(t, doctor.Options{DataDir: dir})
	if doctor.Problems(rs) == 0 {
		t.Fatalf("needs_login not reported:\n%s", dump(rs))
	}
	expect(t, rs, "account", doctor.Error, "home needs a new login: invalid_grant", "claudeflare accounts login home")
	expect(t, rs, "accounts", doctor.OK, "3 accounts, 1 usable, 1 paused", "")
}

func TestSchemaNewerThanBinary(t *testing.T) {
	dir := setup(t)
	db, err := store.OpenLog(dir)
	if err != nil {
		t.Fatal(err)
	}
	db.W.Exec("PRAGMA user_version = 999")
	db.Close()
	rs := run(t, doctor.Options{DataDir: dir})
	expect(t, rs, "log", doctor.Error, "newer than this binary", "upgrade claudeflare")
}

func TestLowDiskSpace(t *testing.T) {
	dir := setup(t)
	rs := run(t, doctor.Options{DataDir: dir, Statfs: func(string) (uint64, uint64, error) { return 10 << 20, 100 << 30, nil }})
	expect(t, rs, "disk", doctor.Error, "only 10.0 MiB free", "cleanup")
	rs = run(t, doctor.Options{DataDir: dir, Statfs: func(string) (uint64, uint64, error) { return 500 << 20, 100 << 30, nil }})
	expect(t, rs, "disk", doctor.Warn, "only 500.0 MiB", "cleanup")
	if doctor.Problems(rs) > 0 {
		t.Fatalf("a warning fails:\n%s", dump(rs))
	}
	// The real statfs works on the real dir.
	rs = doctor.Run(context.Background(), doctor.Options{DataDir: dir, Keys: vault.KeySource{DataDir: dir}})
	if r := find(rs, "disk"); len(r) != 1 || !strings.Contains(r[0].Message, "free of") {
		t.Fatalf("statfs: %v", r)
	}
}

func TestMissingDataDirCreatesNothing(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "nothing")
	rs := run(t, doctor.Options{DataDir: dir})
	expect(t, rs, "data_dir", doctor.Error, "does not exist", "claudeflare init")
	expect(t, rs, "vault", doctor.Error, "does not exist", "claudeflare init")
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatal("doctor created the data dir")
	}
}

func TestOpenDataDirAndRunningDaemon(t *testing.T) {
	dir := setup(t)
	os.Chmod(dir, 0o755)
	f, err := os.OpenFile(filepath.Join(dir, "daemon.lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		t.Fatal(err)
	}
	rs := run(t, doctor.Options{DataDir: dir})
	expect(t, rs, "data_dir", doctor.Error, "mode 0755", "chmod 700")
	expect(t, rs, "daemon", doctor.OK, "a daemon is running", "")
	// Under a running daemon the databases still check out.
	expect(t, rs, "vault", doctor.OK, "integrity ok", "")
}

// TestVaultMAC: doctor reports a recipient added to vault.db with plain
// SQL (the vault's MAC no longer verifies), and ok for an untouched vault.
func TestVaultMAC(t *testing.T) {
	dir := setup(t)
	rs := run(t, doctor.Options{DataDir: dir})
	if r := find(rs, "vault_mac"); len(r) != 1 || r[0].Status != doctor.OK {
		t.Fatalf("untouched vault: %+v", r)
	}
	db, err := store.OpenVault(dir)
	if err != nil {
		t.Fatal(err)
	}
	stranger, _ := age.GenerateX25519Identity()
	if _, err := db.W.Exec(`UPDATE master SET recipients = recipients || char(10) || ?`, stranger.Recipient().String()); err != nil {
		t.Fatal(err)
	}
	db.Close()
	rs = run(t, doctor.Options{DataDir: dir})
	r := find(rs, "vault_mac")
	if len(r) != 1 || r[0].Status != doctor.Error || !strings.Contains(r[0].Message, "failed authentication") {
		t.Fatalf("tampered vault: %+v", r)
	}
	if doctor.Problems(rs) == 0 {
		t.Fatal("doctor does not fail")
	}
}

// TestVaultMACUpgrade: on a data dir made by the previous release, doctor
// says the MAC is missing (a warning: the next open adds it) and writes
// nothing.
func TestVaultMACUpgrade(t *testing.T) {
	dir := testutil.FirstReleaseDataDir(t)
	db, err := store.OpenVault(dir) // the schema upgrade, as any command does
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	before, _ := os.ReadFile(filepath.Join(dir, store.VaultFile))
	rs := run(t, doctor.Options{DataDir: dir})
	r := find(rs, "vault_mac")
	if len(r) != 1 || r[0].Status != doctor.Warn || !strings.Contains(r[0].Message, "no MAC yet") {
		t.Fatalf("v1 vault: %+v", r)
	}
	if after, _ := os.ReadFile(filepath.Join(dir, store.VaultFile)); string(after) != string(before) {
		t.Fatal("doctor changed vault.db")
	}
}

// TestEarlierReleaseVaultNotMigrated: doctor on a data dir of the first
// release that no command has opened yet (schema older than the binary)
// says how to upgrade it, fails nothing, and writes nothing.
func TestEarlierReleaseVaultNotMigrated(t *testing.T) {
	dir := testutil.FirstReleaseDataDir(t)
	before, _ := os.ReadFile(filepath.Join(dir, store.VaultFile))
	rs := run(t, doctor.Options{DataDir: dir})
	for _, r := range rs {
		if r.Status == doctor.Error {
			t.Errorf("error on a first-release data dir: %+v", r)
		}
	}
	r := find(rs, "vault_key")
	if len(r) != 1 || r[0].Status != doctor.Warn || !strings.Contains(r[0].Hint, "claudeflare init") {
		t.Fatalf("vault_key: %+v", r)
	}
	if after, _ := os.ReadFile(filepath.Join(dir, store.VaultFile)); string(after) != string(before) {
		t.Fatal("doctor changed vault.db")
	}
}
