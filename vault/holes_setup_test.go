package vault_test

import (
	"context"
	"testing"
	"time"

	"github.com/claudeflare/claudeflare/internal/testutil"
	"github.com/claudeflare/claudeflare/store"
	"github.com/claudeflare/claudeflare/vault"
)

// holesSetup is a fresh data dir with vault.db and requests.db open and a
// test clock, as the retired-key tests need.
type holesSetup struct {
	dir      string
	vdb, ldb *store.DB
	clk      *testutil.Clock
}

func newHolesSetup(t *testing.T) *holesSetup {
	t.Helper()
	dir := t.TempDir()
	if err := vault.EnsureDataDir(dir); err != nil {
		t.Fatal(err)
	}
	vdb, err := store.OpenVault(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { vdb.Close() })
	ldb, err := store.OpenLog(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ldb.Close() })
	return &holesSetup{dir: dir, vdb: vdb, ldb: ldb, clk: testutil.NewClock(time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC))}
}

// open opens the vault (creating it the first time) on the test clock.
func (s *holesSetup) open(t *testing.T) *vault.Vault {
	t.Helper()
	v, err := vault.Open(context.Background(), s.vdb, vault.KeySource{DataDir: s.dir}, vault.Options{Create: true, Now: s.clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	return v
}
