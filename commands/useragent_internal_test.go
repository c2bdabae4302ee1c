package commands

import (
	"testing"

	"github.com/claudeflare/claudeflare/config"
)

// TestCLITokenCallsNameClaudeflareAndVersion: the CLI's own token calls
// (accounts add and login) say they come from claudeflare and which
// version, like the daemon's refreshes; never Claude Code's name.
func TestCLITokenCallsNameClaudeflareAndVersion(t *testing.T) {
	old := Version
	Version = "v1.2.3"
	t.Cleanup(func() { Version = old })
	cfg := config.Default()
	c, err := oauthClient(&cfg)
	if err != nil {
		t.Fatal(err)
	}
	if want := "claudeflare/v1.2.3 (+https://github.com/claudeflare/claudeflare)"; c.UserAgent != want {
		t.Fatalf("User-Agent %q, want %q", c.UserAgent, want)
	}
}
