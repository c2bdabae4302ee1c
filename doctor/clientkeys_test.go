package doctor_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/claudeflare/claudeflare/access"
	"github.com/claudeflare/claudeflare/audit"
	"github.com/claudeflare/claudeflare/doctor"
	"github.com/claudeflare/claudeflare/internal/testutil"
	"github.com/claudeflare/claudeflare/store"
	"github.com/claudeflare/claudeflare/vault"
)

// On the previous release's data dir (testdata/upgrade/v1, schema
// migrated), whose client keys have no MAC yet, doctor warns (it opens read-only and seals
// nothing); once a master key holder has opened the vault, the keys are
// ok.
func TestDoctorClientKeysOfAnEarlierRelease(t *testing.T) {
	ctx := context.Background()
	dir := testutil.FirstReleaseDataDir(t)
	// The schema is brought up to date (doctor itself never writes, and
	// cannot open a vault of an older schema).
	db, err := store.OpenVault(dir)
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	find := func(rs []doctor.Result) doctor.Result {
		for _, r := range rs {
			if r.Check == "client_keys" {
				return r
			}
		}
		t.Fatalf("no client_keys result: %+v", rs)
		return doctor.Result{}
	}
	opts := doctor.Options{DataDir: dir, Keys: vault.KeySource{DataDir: dir}, Statfs: func(string) (uint64, uint64, error) { return 1 << 40, 1 << 41, nil }}
	r := find(doctor.Run(ctx, opts))
	if r.Status != doctor.Warn || !strings.Contains(r.Message, "2 client keys made by an earlier release, not authenticated yet") {
		t.Fatalf("before the upgrade: %+v", r)
	}
	r = find(doctor.Run(ctx, opts))
	if r.Status != doctor.Warn {
		t.Fatalf("doctor sealed the keys: %+v", r)
	}
	v := openVault(t, dir)
	if _, err := v.AuditKey(ctx); err != nil { // what every command run by the master key holder does
		t.Fatal(err)
	}
	v.DB().Close()
	if r = find(doctor.Run(ctx, opts)); r.Status != doctor.OK || r.Message != "2 client keys, each with a valid MAC" {
		t.Fatalf("after the upgrade: %+v", r)
	}
}

func openVault(t *testing.T, dir string) *vault.Vault {
	t.Helper()
	db, err := store.OpenVault(dir)
	if err != nil {
		t.Fatal(err)
	}
	v, err := vault.Open(context.Background(), db, vault.KeySource{DataDir: dir}, vault.Options{})
	if err != nil {
		db.Close()
		t.Fatal(err)
	}
	return v
}

// TestDoctorTamperedClientKey: a client key row whose role was changed
// outside claudeflare (a viewer key made admin by whoever can write
// vault.db) is named as an Error; the untouched key is not.
func TestDoctorTamperedClientKey(t *testing.T) {
	ctx := context.Background()
	dir := setup(t)
	v := openVault(t, dir)
	p, err := audit.Prepare(ctx, v, time.Now(), "test", true)
	if err != nil || p.Problem != nil {
		t.Fatalf("prepare audit: %v %v", err, p.Problem)
	}
	ak := p.Key
	for _, name := range []string{"ci", "dash"} {
		if _, _, err := access.CreateKey(ctx, v.DB(), ak, name, access.RoleViewer, "test", time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := v.DB().W.Exec(`UPDATE client_keys SET role = 'admin' WHERE name = 'ci'`); err != nil {
		t.Fatal(err)
	}
	v.DB().Close()
	rs := run(t, doctor.Options{DataDir: dir})
	expect(t, rs, "client_key", doctor.Error, `client key "ci" (role "admin", live) failed authentication`, "apikey revoke")
	expect(t, rs, "client_keys", doctor.Error, "1 of 2 client keys failed authentication", "")
	for _, r := range find(rs, "client_key") {
		if strings.Contains(r.Message, `"dash"`) {
			t.Errorf("the untouched key was flagged: %+v", r)
		}
	}
}
