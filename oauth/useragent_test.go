package oauth_test

import (
	"context"
	"strings"
	"testing"

	"github.com/claudeflare/claudeflare/internal/fakeapi"
	"github.com/claudeflare/claudeflare/oauth"
)

func TestUserAgentNamesClaudeflare(t *testing.T) {
	for version, want := range map[string]string{
		"v1.4.0": "claudeflare/v1.4.0 (+https://github.com/claudeflare/claudeflare)",
		"dev":    "claudeflare/dev (+https://github.com/claudeflare/claudeflare)",
		"":       "claudeflare (+https://github.com/claudeflare/claudeflare)",
		// What cannot be a product version is left out, not sent.
		"1.0 (evil)\r\nX-Injected: 1": "claudeflare (+https://github.com/claudeflare/claudeflare)",
		"claude-cli/2.0":              "claudeflare (+https://github.com/claudeflare/claudeflare)",
	} {
		if got := oauth.UserAgent(version); got != want {
			t.Errorf("UserAgent(%q) = %q, want %q", version, got, want)
		}
	}
}

// The token endpoint sees claudeflare and its version, on a refresh and
// on a login's code exchange, and never Claude Code's User-Agent.
func TestTokenCallsCarryClaudeflareUserAgent(t *testing.T) {
	s, c := setup(t)
	c.UserAgent = oauth.UserAgent("v1.4.0")
	want := "claudeflare/v1.4.0 (+https://github.com/claudeflare/claudeflare)"
	rt := s.NewOAuthAccount("alice")
	if _, err := c.Refresh(context.Background(), rt); err != nil {
		t.Fatal(err)
	}
	p, _ := oauth.NewPKCE()
	code := s.NewAuthCode("alice")
	s.ExpectChallenge(code, p.Challenge)
	got, err := oauth.ParseCallback(code+"#"+p.State, p.State)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Exchange(context.Background(), got, p); err != nil {
		t.Fatal(err)
	}
	// A client without a version still says claudeflare.
	c.UserAgent = ""
	if _, err := c.Refresh(context.Background(), s.CurrentRefreshToken("alice")); err != nil {
		t.Fatal(err)
	}
	var uas []string
	for _, r := range s.Requests() {
		if r.Path == fakeapi.TokenPath {
			uas = append(uas, r.Header.Get("User-Agent"))
		}
	}
	if len(uas) != 3 || uas[0] != want || uas[1] != want || uas[2] != "claudeflare (+https://github.com/claudeflare/claudeflare)" {
		t.Fatalf("token requests' User-Agents: %q", uas)
	}
	for _, ua := range uas {
		if l := strings.ToLower(ua); strings.Contains(l, "claude-cli") || strings.Contains(l, "claude-code") {
			t.Fatalf("User-Agent imitates Claude Code: %q", ua)
		}
	}
}
