package doctor_test

import (
	"context"
	"strings"
	"testing"

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
