package commands_test

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/claudeflare/claudeflare/internal/testutil"
)

type healthAnswer struct {
	code   int
	raw    string
	Status string `json:"status"`
	// Reasons are for people; the code is for load balancers.
	Reasons        []string `json:"reasons"`
	Accounts       int      `json:"accounts"`
	UsableAccounts int      `json:"usable_accounts"`
	RequestLog     string   `json:"request_log"`
}

func getHealth(t *testing.T, base string) healthAnswer {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(base + "/health")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var h healthAnswer
	if err := json.Unmarshal(b, &h); err != nil {
		t.Fatalf("/health %d: not JSON: %q", resp.StatusCode, b)
	}
	h.code, h.raw = resp.StatusCode, string(b)
	return h
}

// waitHealth waits until /health answers code and status (the daemon
// sees CLI changes within its account poll).
func waitHealth(t *testing.T, base string, code int, status string) healthAnswer {
	t.Helper()
	var h healthAnswer
	testutil.WaitFor(t, "/health "+status, func() bool {
		h = getHealth(t, base)
		return h.code == code && h.Status == status
	})
	return h
}

// TestHealthDaemon runs the real daemon: no account is down (503), two
// usable accounts are ok, one paused is degraded (200, still served), a
// request log that cannot be opened is degraded; no answer names an
// account.
func TestHealthDaemon(t *testing.T) {
	c := newCLI(t)
	c.MustRun("", "init")
	d := c.startDaemon()

	h := getHealth(t, d.url)
	if h.code != 503 || h.Status != "down" || len(h.Reasons) == 0 {
		t.Fatalf("no accounts: %d %s", h.code, h.raw)
	}

	c.MustRun(c.fake.NewAPIKey("first-acct"), "accounts", "add", "first-acct", "--api-key-stdin")
	c.MustRun(c.fake.NewAPIKey("second-acct"), "accounts", "add", "second-acct", "--api-key-stdin")
	h = waitHealth(t, d.url, 200, "ok")
	if h.Accounts != 2 || h.UsableAccounts != 2 || len(h.Reasons) != 0 {
		t.Fatalf("all fine: %s", h.raw)
	}

	c.MustRun("", "accounts", "pause", "second-acct")
	h = waitHealth(t, d.url, 200, "degraded")
	if h.UsableAccounts != 1 || !strings.Contains(strings.Join(h.Reasons, "\n"), "1 paused") {
		t.Fatalf("one paused: %s", h.raw)
	}
	if resp, body := postMessages(t, d.url, false); resp.StatusCode != 200 {
		t.Fatalf("degraded, yet not served: %d %s", resp.StatusCode, body)
	}
	if strings.Contains(h.raw, "first-acct") || strings.Contains(h.raw, "second-acct") {
		t.Fatalf("/health names an account: %s", h.raw)
	}
	if err := d.stop(t, syscall.SIGTERM); err != nil {
		t.Fatalf("daemon exit: %v\n%s", err, d.logs())
	}

	// A request log that cannot be opened (a directory where log.db
	// should be): the daemon serves without it and /health says so.
	data := filepath.Join(c.dir, "data")
	for _, f := range []string{"log.db", "log.db-wal", "log.db-shm"} {
		os.Remove(filepath.Join(data, f))
	}
	if err := os.Mkdir(filepath.Join(data, "log.db"), 0o700); err != nil {
		t.Fatal(err)
	}
	d = c.startDaemon()
	h = getHealth(t, d.url)
	if h.code != 200 || h.Status != "degraded" || h.RequestLog != "unavailable" || !strings.Contains(strings.Join(h.Reasons, "\n"), "request log") {
		t.Fatalf("request log unavailable: %d %s\n%s", h.code, h.raw, d.logs())
	}
}
