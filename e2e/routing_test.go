package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/claudeflare/claudeflare/internal/fakeapi"
	"github.com/claudeflare/claudeflare/internal/testutil"
)

// The routing tests (issue 14): each class of upstream answer, sent by
// the fake API to the daemon run as a real process, and what a user sees
// of it: the client's status, headers and body, which account the fake
// says served, and the state words of `accounts list --json`. Accounts
// rotate round-robin so that "which account served" says what the
// selector chose; the tests send one request at a time unless said, so
// the fake's records between two requests are that request's attempts.

const (
	sonnet = "claude-sonnet-4-5"
	opus   = "claude-opus-4-5"
)

// routingConfig rotates over the accounts and retries at once; every
// other setting (retry_attempts among them) keeps its default.
const routingConfig = `
lb_strategy = "round-robin"
retry_delay_ms = 10

[log]
flush_interval = "100ms"
`

// router is a daemon over a fake API with named accounts.
type router struct {
	t *testing.T
	*world
	d *daemon
	c *http.Client
}

// newRouter starts a daemon over OAuth accounts with the given names
// (in priority order, all the same priority: round-robin over them).
func newRouter(t *testing.T, names ...string) *router {
	t.Helper()
	w := newWorld(t, routingConfig, "")
	for _, n := range names {
		w.addOAuth(n)
	}
	return &router{t: t, world: w, d: w.start(), c: newClient(30*time.Second, 8)}
}

// reply is one answer as the client saw it.
type reply struct {
	status int
	header http.Header
	body   []byte
	// attempts are the fake's /v1/messages records the request caused,
	// oldest first.
	attempts []fakeapi.Recorded
}

// servedBy is the account that answered the client with a 200, "" when
// none did.
func (r reply) servedBy() string {
	if r.status != 200 || len(r.attempts) == 0 {
		return ""
	}
	last := r.attempts[len(r.attempts)-1]
	if last.Status != 200 {
		return ""
	}
	return last.Account
}

// tried lists the accounts the request was sent to, in order.
func (r reply) tried() []string {
	var out []string
	for _, a := range r.attempts {
		out = append(out, a.Account)
	}
	return out
}

func (r reply) String() string {
	return fmt.Sprintf("%d %s (tried %v)", r.status, clip(r.body), r.tried())
}

// errorOf reads an Anthropic-shaped error body: type, message, request_id.
func (r reply) errorOf() (typ, msg, id string) {
	var e struct {
		Error struct {
			Type    string `json:"type"`
			Message string `json:"message"`
		} `json:"error"`
		RequestID string `json:"request_id"`
	}
	_ = json.Unmarshal(r.body, &e)
	return e.Error.Type, e.Error.Message, e.RequestID
}

// ask sends one non-streamed message request for model and waits for its
// whole answer.
func (rt *router) ask(model string) reply {
	rt.t.Helper()
	before := len(rt.fake.Requests())
	body := `{"model":"` + model + `","max_tokens":64,"messages":[{"role":"user","content":"hi"}]}`
	req, _ := http.NewRequest(http.MethodPost, rt.d.url+"/v1/messages?beta=true", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Anthropic-Version", "2023-06-01")
	req.Header.Set("X-Api-Key", "client-placeholder")
	resp, err := rt.c.Do(req)
	if err != nil {
		rt.t.Fatalf("POST /v1/messages: %v", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		rt.t.Fatalf("read the answer: %v", err)
	}
	r := reply{status: resp.StatusCode, header: resp.Header, body: b}
	for _, rec := range rt.fake.Requests()[before:] {
		if rec.Path == fakeapi.MessagesPath {
			r.attempts = append(r.attempts, rec)
		}
	}
	return r
}

// mustServe sends a request that must be answered 200 and returns who
// served it.
func (rt *router) mustServe(model string) string {
	rt.t.Helper()
	r := rt.ask(model)
	if r.status != 200 || r.servedBy() == "" {
		rt.t.Fatalf("%s request: %s\n%s", model, r, tail(rt.d.logs(), 3000))
	}
	return r.servedBy()
}

// untilTried sends requests (each must be served) until account has been
// sent one, and returns the last reply. Round-robin reaches every usable
// account within a few requests.
func (rt *router) untilTried(model, account string) reply {
	rt.t.Helper()
	for range 10 {
		r := rt.ask(model)
		if r.status != 200 {
			rt.t.Fatalf("%s request: %s\n%s", model, r, tail(rt.d.logs(), 3000))
		}
		for _, a := range r.tried() {
			if a == account {
				return r
			}
		}
	}
	rt.t.Fatalf("10 %s requests and none was sent to %s", model, account)
	return reply{}
}

// acctLine is one account of `accounts list --json`.
type acctLine struct {
	Name             string  `json:"name"`
	Status           string  `json:"status"`
	StatusReason     string  `json:"status_reason"`
	RateLimitedUntil *string `json:"rate_limited_until"`
	RateLimitStatus  string  `json:"rate_limit_status"`
	raw              string
}

// accounts runs `claudeflare accounts list --json`.
func (rt *router) accounts() map[string]acctLine {
	rt.t.Helper()
	out := rt.MustRun("", "accounts", "list", "--json")
	lines := map[string]acctLine{}
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		var l acctLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			rt.t.Fatalf("accounts list --json: %v: %s", err, sc.Text())
		}
		l.raw = sc.Text()
		lines[l.Name] = l
	}
	return lines
}

