package accounts_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/claudeflare/claudeflare/accounts"
	"github.com/claudeflare/claudeflare/audit"
	"github.com/claudeflare/claudeflare/store"
	"github.com/claudeflare/claudeflare/vault"
)

type fixture struct {
	db  *store.DB
	v   *vault.Vault
	key []byte
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	dir := t.TempDir()
	db, err := store.OpenVault(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	ctx := context.Background()
	v, err := vault.Open(ctx, db, vault.KeySource{DataDir: dir}, vault.Options{Create: true})
	if err != nil {
		t.Fatal(err)
	}
	p, err := audit.Prepare(ctx, v, time.Now(), "test", true)
	if err != nil || p.Problem != nil {
		t.Fatalf("prepare audit: %v %v", err, p.Problem)
	}
	if _, err := v.AddAccount(ctx, vault.NewAccount{Name: "work", Kind: store.KindAPIKey, Tier: 1}, vault.Secrets{APIKey: "sk-ant-secret-work"}); err != nil {
		t.Fatal(err)
	}
	return &fixture{db: db, v: v, key: p.Key}
}

// rows lists the audit rows after the one that started the chain.
func (f *fixture) rows(t *testing.T) []string {
	t.Helper()
	var out []string
	err := audit.List(context.Background(), f.db, time.Time{}, func(e audit.Entry) error {
		if e.Action != audit.ActionAuditKeyed {
			out = append(out, e.Actor+" "+e.Action+": "+e.Detail)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func (f *fixture) paused(t *testing.T, name string) bool {
	t.Helper()
	a, err := store.GetAccount(context.Background(), f.db, name)
	if err != nil {
		t.Fatal(err)
	}
	return a.Paused
}

// The command line and the admin API make the same change and the same
// row, told apart by actor and "through the admin API" only.
func TestPauseResumeFromCLIAndAPI(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	cli := accounts.By{Actor: "cli:alice"}
	api := accounts.By{Actor: audit.KeyActor("ops"), Via: "the admin API"}
	if err := accounts.Pause(ctx, f.db, f.key, cli, "work", now); err != nil || !f.paused(t, "work") {
		t.Fatalf("pause from the CLI: %v", err)
	}
	if err := accounts.Resume(ctx, f.db, f.key, api, "work", now); err != nil || f.paused(t, "work") {
		t.Fatalf("resume from the API: %v", err)
	}
	if err := accounts.SetPaused(ctx, f.db, f.key, api, "work", true, now); err != nil || !f.paused(t, "work") {
		t.Fatalf("pause from the API: %v", err)
	}
	want := []string{
		`cli:alice account.paused: account "work" paused`,
		`key:ops account.resumed: account "work" resumed through the admin API`,
		`key:ops account.paused: account "work" paused through the admin API`,
	}
	if got := f.rows(t); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("audit rows:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if _, err := audit.Verify(ctx, f.db, f.key, nil); err != nil {
		t.Fatal(err)
	}
}

func TestRemoveAndAdded(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	cli := accounts.By{Actor: "cli:alice"}
	if err := accounts.Remove(ctx, f.db, f.key, cli, "work", time.Now()); err != nil {
		t.Fatal(err)
	}
	if _, err := store.GetAccount(ctx, f.db, "work"); !errors.Is(err, store.ErrNoAccount) {
		t.Fatalf("after remove: %v", err)
	}
	if err := accounts.Added(ctx, f.db, f.key, cli, "work", time.Now()); err != nil {
		t.Fatal(err)
	}
	want := `cli:alice account.removed: account "work" removed` + "\n" + `cli:alice account.added: account "work" added`
	if got := strings.Join(f.rows(t), "\n"); got != want {
		t.Fatalf("audit rows:\n%s", got)
	}
}

// An unknown name is store.ErrNoAccount, not an audit error, and writes
// no row; a missing audit key changes nothing.
func TestUnknownNameOrNoKeyChangesNothing(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	by := accounts.By{Actor: "cli:alice"}
	for _, op := range []func() error{
		func() error { return accounts.Pause(ctx, f.db, f.key, by, "nope", time.Now()) },
		func() error { return accounts.Resume(ctx, f.db, f.key, by, "nope", time.Now()) },
		func() error { return accounts.Remove(ctx, f.db, f.key, by, "nope", time.Now()) },
	} {
		if err := op(); !errors.Is(err, store.ErrNoAccount) || accounts.IsAuditError(err) {
			t.Fatalf("unknown name: %v", err)
		}
	}
	if err := accounts.Pause(ctx, f.db, nil, by, "work", time.Now()); err == nil || f.paused(t, "work") {
		t.Fatalf("no audit key: %v; paused %v", err, f.paused(t, "work"))
	}
	if err := accounts.Remove(ctx, f.db, nil, by, "work", time.Now()); err == nil {
		t.Fatal("removed without an audit key")
	}
	if _, err := store.GetAccount(ctx, f.db, "work"); err != nil {
		t.Fatalf("account gone: %v", err)
	}
	if rows := f.rows(t); len(rows) != 0 {
		t.Fatalf("rows: %q", rows)
	}
}

// A change whose audit row cannot be written (the log's head deleted:
// the chain cannot be extended) is an AuditError carrying the audit
// write's text.
func TestAuditFailureIsAuditError(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	if _, err := f.db.W.ExecContext(ctx, `DELETE FROM audit_head; DELETE FROM audit_log`); err != nil {
		t.Fatal(err)
	}
	err := accounts.Pause(ctx, f.db, f.key, accounts.By{Actor: "cli:alice"}, "work", time.Now())
	if !accounts.IsAuditError(err) || !strings.HasPrefix(err.Error(), "write audit log: ") {
		t.Fatalf("err: %v", err)
	}
}
