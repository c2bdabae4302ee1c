package commands_test

import (
	"context"
	"encoding/json"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/claudeflare/claudeflare/internal/fakeapi"
	"github.com/claudeflare/claudeflare/internal/testutil"
	"github.com/claudeflare/claudeflare/store"
)

// checkLines parses `accounts check --json` (or `accounts list --json`)
// by account name.
func checkLines(t *testing.T, out string) map[string]map[string]any {
	t.Helper()
	m := map[string]map[string]any{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var v map[string]any
		if err := json.Unmarshal([]byte(line), &v); err != nil {
			t.Fatalf("not NDJSON: %q", line)
		}
		m[v["name"].(string)] = v
	}
	return m
}

// setRow changes an account's row as the daemon would have left it.
func (c *runner) setRow(name string, f func(db *store.DB, a store.Account) error) {
	c.t.Helper()
	db, err := store.OpenVault(filepath.Join(c.dir, "data"))
	if err != nil {
		c.t.Fatal(err)
	}
	defer db.Close()
	a, err := store.GetAccount(context.Background(), db, name)
	if err != nil {
		c.t.Fatal(err)
	}
	if err := f(db, a); err != nil {
		c.t.Fatal(err)
	}
}

// accounts check probes every account once with the real binary against
// the fake upstream and reports and stores each answer: ok (a stale
// block cleared), limited, limited_model, quarantined, key_refused,
// needs_login (refresh refused), paused (not probed); a setup token is
// never refreshed; an overloaded upstream is a failed check (exit 1).
func TestAccountsCheck(t *testing.T) {
	c := newCLI(t)
	c.MustRun("", "init")
	reset := time.Now().Add(3 * time.Hour).Truncate(time.Second)
	resetText := reset.UTC().Format(time.RFC3339)

	// gone: its access token is about to expire and its refresh token is
	// then revoked: check refreshes, the endpoint says invalid_grant.
	c.fake.SetExpiresIn(30 * time.Second)
	c.MustRun(c.fake.NewOAuthAccount("gone"), "accounts", "add", "gone", "--refresh-token-stdin")
	c.fake.SetExpiresIn(8 * time.Hour)
	c.fake.RevokeAccount("gone")
	for _, name := range []string{"work", "lim", "mdl", "q", "rest"} {
		c.MustRun(c.fake.NewOAuthAccount(name), "accounts", "add", name, "--refresh-token-stdin")
	}
	c.MustRun(c.fake.NewAPIKey("key"), "accounts", "add", "key", "--api-key-stdin")
	c.MustRun(c.fake.NewSetupToken("st", 0), "accounts", "add", "st", "--setup-token-stdin")
	c.MustRun("", "accounts", "pause", "rest")
	refreshesBefore := c.fake.RefreshCount("work")

	// work carries a stale 7d block that upstream does not confirm.
	c.setRow("work", func(db *store.DB, a store.Account) error {
		return store.SaveRateState(context.Background(), db, a.ID, store.RateState{
			RateLimitedUntil: reset.Add(24 * time.Hour).UnixMilli(), RLStatus: "7d rejected", Util5h: -1, Util7d: -1})
	})
	c.fake.Inject(fakeapi.Fault{Account: "lim", Count: -1, Kind: fakeapi.FaultStatus, Status: 429,
		Headers: fakeapi.RateLimitHeaders("rejected", reset)})
	c.fake.SetModelLimit("mdl", "haiku", reset)
	c.fake.SetAccountRefusal("q", 403, "permission_error", fakeapi.MsgOrgDisabled)
	c.fake.RevokeAPIKeys("key")
	c.fake.ResetRequests()

	out, stderr, code := c.Run("", "accounts", "check", "--json")
	if code != 0 {
		t.Fatalf("exit %d\n%s\n%s", code, out, stderr)
	}
	got := checkLines(t, out)
	want := map[string]string{"work": "ok", "lim": "limited", "mdl": "limited_model", "q": "quarantined",
		"key": "key_refused", "gone": "needs_login", "rest": "paused", "st": "ok"}
	for name, status := range want {
		if got[name]["status"] != status {
			t.Errorf("%s: status %v, want %s: %v", name, got[name]["status"], status, got[name])
		}
	}
	if len(got) != len(want) {
		t.Errorf("%d lines, want %d:\n%s", len(got), len(want), out)
	}
	for _, k := range []string{"name", "status", "window", "family", "until", "reason", "http_status", "detail"} {
		if _, ok := got["work"][k]; !ok {
			t.Errorf("no %q key: %v", k, got["work"])
		}
	}
	if g := got["lim"]; g["until"] != resetText || g["window"] == "" || g["http_status"] != float64(429) {
		t.Errorf("lim: %v", g)
	}
	if g := got["mdl"]; g["family"] != "haiku" || g["until"] != resetText {
		t.Errorf("mdl: %v", g)
	}
	if g := got["q"]; g["http_status"] != float64(403) || !strings.Contains(g["reason"].(string), "organization has been disabled") {
		t.Errorf("q: %v", g)
	}
	if g := got["key"]; g["http_status"] != float64(401) || !strings.Contains(g["detail"].(string), "claudeflare accounts login key --api-key-stdin") {
		t.Errorf("key: %v", g)
	}
	if g := got["gone"]; g["http_status"] != nil || !strings.Contains(g["detail"].(string), "claudeflare accounts login gone") {
		t.Errorf("gone: %v", g)
	}
	if g := got["work"]; !strings.Contains(g["detail"].(string), "cleared limited (7d)") || g["http_status"] != float64(200) {
		t.Errorf("work: %v", g)
	}
	if g := got["rest"]; g["http_status"] != nil {
		t.Errorf("rest was probed: %v", g)
	}
	for _, r := range c.fake.Requests() {
		if (r.Account == "rest" || r.Account == "gone") && r.Path != fakeapi.TokenPath {
			t.Errorf("a request of %s reached upstream: %s %s", r.Account, r.Method, r.Path)
		}
	}
	if n := c.fake.RefreshCount("st"); n != 0 {
		t.Errorf("the setup token was refreshed %d times", n)
	}
	if n := c.fake.RefreshCount("work"); n != refreshesBefore {
		t.Errorf("work's live access token was refreshed (%d -> %d)", refreshesBefore, n)
	}

	// What it learnt is stored, as list shows it.
	list := checkLines(t, c.MustRun("", "accounts", "list", "--json"))
	for name, status := range want {
		if list[name]["status"] != status {
			t.Errorf("list: %s is %v, want %s", name, list[name]["status"], status)
		}
	}
	if list["work"]["rate_limited_until"] != nil {
		t.Errorf("work's stale block was kept: %v", list["work"])
	}
	if audit := c.MustRun("", "audit"); !strings.Contains(audit, `account "work" checked: upstream accepts it: cleared limited (7d)`) ||
		!strings.Contains(audit, `account "q" checked: quarantined`) || !strings.Contains(audit, `account "gone" checked: needs_login`) {
		t.Errorf("audit:\n%s", audit)
	}

	// One account, as a table; its state is back once upstream accepts it.
	c.fake.ClearAccountRefusal("q")
	out = c.MustRun("", "accounts", "check", "q")
	if !strings.Contains(out, "NAME") || !regexpMatch(`(?m)^q +ok +- +200 +cleared quarantined: This organization has been disabled\.`, out) {
		t.Errorf("table:\n%s", out)
	}

	// An overloaded upstream says nothing about the account: reported with
	// its stored state, nothing written, exit 1.
	c.fake.Inject(fakeapi.Fault{Account: "work", Count: -1, Kind: fakeapi.FaultStatus, Status: 529})
	out, stderr, code = c.Run("", "accounts", "check", "work", "--json")
	if code != 1 || !strings.Contains(stderr, "1 of 1 accounts could not be checked") {
		t.Errorf("529: exit %d\n%s\n%s", code, out, stderr)
	}
	if g := checkLines(t, out)["work"]; g["status"] != "ok" || g["http_status"] != float64(529) {
		t.Errorf("529: %v", g)
	}

	// An unknown name: one line, exit 1.
	if _, stderr, code := c.Run("", "accounts", "check", "nobody"); code != 1 || stderr != "claudeflare: no such account: \"nobody\"\n" {
		t.Errorf("unknown name: exit %d %q", code, stderr)
	}
	if _, _, code := c.Run("", "accounts", "check", "a", "b"); code != 2 {
		t.Errorf("two names: exit %d", code)
	}

	// No secret in any output.
	for _, tok := range c.fake.AllTokens() {
		if strings.Contains(out+stderr, tok) {
			t.Fatal("a secret in check's output")
		}
	}
}

