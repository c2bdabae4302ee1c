package commands_test

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/claudeflare/claudeflare/internal/testutil"
)

// claudeCodeBinary returns Claude Code's CLI: $CLAUDEFLARE_TEST_CLAUDE if
// set, else the npm package @anthropic-ai/claude-code installed once into
// the user's cache directory (npm and node needed).
func claudeCodeBinary(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("CLAUDEFLARE_TEST_CLAUDE"); p != "" {
		return p
	}
	npm, err := exec.LookPath("npm")
	if err != nil {
		testutil.Missing(t, "npm not installed: the Claude Code relay test installs @anthropic-ai/claude-code with it")
	}
	if _, err := exec.LookPath("node"); err != nil {
		testutil.Missing(t, "node not installed: the Claude Code relay test needs it")
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = t.TempDir()
	}
	dir := filepath.Join(cache, "claudeflare-test", "claude-code")
	bin := filepath.Join(dir, "node_modules", ".bin", "claude")
	if _, err := os.Stat(bin); err == nil {
		return bin
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, npm, "install", "--prefix", dir, "--no-audit", "--no-fund", "@anthropic-ai/claude-code").CombinedOutput()
	if err != nil {
		testutil.Missing(t, "npm install @anthropic-ai/claude-code failed: "+err.Error()+": "+lastLine(string(out)))
	}
	if _, err := os.Stat(bin); err != nil {
		testutil.Missing(t, "npm installed @anthropic-ai/claude-code without its claude binary")
	}
	return bin
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	return s[strings.LastIndex(s, "\n")+1:]
}

// Issue 20's "done when": Claude Code itself, with a relay key in
// ANTHROPIC_CUSTOM_HEADERS and its own token, completes a prompt through
// the daemon; the prompt shows in the log under the key (account relay)
// while the fake saw the developer's token and no pool credential; the
// token is not in the daemon's log or the payload export.
func TestClaudeCodeThroughARelayKey(t *testing.T) {
	claude := claudeCodeBinary(t)
	c := newCLI(t)
	poolKey := c.fake.NewAPIKey("pool")
	c.MustRun(poolKey, "accounts", "add", "pool", "--api-key-stdin")
	relay := strings.TrimSpace(c.MustRun("", "apikey", "create", "alice", "--relay"))
	d := c.startDaemon()

	for _, cred := range []struct{ env, account, header, want string }{
		{"CLAUDE_CODE_OAUTH_TOKEN", "alice-login", "Authorization", "Bearer "},
		{"ANTHROPIC_API_KEY", "alice-console", "X-Api-Key", ""},
	} {
		var tok string
		if cred.header == "Authorization" {
			tok = c.fake.NewAccessToken(cred.account)
		} else {
			tok = c.fake.NewAPIKey(cred.account)
		}
		c.fake.ResetRequests()
		home := t.TempDir()
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		cmd := exec.CommandContext(ctx, claude, "-p", "say hello")
		cmd.Dir = home
		cmd.Env = []string{
			"HOME=" + home, "PATH=" + os.Getenv("PATH"), "TERM=dumb",
			"ANTHROPIC_BASE_URL=" + d.url,
			"ANTHROPIC_CUSTOM_HEADERS=x-claudeflare-key: " + relay,
			cred.env + "=" + tok,
			"CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1", "DISABLE_AUTOUPDATER=1", "DISABLE_TELEMETRY=1",
			"DISABLE_ERROR_REPORTING=1", "CLAUDE_CODE_DISABLE_TERMINAL_TITLE=1",
		}
		out, err := cmd.CombinedOutput()
		cancel()
		if err != nil {
			t.Fatalf("%s: claude -p: %v\n%s\ndaemon:\n%s", cred.env, err, out, d.logs())
		}
		if !strings.Contains(string(out), strings.TrimSpace(c.fake.ResponseText())) {
			t.Fatalf("%s: claude printed %q, not the fake's answer %q", cred.env, out, c.fake.ResponseText())
		}
		var messages int
		for _, r := range c.fake.Requests() {
			for k, vs := range r.Header {
				for _, v := range vs {
					if strings.Contains(v, poolKey) || strings.Contains(v, relay) {
						t.Fatalf("%s: upstream header %s carried the pool's key or the relay key", cred.env, k)
					}
				}
			}
			if r.Path != "/v1/messages" {
				continue
			}
			messages++
			if r.Account != cred.account || r.Header.Get(cred.header) != cred.want+tok {
				t.Fatalf("%s: the fake saw account %q with %s %q", cred.env, r.Account, cred.header, r.Header.Get(cred.header))
			}
		}
		if messages == 0 {
			t.Fatalf("%s: no /v1/messages reached the fake", cred.env)
		}
		if strings.Contains(d.logs(), tok) {
			t.Fatalf("%s: the developer's credential is in the daemon's log", cred.env)
		}
		defer func(tok, env string) {
			if strings.Contains(c.MustRun("", "payload", "export"), tok) {
				t.Errorf("%s: the developer's credential is in payload export", env)
			}
		}(tok, cred.env)
	}
	if err := d.stop(t, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	served := 0
	for _, line := range strings.Split(strings.TrimSpace(c.MustRun("", "requests", "list", "--json")), "\n") {
		var row struct {
			Account, Client, Path string
			Status                int
		}
		if err := json.Unmarshal([]byte(line), &row); err != nil {
			t.Fatal(err)
		}
		if row.Account != "relay" || row.Client != "alice" {
			t.Fatalf("a row not under the relay key: %s", line)
		}
		if strings.HasPrefix(row.Path, "/v1/messages") && row.Status == 200 {
			served++
		}
	}
	if served < 2 {
		t.Fatalf("%d served /v1/messages rows under the key", served)
	}
}
