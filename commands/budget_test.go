package commands_test

import (
	"encoding/json"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// budgetPost sends a small /v1/messages request with a client key.
func budgetPost(t *testing.T, base, key string) (*http.Response, string) {
	t.Helper()
	return relayPost(t, base, map[string]string{"x-api-key": key})
}

// Issue 18, budgets per client key, in the real binary against the fake
// API (each message reports 25 input, 12 output, 100 cache-read and 50
// cache-write tokens: 187 billed tokens): a key with a small token budget
// is served until it has used it, then gets a 429 with x-should-retry:
// false while another key is still served; a budget set by `apikey
// update` reaches the running daemon; after a restart the daemon starts
// from the log's use, so the key is still refused; apikey list shows the
// use.
func TestDaemonEnforcesClientKeyBudgets(t *testing.T) {
	c := newCLI(t)
	c.MustRun(c.fake.NewAPIKey("pool"), "accounts", "add", "pool", "--api-key-stdin")
	small := strings.TrimSpace(c.MustRun("", "apikey", "create", "small", "--budget", "300tokens/day"))
	other := strings.TrimSpace(c.MustRun("", "apikey", "create", "other"))
	d := c.startDaemon()

	for i := 1; i <= 2; i++ { // 187, then 374 of 300: the second goes over, and is served
		if resp, body := budgetPost(t, d.url, small); resp.StatusCode != 200 {
			t.Fatalf("request %d under the budget: %d %s", i, resp.StatusCode, body)
		}
	}
	resp, body := budgetPost(t, d.url, small)
	if resp.StatusCode != 429 || resp.Header.Get("x-should-retry") != "false" {
		t.Fatalf("over the budget: %d x-should-retry %q %s", resp.StatusCode, resp.Header.Get("x-should-retry"), body)
	}
	if ra, err := strconv.Atoi(resp.Header.Get("retry-after")); err != nil || ra <= 0 || ra > 86400 {
		t.Errorf("retry-after %q, want the seconds to midnight UTC", resp.Header.Get("retry-after"))
	}
	var e struct {
		Type  string `json:"type"`
		Error struct{ Type, Message string }
	}
	if err := json.Unmarshal([]byte(body), &e); err != nil || e.Type != "error" || e.Error.Type != "rate_limit_error" ||
		!strings.Contains(e.Error.Message, `client key "small" has used 374 tokens of its 300tokens/day budget for today (UTC); it resets at `) {
		t.Fatalf("429 body: %s", body)
	}
	if resp, body := budgetPost(t, d.url, other); resp.StatusCode != 200 {
		t.Fatalf("another key while small is over: %d %s", resp.StatusCode, body)
	}

	// A budget given to a running daemon's key: "other" has used 187
	// tokens this week, over the new 100.
	// (Polled on /api/keys: a request served meanwhile would add to the use.)
	c.MustRun("", "apikey", "update", "other", "--budget", "100tokens/week")
	var kb []byte
	waitUntil(t, "the daemon to apply other's new budget", func() bool {
		kb = apiKeys(t, d.url, other)
		return strings.Contains(string(kb), `"period":"week"`)
	})
	if !regexp.MustCompile(`^\{"keys":\[\{"name":"other","role":"api","budgets":\[\{"amount":100,"unit":"tokens","period":"week","used":187,.*"exceeded":true\}\]\}\]\}`).Match(kb) {
		t.Fatalf("/api/keys for an api key: %s", kb)
	}
	if resp, body := budgetPost(t, d.url, other); resp.StatusCode != 429 || !strings.Contains(body, "used 187 tokens of its 100tokens/week budget for this week (UTC, from Monday)") {
		t.Fatalf("other over its new budget: %d %s", resp.StatusCode, body)
	}
	// Raised: small is served again.
	c.MustRun("", "apikey", "update", "small", "--budget", "1Mtokens/day")
	waitUntil(t, "the daemon to apply small's raised budget", func() bool {
		resp, _ := budgetPost(t, d.url, small)
		return resp.StatusCode == 200
	})
	if err := d.stop(t, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}

	// apikey list reads the use from the log: small made three requests
	// that were served (561 tokens), other one (187).
	out := c.MustRun("", "apikey", "list", "--json")
	for _, want := range []string{
		`"name":"small",.*"budgets":\[\{"amount":1000000,"unit":"tokens","period":"day","used":561,`,
		`"name":"other",.*"budgets":\[\{"amount":100,"unit":"tokens","period":"week","used":187,.*"exceeded":true\}\]`,
	} {
		if !regexp.MustCompile(want).MatchString(out) {
			t.Errorf("apikey list --json does not match %s:\n%s", want, out)
		}
	}

	if out := c.MustRun("", "apikey", "list"); !regexp.MustCompile(`(?m)^other\s.*\s100tokens/week\s+187 tokens \(187%, over\)(\s|$)`).MatchString(out) {
		t.Errorf("apikey list:\n%s", out)
	}

	// After a restart the daemon starts from the log's use: small, back
	// at 300 tokens a day, is refused from the first request.
	c.MustRun("", "apikey", "update", "small", "--budget", "300tokens/day")
	d = c.startDaemon()
	if resp, body := budgetPost(t, d.url, small); resp.StatusCode != 429 || !strings.Contains(body, "used 561 tokens") {
		t.Fatalf("after a restart: %d %s", resp.StatusCode, body)
	}
	c.MustRun("", "apikey", "update", "small", "--no-budget")
	waitUntil(t, "the daemon to lift small's budget", func() bool {
		resp, _ := budgetPost(t, d.url, small)
		return resp.StatusCode == 200
	})
	if err := d.stop(t, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if logs := d.logs(); strings.Contains(logs, small) || strings.Contains(logs, other) {
		t.Fatal("a client key in the daemon's log")
	}
}

// apiKeys is GET /api/keys with a client key.
func apiKeys(t *testing.T, base, key string) []byte {
	t.Helper()
	req, _ := http.NewRequest("GET", base+"/api/keys", nil)
	req.Header.Set("x-api-key", key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("/api/keys: %d %s", resp.StatusCode, b)
	}
	return b
}