func regexpMatch(re, s string) bool { return regexp.MustCompile(re).MatchString(s) }

// A running daemon drops the block it holds in memory when `accounts
// unblock` moves the account's unblocked_at: a one-account pool limited
// for hours serves again without a restart.
func TestDaemonServesAfterAccountsUnblock(t *testing.T) {
	c := newCLI(t)
	c.MustRun("", "init")
	c.MustRun(c.fake.NewOAuthAccount("work"), "accounts", "add", "work", "--refresh-token-stdin")
	d := c.startDaemon()
	c.fake.Inject(fakeapi.Fault{Account: "work", Kind: fakeapi.FaultStatus, Status: 429,
		Headers: fakeapi.RateLimitHeaders("rejected", time.Now().Add(5*time.Hour))})
	if resp, body := postMessages(t, d.url, false); resp.StatusCode != 429 {
		t.Fatalf("the limit: %d %s", resp.StatusCode, body)
	}
	// The daemon holds the block: upstream is not asked again.
	c.fake.ResetRequests()
	if resp, body := postMessages(t, d.url, false); resp.StatusCode != 429 {
		t.Fatalf("while limited: %d %s", resp.StatusCode, body)
	}
	if n := len(c.fake.Requests()); n != 0 {
		t.Fatalf("a limited account was asked %d times", n)
	}
	// The daemon saves the block (off the request path); then unblock.
	testutil.WaitFor(t, "the block to be saved", func() bool {
		return checkLines(t, c.MustRun("", "accounts", "list", "--json"))["work"]["status"] == "limited"
	})
	out := c.MustRun("", "accounts", "unblock", "work")
	if !strings.HasPrefix(out, "unblocked work: was limited (") {
		t.Fatalf("unblock: %q", out)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, body := postMessages(t, d.url, false)
		if resp.StatusCode == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("still %d after unblock: %s\n%s", resp.StatusCode, body, d.logs())
		}
		time.Sleep(100 * time.Millisecond)
	}
	if list := checkLines(t, c.MustRun("", "accounts", "list", "--json")); list["work"]["status"] != "ok" {
		t.Fatalf("after unblock: %v", list["work"])
	}
}
