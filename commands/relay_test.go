package commands_test

import (
	"bytes"
	"encoding/json"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// relayPost sends a small /v1/messages request with the given headers.
func relayPost(t *testing.T, base string, hdr map[string]string) (*http.Response, string) {
	t.Helper()
	body := `{"model":"claude-sonnet-4-5","max_tokens":64,"messages":[{"role":"user","content":"hi"}]}`
	req, _ := http.NewRequest("POST", base+"/v1/messages?beta=true", strings.NewReader(body))
	req.Header.Set("content-type", "application/json")
	req.Header.Set("anthropic-version", "2023-06-01")
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(b)
}

// Issue 20, relay mode, in the real binary against the fake API: a relay
// key in x-claudeflare-key with the developer's own login token is
// served with that token (the fake saw it and no pool credential, and
// never the client key); without the developer's credentials, or with
// the relay key in x-api-key, it is refused (401, x-should-retry false)
// and nothing reaches the upstream; a pooled key on the same daemon is
// served from the pool, in x-api-key or x-claudeflare-key; the relay
// key's budget applies; the rows name the key and the account "relay";
// and the developer's token is nowhere: not in the data dir's files, the
// daemon's log, requests list or payload export.
func TestRelayKeyUsesTheDevelopersOwnLogin(t *testing.T) {
	c := newCLI(t)
	poolKey := c.fake.NewAPIKey("pool")
	c.MustRun(poolKey, "accounts", "add", "pool", "--api-key-stdin")
	relay := strings.TrimSpace(c.MustRun("", "apikey", "create", "alice", "--relay", "--budget", "300tokens/day"))
	team := strings.TrimSpace(c.MustRun("", "apikey", "create", "ci"))
	devTok := c.fake.NewAccessToken("alice-login")
	d := c.startDaemon()

	c.fake.ResetRequests()
	own := map[string]string{"x-claudeflare-key": relay, "authorization": "Bearer " + devTok, "anthropic-beta": "claude-code-20250219,oauth-2025-04-20"}
	if resp, body := relayPost(t, d.url, own); resp.StatusCode != 200 {
		t.Fatalf("relay with the developer's token: %d %s", resp.StatusCode, body)
	}
	seen := c.fake.Requests()
	if len(seen) != 1 || seen[0].Account != "alice-login" || seen[0].Header.Get("Authorization") != "Bearer "+devTok {
		t.Fatalf("the fake saw %+v", seen)
	}
	if h := seen[0].Header; h.Get("X-Api-Key") != "" || h.Get("X-Claudeflare-Key") != "" ||
		h.Get("Anthropic-Beta") != "claude-code-20250219,oauth-2025-04-20" {
		t.Fatalf("upstream headers: %v", h)
	}

	for name, hdr := range map[string]map[string]string{
		"no credentials":         {"x-claudeflare-key": relay},
		"relay key in x-api-key": {"x-api-key": relay, "authorization": "Bearer " + devTok},
	} {
		c.fake.ResetRequests()
		resp, body := relayPost(t, d.url, hdr)
		if resp.StatusCode != 401 || resp.Header.Get("x-should-retry") != "false" || !strings.Contains(body, "authentication_error") {
			t.Fatalf("%s: %d x-should-retry %q %s", name, resp.StatusCode, resp.Header.Get("x-should-retry"), body)
		}
		if n := len(c.fake.Requests()); n != 0 {
			t.Fatalf("%s: the upstream got %d requests", name, n)
		}
	}

	// Mixed: the pooled key is the pool's, in either header.
	for _, hdr := range []string{"x-api-key", "x-claudeflare-key"} {
		c.fake.ResetRequests()
		if resp, body := relayPost(t, d.url, map[string]string{hdr: team}); resp.StatusCode != 200 {
			t.Fatalf("pooled key in %s: %d %s", hdr, resp.StatusCode, body)
		}
		if seen := c.fake.Requests(); len(seen) != 1 || seen[0].Account != "pool" || seen[0].Header.Get("X-Api-Key") != poolKey ||
			seen[0].Header.Get("X-Claudeflare-Key") != "" {
			t.Fatalf("pooled key in %s: the fake saw %+v", hdr, seen)
		}
	}

	// The budget hangs on the key: 187 tokens a message, 300 a day.
	if resp, body := relayPost(t, d.url, own); resp.StatusCode != 200 {
		t.Fatalf("second relay request: %d %s", resp.StatusCode, body)
	}
	if resp, body := relayPost(t, d.url, own); resp.StatusCode != 429 || !strings.Contains(body, `has used 374 tokens of its 300tokens/day budget`) {
		t.Fatalf("relay key over its budget: %d %s", resp.StatusCode, body)
	}
	if err := d.stop(t, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}

	var relayRows int
	for _, line := range strings.Split(strings.TrimSpace(c.MustRun("", "requests", "list", "--json")), "\n") {
		var row struct{ Account, Client string }
		if err := json.Unmarshal([]byte(line), &row); err != nil {
			t.Fatal(err)
		}
		if row.Account == "relay" {
			relayRows++
			if row.Client != "alice" {
				t.Fatalf("relay row of client %q", row.Client)
			}
		}
	}
	if relayRows != 3 { // two served, one refused without credentials
		t.Fatalf("%d rows with account relay", relayRows)
	}
	export := c.MustRun("", "payload", "export")
	if !strings.Contains(export, `"account":"relay"`) {
		t.Fatalf("payload export has no relay request:\n%s", export)
	}
	for what, text := range map[string]string{
		"payload export": export, "daemon log": d.logs(), "requests list": c.MustRun("", "requests", "list", "--json"),
		"audit": c.MustRun("", "audit"),
	} {
		if strings.Contains(text, devTok) {
			t.Fatalf("the developer's token is in the %s", what)
		}
		if strings.Contains(text, relay) {
			t.Fatalf("the relay key is in the %s", what)
		}
	}
	filepath.WalkDir(c.dir, func(p string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err == nil && bytes.Contains(b, []byte(devTok)) {
			t.Errorf("the developer's token is in %s", p)
		}
		return nil
	})
}

// apikey create/update --relay and --models are stored, audited and
// listed; bad input is one line, exit 2, and nothing is stored.
func TestAPIKeyRelayAndModelsFlags(t *testing.T) {
	c := newCLI(t)
	c.MustRun("", "apikey", "create", "alice", "--relay", "--models", "claude-sonnet-4-5,claude-haiku-*")
	c.MustRun("", "apikey", "create", "bob")
	list := func() map[string]map[string]any {
		out := map[string]map[string]any{}
		for _, line := range strings.Split(strings.TrimSpace(c.MustRun("", "apikey", "list", "--json")), "\n") {
			var m map[string]any
			if err := json.Unmarshal([]byte(line), &m); err != nil {
				t.Fatal(err)
			}
			out[m["name"].(string)] = m
		}
		return out
	}
	ks := list()
	if ks["alice"]["relay"] != true || ks["bob"]["relay"] != false || ks["bob"]["models"] != nil {
		t.Fatalf("list: %v", ks)
	}
	if ms, _ := json.Marshal(ks["alice"]["models"]); string(ms) != `["claude-sonnet-4-5","claude-haiku-*"]` {
		t.Fatalf("alice's models %s", ms)
	}

	for _, args := range [][]string{
		{"apikey", "create", "carol", "--models", "bad model"},
		{"apikey", "create", "carol", "--models", ""},
		{"apikey", "update", "bob", "--relay", "--no-relay"},
		{"apikey", "update", "bob", "--models", "a", "--no-models"},
		{"apikey", "update", "bob", "--relay", "--models", "a,,b"},
		{"apikey", "update", "bob"},
	} {
		_, stderr, code := c.Run("", args...)
		if code != 2 || strings.Count(strings.TrimSpace(stderr), "\n") > 1 || !strings.HasPrefix(stderr, "claudeflare: ") {
			t.Fatalf("%v: exit %d, stderr %q", args, code, stderr)
		}
	}
	if ks := list(); len(ks) != 2 || ks["bob"]["relay"] != false || ks["bob"]["models"] != nil {
		t.Fatalf("bad input stored something: %v", ks)
	}

	c.MustRun("", "apikey", "update", "bob", "--relay", "--models", "claude-opus-4-1")
	c.MustRun("", "apikey", "update", "alice", "--no-relay", "--no-models")
	ks = list()
	if ks["bob"]["relay"] != true || ks["alice"]["relay"] != false || ks["alice"]["models"] != nil {
		t.Fatalf("after update: %v", ks)
	}
	if ms, _ := json.Marshal(ks["bob"]["models"]); string(ms) != `["claude-opus-4-1"]` {
		t.Fatalf("bob's models %s", ms)
	}
	audit := c.MustRun("", "audit")
	for _, want := range []string{
		`and relay, models claude-sonnet-4-5,claude-haiku-*`,
		`"bob" (`, `relay on (was off); models set to claude-opus-4-1 (were any)`,
		`relay off (was on); models set to any (were claude-sonnet-4-5,claude-haiku-*)`,
	} {
		if !strings.Contains(audit, want) {
			t.Fatalf("audit lacks %q:\n%s", want, audit)
		}
	}
	if table := c.MustRun("", "apikey", "list"); !strings.Contains(table, "RELAY") || !strings.Contains(table, "claude-opus-4-1") {
		t.Fatalf("apikey list:\n%s", table)
	}
}
