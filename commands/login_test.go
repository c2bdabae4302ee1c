package commands_test

import (
	"strings"
	"testing"
	"time"
)

// A running daemon uses the credentials of `accounts login` without a
// restart or a signal: an account that needed a login serves again.
func TestDaemonServesAfterAccountsLogin(t *testing.T) {
	c := newCLI(t)
	c.MustRun("", "init")
	c.MustRun(c.fake.NewOAuthAccount("work"), "accounts", "add", "work", "--refresh-token-stdin", "--priority", "3", "--tier", "5")
	d := c.startDaemon()
	if resp, body := postMessages(t, d.url, false); resp.StatusCode != 200 {
		t.Fatalf("before: %d %s", resp.StatusCode, body)
	}

	// Upstream revokes every token of the account: it needs a login.
	c.fake.RevokeAccount("work")
	waitStatus := func(want int) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			resp, body := postMessages(t, d.url, false)
			if resp.StatusCode == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("want %d, got %d %s\n%s", want, resp.StatusCode, body, d.logs())
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	waitStatus(503)
	if out := c.MustRun("", "accounts", "list", "--json"); !strings.Contains(out, `"status":"needs_login"`) {
		t.Fatalf("after revoke: %s", out)
	}
	if !strings.Contains(d.logs(), "claudeflare accounts login work") {
		t.Fatalf("the daemon's needs-login hint does not name accounts login:\n%s", d.logs())
	}

	c.MustRun(c.fake.NewOAuthAccount("work"), "accounts", "login", "work", "--refresh-token-stdin")
	waitStatus(200)
	out := c.MustRun("", "accounts", "list", "--json")
	if !strings.Contains(out, `"name":"work","kind":"oauth","mode":"max","priority":3,"tier":5,"paused":false,"status":"ok"`) {
		t.Fatalf("after login: %s", out)
	}
	for _, tok := range c.fake.AllTokens() {
		if strings.Contains(d.logs(), tok) || strings.Contains(out, tok) {
			t.Fatal("a token in the daemon's log or the listing")
		}
	}
}