// waitStatus waits until `accounts list` shows account with the state
// word (the daemon saves states off the request path).
func (rt *router) waitStatus(account, word string) acctLine {
	rt.t.Helper()
	var l acctLine
	testutil.WaitFor(rt.t, account+" "+word+" in accounts list", func() bool {
		l = rt.accounts()[account]
		return l.Status == word
	})
	return l
}

// checkStatus requires the state word now.
func (rt *router) checkStatus(account, word string) {
	rt.t.Helper()
	if l := rt.accounts()[account]; l.Status != word {
		rt.t.Fatalf("accounts list: %s is %q, want %q: %s", account, l.Status, word, l.raw)
	}
}

// waitServedBy sends a request every 50 ms until account serves one (a
// state the daemon reaches: a block healed or cleared) and returns when.
func (rt *router) waitServedBy(model, account string) time.Time {
	rt.t.Helper()
	var at time.Time
	testutil.WaitFor(rt.t, account+" serving again", func() bool {
		r := rt.ask(model)
		if r.status != 200 {
			rt.t.Fatalf("%s request: %s", model, r)
		}
		if r.servedBy() == account {
			at = r.attempts[len(r.attempts)-1].Time
			return true
		}
		time.Sleep(50 * time.Millisecond)
		return false
	})
	return at
}

// a) A 429 without any rate-limit header is about the request: on a
// one-account pool the client gets the upstream's 429 as is, and the next
// request is served at once; the account stays ok.
func TestRoutingRequestScoped429(t *testing.T) {
	rt := newRouter(t, "solo")
	rt.mustServe(sonnet)
	rt.fake.Inject(fakeapi.Fault{Path: fakeapi.MessagesPath, Kind: fakeapi.FaultStatus, Status: 429, Bare: true})
	r := rt.ask(sonnet)
	typ, msg, id := r.errorOf()
	if r.status != 429 || typ != "rate_limit_error" || !strings.Contains(msg, "would exceed your account's rate limit") ||
		len(r.attempts) != 1 || id != r.header.Get("Request-Id") || !strings.HasPrefix(id, "req_") {
		t.Fatalf("the upstream's 429 was not passed through as is: %s %v", r, r.header)
	}
	if who := rt.mustServe(sonnet); who != "solo" {
		t.Fatalf("served by %q", who)
	}
	rt.checkStatus("solo", "ok")
}

// f) Random 529s (3% of upstream requests) on three accounts: with the
// default RETRY_ATTEMPTS, (almost) none reaches a client, and no account
// rests for Anthropic's load.
func TestRouting529Storm(t *testing.T) {
	rt := newRouter(t, "one", "two", "three")
	rt.fake.Inject(fakeapi.Fault{Path: fakeapi.MessagesPath, Kind: fakeapi.FaultStatus, Status: 529, Rate: 0.03, Count: -1})
	const n, workers = 400, 4
	type out struct{ status int }
	results := make(chan out, n)
	jobs := make(chan struct{}, n)
	for range n {
		jobs <- struct{}{}
	}
	close(jobs)
	for range workers {
		go func() {
			for range jobs {
				r := send(t.Context(), rt.c, rt.d.url, false)
				results <- out{status: r.status}
			}
		}()
	}
	failed := map[int]int{}
	for range n {
		if o := <-results; o.status != 200 {
			failed[o.status]++
		}
	}
	rt.fake.ClearFaults()
	upstream529, served := 0, map[string]int{}
	for _, rec := range rt.fake.Requests() {
		switch {
		case rec.Path != fakeapi.MessagesPath:
		case rec.Status == 529:
			upstream529++
		case rec.Status == 200:
			served[rec.Account]++
		}
	}
	bad := 0
	for _, c := range failed {
		bad += c
	}
	t.Logf("%d requests: %d upstream 529s, %d reached the client (%v); served %v", n, upstream529, bad, failed, served)
	if upstream529 == 0 {
		t.Fatal("the fake sent no 529: the test proves nothing")
	}
	if bad*200 > n { // more than 0.5%
		t.Fatalf("%d of %d requests reached the client as an error: %v", bad, n, failed)
	}
	for _, name := range []string{"one", "two", "three"} {
		if served[name] < n/6 {
			t.Errorf("%s served %d of %d: it rested", name, served[name], n)
		}
		rt.checkStatus(name, "ok")
	}
}

