package accounts_test

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/claudeflare/claudeflare/accounts"
	"github.com/claudeflare/claudeflare/store"
)

// Unblock clears every block, says what it cleared in its audit row, and
// moves unblocked_at; an unknown name changes nothing and writes no row.
func TestUnblock(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	until := now.Add(48 * time.Hour)
	by := accounts.By{Actor: "cli:alice"}
	a, err := store.GetAccount(ctx, f.db, "work")
	if err != nil {
		t.Fatal(err)
	}
	if err := store.SaveRateState(ctx, f.db, a.ID, store.RateState{RateLimitedUntil: until.UnixMilli(), RLStatus: "7d rejected",
		ModelLimits: `{"opus":` + strconv.FormatInt(until.UnixMilli(), 10) + `}`, Util5h: -1, Util7d: -1}); err != nil {
		t.Fatal(err)
	}
	if err := store.SetStatus(ctx, f.db, a.ID, store.StatusKeyRefused, "API key refused (401)", now); err != nil {
		t.Fatal(err)
	}
	if _, err := accounts.Unblock(ctx, f.db, f.key, by, "nobody", now); !errors.Is(err, store.ErrNoAccount) {
		t.Fatalf("unknown name: %v", err)
	}
	if rows := f.rows(t); len(rows) != 0 {
		t.Fatalf("a refused unblock wrote %q", rows)
	}
	before, err := accounts.Unblock(ctx, f.db, f.key, by, "work", now)
	if err != nil {
		t.Fatal(err)
	}
	want := "key_refused: API key refused (401); limited (7d) until 2026-03-03T12:00:00Z; model limits: opus until 2026-03-03T12:00:00Z"
	if got := accounts.Blocks(before, now); got != want {
		t.Fatalf("Blocks:\n got %s\nwant %s", got, want)
	}
	after, err := store.GetAccount(ctx, f.db, "work")
	if err != nil {
		t.Fatal(err)
	}
	if after.Status != store.StatusOK || after.RateLimitedUntil != 0 || after.ModelLimits != "" || after.UnblockedAt == 0 {
		t.Fatalf("after: %+v", after)
	}
	if got := accounts.Blocks(after, now); got != "not blocked" {
		t.Fatalf("Blocks after: %s", got)
	}
	if rows := f.rows(t); len(rows) != 1 || rows[0] != `cli:alice account.unblocked: account "work" unblocked (was `+want+`)` {
		t.Fatalf("audit rows %q", rows)
	}
}

// The overage policy is avoid or allow; anything else is a BadInput and
// changes nothing.
func TestEditOverage(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	by := accounts.By{Actor: "cli:alice"}
	for _, bad := range []string{"", "Allow", "never"} {
		err := accounts.EditAccount(ctx, f.db, f.key, by, "work", accounts.Edit{Overage: &bad}, now)
		if !accounts.IsBadInput(err) || !errors.Is(err, accounts.ErrBadOverage) {
			t.Fatalf("%q: %v", bad, err)
		}
	}
	if err := accounts.EditAccount(ctx, f.db, f.key, by, "work", accounts.Edit{}, now); !accounts.IsBadInput(err) || !errors.Is(err, accounts.ErrNoChange) {
		t.Fatalf("no change: %v", err)
	}
	if a, _ := store.GetAccount(ctx, f.db, "work"); a.Overage != store.OverageAvoid {
		t.Fatalf("default overage %q", a.Overage)
	}
	allow := store.OverageAllow
	if err := accounts.EditAccount(ctx, f.db, f.key, by, "work", accounts.Edit{Overage: &allow}, now); err != nil {
		t.Fatal(err)
	}
	if a, _ := store.GetAccount(ctx, f.db, "work"); a.Overage != store.OverageAllow {
		t.Fatalf("overage %q", a.Overage)
	}
	if rows := f.rows(t); len(rows) != 1 || rows[0] != `cli:alice account.edited: account "work" edited: overage avoid -> allow` {
		t.Fatalf("audit rows %q", rows)
	}
}

// LoginWith refuses, before anything is spent or stored, a credential
// that is missing, doubled, malformed or of the wrong kind; the errors
// never hold the secret.
func TestLoginWithRefusals(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	by := accounts.By{Actor: "cli:alice"}
	for _, c := range []accounts.Credential{
		{},
		{APIKey: "sk-ant-a", SetupToken: "sk-ant-oat01-b"},
		{APIKey: "sk-ant two"},
		{APIKey: "   "},
		{APIKey: strings.Repeat("k", accounts.MaxSecretBytes+1)},
	} {
		err := accounts.LoginWith(ctx, f.v, nil, f.key, by, "work", c, now)
		if !accounts.IsBadInput(err) {
			t.Fatalf("%v: %v", c, err)
		}
		if strings.Contains(err.Error(), "sk-ant") {
			t.Fatalf("the error holds the secret: %v", err)
		}
	}
	// A setup token for an API-key account: refused before the vault.
	if err := accounts.LoginWith(ctx, f.v, nil, f.key, by, "work", accounts.Credential{SetupToken: "sk-ant-oat01-x"}, now); !errors.Is(err, accounts.ErrKindMismatch) {
		t.Fatalf("wrong kind: %v", err)
	}
	if err := accounts.LoginWith(ctx, f.v, nil, f.key, by, "nobody", accounts.Credential{APIKey: "sk-ant-x"}, now); !errors.Is(err, store.ErrNoAccount) {
		t.Fatalf("unknown name: %v", err)
	}
	if rows := f.rows(t); len(rows) != 0 {
		t.Fatalf("refusals wrote %q", rows)
	}
	if err := accounts.LoginWith(ctx, f.v, nil, f.key, by, "work", accounts.Credential{APIKey: " sk-ant-new \n"}, now); err != nil {
		t.Fatal(err)
	}
	a, _ := store.GetAccount(ctx, f.db, "work")
	if s, err := f.v.Secrets(ctx, a.ID); err != nil || s.APIKey != "sk-ant-new" {
		t.Fatalf("stored key: %v", err)
	}
}
