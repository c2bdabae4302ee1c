package proxy

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/claudeflare/claudeflare/config"
	"github.com/claudeflare/claudeflare/internal/fakeapi"
	"github.com/claudeflare/claudeflare/store"
	"github.com/claudeflare/claudeflare/vault"
)

// otherWriter opens the harness's vault a second time, on its own
// database connection, as another process (the CLI) would.
func otherWriter(h *harness) *vault.Vault {
	h.t.Helper()
	db, err := store.OpenVault(h.dir)
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { db.Close() })
	v, err := vault.Open(context.Background(), db, vault.KeySource{DataDir: h.dir}, vault.Options{Now: h.clock.Now})
	if err != nil {
		h.t.Fatal(err)
	}
	return v
}

// arrived waits until the gate holds its request.
func arrived(t testing.TB, g *fakeapi.Gate, what string) {
	t.Helper()
	select {
	case <-g.Arrived():
	case <-time.After(20 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
	}
}

// spentRefreshTokens lists the refresh tokens sent to the token endpoint,
// in order, and fails the test if one was sent twice or refused.
func spentRefreshTokens(h *harness) []string {
	h.t.Helper()
	var out []string
	seen := map[string]bool{}
	for _, r := range h.api.Requests() {
		if r.Path != fakeapi.TokenPath {
			continue
		}
		var body struct {
			RefreshToken string `json:"refresh_token"`
		}
		if err := json.Unmarshal(r.Body, &body); err != nil {
			h.t.Fatalf("token request body: %v", err)
		}
		if seen[body.RefreshToken] {
			h.t.Errorf("a refresh token was sent to the token endpoint twice")
		}
		if r.Status != 200 {
			h.t.Errorf("token endpoint answered %d", r.Status)
		}
		seen[body.RefreshToken] = true
		out = append(out, body.RefreshToken)
	}
	return out
}

// bearerOf is the access token a recorded upstream request carried.
func bearerOf(r fakeapi.Recorded) string {
	const p = "Bearer "
	a := r.Header.Get("Authorization")
	if len(a) < len(p) {
		return ""
	}
	return a[len(p):]
}

// TestRefreshConflictKeepsNewerTokens: while the daemon's refresh is at
// the token endpoint, another writer (a re-login from the CLI) stores new
// tokens. The daemon's compare-and-swap must lose: the vault keeps the
// re-login's tokens, the request and the ones after it use them, and the
// re-login's refresh token is never spent by the daemon.
func TestRefreshConflictKeepsNewerTokens(t *testing.T) {
	h := newHarness(t)
	id := h.addOAuth("work", 0, true) // no access token: the first use refreshes
	h.reload()
	ctx := context.Background()
	other := otherWriter(h)

	gate := h.api.HoldToken()
	done := make(chan reply, 1)
	go func() { done <- h.post(msgBody) }()
	arrived(t, gate, "the daemon's refresh")
	daemonsRefresh := h.api.CurrentRefreshToken("work") // issued to the held refresh

	cur, err := other.Secrets(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	newer := vault.Secrets{
		RefreshToken: h.api.NewOAuthAccount("work"),
		AccessToken:  h.api.NewAccessToken("work"),
		ExpiresAt:    h.clock.Now().Add(fakeapi.DefaultExpiresIn),
	}
	if _, err := other.SwapTokens(ctx, id, cur.Version, newer); err != nil {
		t.Fatal(err)
	}
	gate.Release()

	if rep := <-done; rep.status != 200 {
		t.Fatalf("request during the conflict: %d %s", rep.status, rep.body)
	}
	for i := range 3 {
		if i > 0 {
			if rep := h.post(msgBody); rep.status != 200 {
				t.Fatalf("request %d after the conflict: %d %s", i, rep.status, rep.body)
			}
		}
		reqs := h.apiRequests()
		if got := bearerOf(reqs[len(reqs)-1]); got != newer.AccessToken {
			t.Fatalf("request %d went upstream with the daemon's own refreshed token, not the newer one the other writer saved", i)
		}
	}
	s, err := other.Secrets(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if s.RefreshToken != newer.RefreshToken || s.AccessToken != newer.AccessToken {
		if s.RefreshToken == daemonsRefresh {
			t.Fatal("the daemon overwrote the newer tokens another writer had just saved")
		}
		t.Fatal("the vault does not hold the newer tokens")
	}
	if !h.api.RefreshLive(newer.RefreshToken) {
		t.Fatal("the newer refresh token was spent")
	}
	if spent := spentRefreshTokens(h); len(spent) != 1 {
		t.Fatalf("%d refreshes, want the daemon's one", len(spent))
	}
	if a := h.account("work"); a.Status != store.StatusOK {
		t.Fatalf("account status %s", a.Status)
	}
}

// TestRefreshConflictWithStaleNewerTokens: the other writer saved only a
// refresh token (its access token is already stale). The daemon refreshes
// once more with that token, spends every refresh token once, and the
// vault ends up holding the one live refresh token.
func TestRefreshConflictWithStaleNewerTokens(t *testing.T) {
	h := newHarness(t)
	id := h.addOAuth("work", 0, true)
	h.reload()
	ctx := context.Background()
	other := otherWriter(h)

	gate := h.api.HoldToken()
	done := make(chan reply, 1)
	go func() { done <- h.post(msgBody) }()
	arrived(t, gate, "the daemon's refresh")

	cur, err := other.Secrets(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	newer := vault.Secrets{RefreshToken: h.api.NewOAuthAccount("work")}
	if _, err := other.SwapTokens(ctx, id, cur.Version, newer); err != nil {
		t.Fatal(err)
	}
	gate.Release()
	if rep := <-done; rep.status != 200 {
		t.Fatalf("request during the conflict: %d %s", rep.status, rep.body)
	}
	spent := spentRefreshTokens(h)
	if len(spent) != 2 || spent[1] != newer.RefreshToken {
		t.Fatalf("%d refreshes; want the daemon's and one with the newer token", len(spent))
	}
	s, err := other.Secrets(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if s.RefreshToken != h.api.CurrentRefreshToken("work") || !h.api.RefreshLive(s.RefreshToken) {
		t.Fatal("the vault does not hold the live refresh token")
	}
	reqs := h.apiRequests()
	if got := bearerOf(reqs[len(reqs)-1]); got != s.AccessToken {
		t.Fatal("the request did not use the access token the vault holds")
	}
	// And it keeps working from the vault after a restart.
	h.restart()
	h.api.ExpireAccessTokens("work")
	if rep := h.post(msgBody); rep.status != 200 {
		t.Fatalf("after a restart: %d %s", rep.status, rep.body)
	}
	spentRefreshTokens(h)
}

// TestRefreshMarginHonoured: with tokens.refresh_margin set (to a value
// that is not the default), a token inside the margin is refreshed before
// it is used, with no 401 from the upstream; one just outside is not.
func TestRefreshMarginHonoured(t *testing.T) {
	const margin = 17 * time.Minute
	h := newHarness(t, withConfig(func(c *config.Config) { c.Tokens.RefreshMargin = config.Duration(margin) }))
	h.addOAuth("work", 0, false) // access token valid for DefaultExpiresIn
	h.reload()

	// Just outside the margin: the stored token is used as it is.
	h.clock.Add(fakeapi.DefaultExpiresIn - margin - time.Second)
	if rep := h.post(msgBody); rep.status != 200 {
		t.Fatalf("outside the margin: %d %s", rep.status, rep.body)
	}
	if n := h.api.TokenRequests(); n != 0 {
		t.Fatalf("%d token requests one second outside the refresh margin, want 0", n)
	}

	// Two seconds later, just inside: refreshed before use.
	h.clock.Add(2 * time.Second)
	if rep := h.post(msgBody); rep.status != 200 {
		t.Fatalf("inside the margin: %d %s", rep.status, rep.body)
	}
	if n := h.api.RefreshCount("work"); n != 1 {
		t.Fatalf("%d refreshes one second inside the refresh margin, want 1", n)
	}
	reqs := h.apiRequests()
	for _, r := range reqs {
		if r.Status == 401 {
			t.Fatal("the upstream answered 401: the token was not refreshed ahead of its expiry")
		}
	}
	if got := bearerOf(reqs[len(reqs)-1]); got != h.api.CurrentAccessToken("work") {
		t.Fatal("the request inside the margin did not use the refreshed token")
	}
}
