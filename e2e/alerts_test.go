package e2e

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/claudeflare/claudeflare/internal/fakeapi"
	"github.com/claudeflare/claudeflare/internal/testutil"
)

// alertReceiver is a webhook on 127.0.0.1 that keeps every body it gets.
type alertReceiver struct {
	srv    *httptest.Server
	mu     sync.Mutex
	bodies []string
}

// alertHookSecret is the secret part of the receiver's URL, as a Slack
// hook has: it must not show in the daemon's log.
const alertHookSecret = "B0E2EHOOKSECRET/xoxE2ESECRET"

func newAlertReceiver(t *testing.T) *alertReceiver {
	r := &alertReceiver{}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		b, _ := io.ReadAll(req.Body)
		if req.Method != http.MethodPost || !strings.HasSuffix(req.URL.Path, alertHookSecret) {
			w.WriteHeader(http.StatusNotFound)
			return
		}
		r.mu.Lock()
		r.bodies = append(r.bodies, string(b))
		r.mu.Unlock()
	}))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *alertReceiver) url() string { return r.srv.URL + "/services/" + alertHookSecret }

// count is how many bodies have event, for account when not "".
func (r *alertReceiver) count(t *testing.T, event, account string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, b := range r.bodies {
		var m map[string]any
		if err := json.Unmarshal([]byte(b), &m); err != nil {
			t.Errorf("body %s: %v", b, err)
			continue
		}
		if m["event"] == event && (account == "" || m["account"] == account) {
			n++
		}
	}
	return n
}

func (r *alertReceiver) all() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return strings.Join(r.bodies, "\n")
}

// TestAlertsFromTheDaemon runs the real daemon with a webhook: one account
// rate limited by the upstream (429 with unified headers), the other's
// refresh token refused (invalid_grant). The receiver gets account_blocked,
// account_needs_login and pool_exhausted, each once, with no token, key or
// the webhook's own secret in them or in the daemon's log.
func TestAlertsFromTheDaemon(t *testing.T) {
	rcv := newAlertReceiver(t)
	w := newWorld(t, "[[alerts.webhook]]\nurl = \""+rcv.url()+"\"\n", "")
	w.addOAuth("alpha")
	w.addOAuth("beta")
	d := w.start()

	reset := time.Now().Add(3 * time.Hour)
	h := fakeapi.RateLimitHeaders("rejected", reset)
	h["retry-after"] = "10800"
	w.fake.Inject(fakeapi.Fault{Account: "alpha", Path: fakeapi.MessagesPath, Kind: fakeapi.FaultStatus, Status: 429, Headers: h, Count: -1})
	w.fake.RevokeAccount("beta")

	c := newClient(30*time.Second, 2)
	ctx := context.Background()
	testutil.WaitFor(t, "the alerts account_blocked, account_needs_login and pool_exhausted", func() bool {
		if rcv.count(t, "account_blocked", "alpha") > 0 && rcv.count(t, "account_needs_login", "beta") > 0 && rcv.count(t, "pool_exhausted", "") > 0 {
			return true
		}
		send(ctx, c, d.url, false)
		return false
	})
	// More requests while the pool is exhausted change nothing.
	for i := 0; i < 3; i++ {
		send(ctx, c, d.url, false)
	}
	if err := d.stop(t); err != nil { // drains the alert queue
		t.Fatalf("daemon: %v\n%s", err, tail(d.logs(), 4000))
	}
	for _, ev := range []struct{ event, account string }{
		{"account_blocked", "alpha"}, {"account_needs_login", "beta"}, {"pool_exhausted", ""},
		{"utilization_threshold", "alpha"}, // the 429 said 5h-utilization 1.0
	} {
		if n := rcv.count(t, ev.event, ev.account); n != 1 {
			t.Errorf("%s %s: %d alerts, want 1\n%s", ev.event, ev.account, n, rcv.all())
		}
	}
	if n := rcv.count(t, "account_recovered", ""); n != 0 {
		t.Errorf("%d account_recovered alerts, want none\n%s", n, rcv.all())
	}
	bodies := rcv.all()
	t.Logf("alerts received:\n%s", bodies)
	if !strings.Contains(bodies, `"text":"claudeflare: account beta needs a new login`) {
		t.Errorf("no text line for the login:\n%s", bodies)
	}
	for _, tok := range w.fake.AllTokens() {
		if strings.Contains(bodies, tok) {
			t.Errorf("an alert holds a token the fake issued")
		}
		if strings.Contains(d.logs(), tok) {
			t.Errorf("the daemon's log holds a token the fake issued")
		}
	}
	if strings.Contains(d.logs(), alertHookSecret) {
		t.Errorf("the daemon's log holds the webhook URL's secret:\n%s", d.logs())
	}
}

