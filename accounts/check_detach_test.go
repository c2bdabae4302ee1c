package accounts_test

import (
	"context"
	"testing"
	"time"

	"github.com/claudeflare/claudeflare/accounts"
	"github.com/claudeflare/claudeflare/internal/fakeapi"
	"github.com/claudeflare/claudeflare/oauth"
	"github.com/claudeflare/claudeflare/store"
	"github.com/claudeflare/claudeflare/vault"
)

// A check whose caller goes away (an admin API client hanging up) after
// the token endpoint rotated the refresh token still saves the new one:
// the refresh token the vault holds is the endpoint's live one.
func TestCheckCancelledMidRefreshKeepsToken(t *testing.T) {
	f := newFixture(t)
	fake := fakeapi.New()
	t.Cleanup(fake.Close)
	ctx := context.Background()
	rt := fake.NewOAuthAccount("pro")
	if _, err := f.v.AddAccount(ctx, vault.NewAccount{Name: "pro", Kind: store.KindOAuth, Tier: 1},
		vault.Secrets{AccessToken: "expired", RefreshToken: rt, ExpiresAt: time.Now().Add(-time.Hour)}); err != nil {
		t.Fatal(err)
	}
	probe := func(ctx context.Context, kind, secret string, now time.Time) (accounts.ProbeResult, error) {
		return accounts.ProbeResult{Status: 200}, ctx.Err()
	}
	c := &accounts.Checker{Vault: f.v, OAuth: &oauth.Client{TokenURL: fake.TokenURL(), ClientID: "test-client"},
		Probe: probe, AuditKey: f.key, By: accounts.By{Actor: "test"}}

	gate := fake.HoldToken()
	cctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.Check(cctx, "pro") // its result does not matter: the caller left
	}()
	<-gate.Arrived() // the refresh token is spent upstream
	cancel()
	gate.Release()
	<-done

	a, err := store.GetAccount(ctx, f.db, "pro")
	if err != nil {
		t.Fatal(err)
	}
	s, err := f.v.Secrets(ctx, a.ID)
	if err != nil {
		t.Fatal(err)
	}
	if cur := fake.CurrentRefreshToken("pro"); s.RefreshToken != cur || !fake.RefreshLive(cur) {
		t.Fatalf("the refresh token rotated during a cancelled check was not saved (stored is current: %v)", s.RefreshToken == cur)
	}
}
