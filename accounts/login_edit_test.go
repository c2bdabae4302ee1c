package accounts_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/claudeflare/claudeflare/accounts"
	"github.com/claudeflare/claudeflare/store"
	"github.com/claudeflare/claudeflare/vault"
)

// Login keeps the row (id, priority, tier), moves the secret's version so
// a daemon reloads it, clears needs_login, and writes one audit row;
// refusals change nothing and write no row.
func TestLoginKeepsTheAccount(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	by := accounts.By{Actor: "cli:alice"}
	before, err := store.GetAccount(ctx, f.db, "work")
	if err != nil {
		t.Fatal(err)
	}
	if err := f.v.MarkNeedsLogin(ctx, before.ID, "key refused"); err != nil {
		t.Fatal(err)
	}
	if err := accounts.Login(ctx, f.v, f.key, by, "nobody", vault.Secrets{APIKey: "sk-ant-new"}, now); !errors.Is(err, store.ErrNoAccount) {
		t.Fatalf("unknown name: %v", err)
	}
	if err := accounts.Login(ctx, f.v, f.key, by, "work", vault.Secrets{RefreshToken: "rt"}, now); !errors.Is(err, accounts.ErrKindMismatch) {
		t.Fatalf("a refresh token for an API-key account: %v", err)
	}
	if rows := f.rows(t); len(rows) != 0 {
		t.Fatalf("refusals wrote audit rows: %q", rows)
	}
	if err := accounts.Login(ctx, f.v, f.key, by, "work", vault.Secrets{APIKey: "sk-ant-new"}, now); err != nil {
		t.Fatal(err)
	}
	after, err := store.GetAccount(ctx, f.db, "work")
	if err != nil {
		t.Fatal(err)
	}
	if after.ID != before.ID || after.Priority != before.Priority || after.Tier != before.Tier ||
		after.Status != store.StatusOK || after.TokenVersion <= before.TokenVersion {
		t.Fatalf("before %+v\nafter %+v", before, after)
	}
	s, err := f.v.Secrets(ctx, after.ID)
	if err != nil || s.APIKey != "sk-ant-new" {
		t.Fatalf("secret after login: %v", err)
	}
	if rows := f.rows(t); len(rows) != 1 || rows[0] != `cli:alice account.logged_in: account "work" logged in again` {
		t.Fatalf("audit rows %q", rows)
	}
}

func TestEditRefusalsChangeNothing(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	by := accounts.By{Actor: "cli:alice"}
	if _, err := f.v.AddAccount(ctx, vault.NewAccount{Name: "home", Kind: store.KindAPIKey, Tier: 1}, vault.Secrets{APIKey: "sk-ant-home"}); err != nil {
		t.Fatal(err)
	}
	taken, bad, tier, prio := "home", "a b", 3, -1
	for _, e := range []accounts.Edit{{}, {Rename: &taken}, {Rename: &bad}, {Tier: &tier}, {Priority: &prio}} {
		if err := accounts.EditAccount(ctx, f.db, f.key, by, "work", e, now); err == nil {
			t.Fatalf("edit %+v accepted", e)
		}
	}
	if err := accounts.EditAccount(ctx, f.db, f.key, by, "work", accounts.Edit{Rename: &taken}, now); !errors.Is(err, store.ErrAccountExists) {
		t.Fatalf("a taken name: %v", err)
	}
	if rows := f.rows(t); len(rows) != 0 {
		t.Fatalf("refusals wrote audit rows: %q", rows)
	}
	a, err := store.GetAccount(ctx, f.db, "work")
	if err != nil || a.Tier != 1 || a.Priority != 0 {
		t.Fatalf("after refusals: %+v %v", a, err)
	}
	newName, five := "office", 5
	if err := accounts.EditAccount(ctx, f.db, f.key, by, "work", accounts.Edit{Rename: &newName, Tier: &five}, now); err != nil {
		t.Fatal(err)
	}
	if b, err := store.GetAccount(ctx, f.db, "office"); err != nil || b.ID != a.ID || b.Tier != 5 {
		t.Fatalf("after rename: %+v %v", b, err)
	}
	if s, err := f.v.Secrets(ctx, a.ID); err != nil || s.APIKey != "sk-ant-secret-work" {
		t.Fatalf("the renamed account's secret: %v", err)
	}
}
