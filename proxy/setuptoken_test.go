package proxy

import (
	"context"
	"strings"
	"testing"

	"github.com/claudeflare/claudeflare/store"
	"github.com/claudeflare/claudeflare/vault"
)

// A long-lived token made by `claude setup-token` is used as is, never
// refreshed; once upstream refuses it, the account needs a login.
func TestSetupTokenNeverRefreshed(t *testing.T) {
	h := newHarness(t)
	_, err := h.vault.AddAccount(context.Background(), vault.NewAccount{Name: "st", Kind: store.KindOAuth, Mode: store.ModeSetupToken, Tier: 1},
		vault.Secrets{AccessToken: h.api.NewAccessToken("st")})
	if err != nil {
		t.Fatal(err)
	}
	h.reload()
	if rep := h.post(msgBody); rep.status != 200 {
		t.Fatalf("with the setup token: %d %s", rep.status, rep.body)
	}

	h.api.RevokeAccount("st")
	for range 3 {
		if rep := h.post(msgBody); rep.status == 200 {
			t.Fatalf("a revoked setup token served: %s", rep.body)
		}
		if h.account("st").Status == store.StatusNeedsLogin {
			break
		}
	}
	a := h.account("st")
	if a.Status != store.StatusNeedsLogin || !strings.Contains(a.StatusReason, "setup token") {
		t.Fatalf("after upstream refused the setup token: %q %q", a.Status, a.StatusReason)
	}
	if n := h.api.RefreshCount("st"); n != 0 {
		t.Fatalf("a setup token was refreshed %d times", n)
	}
	if !strings.Contains(h.logs.String(), "claudeflare accounts login st") {
		t.Fatalf("no login hint in the logs:\n%s", h.logs.String())
	}
}