// g) Blocks heal: an account limited until a reset a few seconds away
// serves again once the reset passed, not before.
func TestRoutingBlocksHeal(t *testing.T) {
	rt := newRouter(t, "alpha", "beta")
	reset := time.Now().Add(3 * time.Second)
	h := fakeapi.RateLimitHeaders("rejected", reset)
	rt.fake.Inject(fakeapi.Fault{Account: "alpha", Path: fakeapi.MessagesPath, Kind: fakeapi.FaultStatus, Status: 429, Headers: h})
	if r := rt.untilTried(sonnet, "alpha"); r.servedBy() != "beta" {
		t.Fatalf("alpha's limit did not fail over: %s", r)
	}
	at := rt.waitServedBy(sonnet, "alpha")
	if at.Before(time.Unix(reset.Unix(), 0)) {
		t.Fatalf("alpha served at %s, before its reset %s", at.Format(time.StampMilli), reset.Format(time.StampMilli))
	}
}

// a, two accounts) On a pool of two, a request-scoped refusal (a bare 429, a 400 or
// 429 refusing long context) is tried once on the other account; when
// both refuse, the client gets the upstream's answer. No account rests.
func TestRoutingRequestScopedTriedOnceElsewhere(t *testing.T) {
	rt := newRouter(t, "alpha", "beta")
	for _, tc := range []struct {
		name  string
		fault fakeapi.Fault
	}{
		{"bare 429", fakeapi.Fault{Path: fakeapi.MessagesPath, Kind: fakeapi.FaultStatus, Status: 429, Bare: true}},
		{"long context 400", fakeapi.LongContextFault("", 400)},
		{"long context 429", fakeapi.LongContextFault("", 429)},
	} {
		// One refusal: the other account serves.
		f := tc.fault
		f.Count = 1
		rt.fake.Inject(f)
		r := rt.ask(sonnet)
		if tried := r.tried(); r.status != 200 || len(tried) != 2 || tried[0] == tried[1] {
			t.Fatalf("%s, once: %s", tc.name, r)
		}
		// Both refuse: the second refusal goes to the client, after two tries.
		f.Count = 2
		rt.fake.Inject(f)
		r = rt.ask(sonnet)
		if len(r.attempts) != 2 || r.status != tc.fault.Status || r.attempts[1].Status != tc.fault.Status {
			t.Fatalf("%s, twice: %s", tc.name, r)
		}
		if tc.fault.Message != "" {
			if _, msg, _ := r.errorOf(); msg != tc.fault.Message {
				t.Fatalf("%s: the client got %q", tc.name, msg)
			}
		}
		// Nobody rests: the next requests reach both accounts.
		seen := map[string]bool{}
		for range 4 {
			seen[rt.mustServe(sonnet)] = true
		}
		if !seen["alpha"] || !seen["beta"] {
			t.Fatalf("%s: afterwards only %v served", tc.name, seen)
		}
		rt.checkStatus("alpha", "ok")
		rt.checkStatus("beta", "ok")
	}
}

// c, alone) Alone, an account on overage keeps serving under policy avoid: a
// request upstream would serve is never refused.
func TestRoutingOverageOneAccount(t *testing.T) {
	rt := newRouter(t, "solo")
	rt.fake.SetOverage("solo", fakeapi.OverageServed, time.Now().Add(time.Hour))
	for range 5 {
		if who := rt.mustServe(sonnet); who != "solo" {
			t.Fatalf("served by %q", who)
		}
	}
	rt.checkStatus("solo", "ok")
}

// c, refused) Extra usage refused (a 400 naming it): the account is limited
// until the unified reset; the request is served by the other account.
func TestRoutingOverageRefused(t *testing.T) {
	rt := newRouter(t, "alpha", "beta")
	rt.fake.SetOverage("alpha", fakeapi.OverageRefused400, time.Now().Add(time.Hour))
	r := rt.untilTried(sonnet, "alpha")
	if r.servedBy() != "beta" {
		t.Fatalf("the refusal of extra usage did not fail over: %s", r)
	}
	rt.waitStatus("alpha", "limited")
	for range 4 {
		if r := rt.ask(sonnet); r.servedBy() != "beta" || len(r.attempts) != 1 {
			t.Fatalf("alpha, limited, was tried: %s", r)
		}
	}
}

// onlyBeta sends four requests (sonnet unless a model is given), each of
// which beta must serve without alpha being tried.
func (rt *router) onlyBeta(model ...string) {
	rt.t.Helper()
	m := sonnet
	if len(model) > 0 {
		m = model[0]
	}
	for range 4 {
		if r := rt.ask(m); r.servedBy() != "beta" || len(r.attempts) != 1 {
			rt.t.Fatalf("alpha, blocked, was tried: %s", r)
		}
	}
}
