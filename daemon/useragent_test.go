package daemon_test

import (
	"testing"

	"github.com/claudeflare/claudeflare/daemon"
	"github.com/claudeflare/claudeflare/internal/fakeapi"
	"github.com/claudeflare/claudeflare/metrics"
)

// The daemon's token refresh names claudeflare and its version; the
// request it forwards keeps the client's own User-Agent.
func TestRefreshUserAgentNamesClaudeflareAndClientsPassThrough(t *testing.T) {
	// The stack's account has only a refresh token: the first request refreshes.
	s := newStack(t, func(o *daemon.Options) { o.Build = metrics.BuildInfo{Version: "v9.8.7"} })
	const clientUA = "claude-cli/2.0.14 (external, cli)"
	if code := s.messageAs(clientUA); code != 200 {
		t.Fatalf("status %d", code)
	}
	var token, forwarded []string
	for _, r := range s.api.Requests() {
		switch r.Path {
		case fakeapi.TokenPath:
			token = append(token, r.Header.Get("User-Agent"))
		case "/v1/messages":
			forwarded = append(forwarded, r.Header.Get("User-Agent"))
		}
	}
	if len(token) != 1 || token[0] != "claudeflare/v9.8.7 (+https://github.com/claudeflare/claudeflare)" {
		t.Fatalf("token endpoint saw User-Agent %q", token)
	}
	if len(forwarded) != 1 || forwarded[0] != clientUA {
		t.Fatalf("upstream saw User-Agent %q, want the client's %q", forwarded, clientUA)
	}
}