// A webhook that is down does not hold up the daemon: requests are served
// and it stops promptly.
func TestAlertsReceiverDown(t *testing.T) {
	rcv := newAlertReceiver(t)
	url := rcv.url()
	rcv.srv.Close() // refused from now on
	w := newWorld(t, "[[alerts.webhook]]\nurl = \""+url+"\"\n", "")
	w.addOAuth("alpha")
	d := w.start()
	w.fake.RevokeAccount("alpha") // an alert at once (needs_login, pool_exhausted)
	c := newClient(30*time.Second, 2)
	for i := 0; i < 5; i++ {
		if r := send(context.Background(), c, d.url, false); r.status == 0 {
			t.Fatalf("request %d: %s %s", i, r.kind, r.detail)
		}
	}
	if err := d.stop(t); err != nil {
		t.Fatalf("daemon: %v\n%s", err, tail(d.logs(), 4000))
	}
	if strings.Contains(d.logs(), alertHookSecret) {
		t.Errorf("the daemon's log holds the webhook URL's secret")
	}
}

// A client key over its budget is told once (budget_exceeded) to a webhook
// that asked for that event alone, by the key's name, never the key.
func TestAlertsBudgetFromTheDaemon(t *testing.T) {
	rcv := newAlertReceiver(t)
	w := newWorld(t, "[[alerts.webhook]]\nurl = \""+rcv.url()+"\"\nevents = [\"budget_exceeded\"]\n", "")
	w.addOAuth("alpha")
	key := strings.TrimSpace(w.MustRun("", "apikey", "create", "dev", "--budget", "10tokens/day"))
	d := w.start()
	c := newClient(30*time.Second, 2)
	post := func() int {
		req, _ := http.NewRequest(http.MethodPost, d.url+"/v1/messages", strings.NewReader(jsonBody))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Anthropic-Version", "2023-06-01")
		req.Header.Set("X-Api-Key", key)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	if st := post(); st != http.StatusOK {
		t.Fatalf("first request: %d", st)
	}
	testutil.WaitFor(t, "the budget_exceeded alert", func() bool { return rcv.count(t, "budget_exceeded", "") > 0 })
	if st := post(); st != http.StatusTooManyRequests {
		t.Errorf("over budget: %d, want 429", st)
	}
	if err := d.stop(t); err != nil {
		t.Fatalf("daemon: %v\n%s", err, tail(d.logs(), 4000))
	}
	bodies := rcv.all()
	if n := strings.Count(bodies, `"event":`); n != 1 {
		t.Errorf("%d alerts, want the one budget_exceeded:\n%s", n, bodies)
	}
	for _, want := range []string{`"client_key":"dev"`, `"period":"day"`, `"unit":"tokens"`, `"limit":10`, "client key dev is over its daily budget"} {
		if !strings.Contains(bodies, want) {
			t.Errorf("the alert lacks %s:\n%s", want, bodies)
		}
	}
	if strings.Contains(bodies, key) || strings.Contains(d.logs(), key) {
		t.Error("the client key is in the alert or the log")
	}
	for _, tok := range w.fake.AllTokens() {
		if strings.Contains(bodies, tok) {
			t.Error("an alert holds a token the fake issued")
		}
	}
}
