package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
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
	return rt.send(`{"model":"` + model + `","max_tokens":64,"messages":[{"role":"user","content":"hi"}]}`)
}

// askStream is ask for a streamed answer (the body is the whole event
// stream as the client read it).
func (rt *router) askStream(model string) reply {
	rt.t.Helper()
	return rt.send(`{"model":"` + model + `","max_tokens":64,"stream":true,"messages":[{"role":"user","content":"hi"}]}`)
}

func (rt *router) send(body string) reply {
	rt.t.Helper()
	before := len(rt.fake.Requests())
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
	Window           string  `json:"window"`
	Family           string  `json:"family"`
	Until            *string `json:"until"`
	RateLimitedUntil *string `json:"rate_limited_until"`
	RateLimitStatus  string  `json:"rate_limit_status"`
	Overage          string  `json:"overage"`
	OverageUntil     *string `json:"overage_until"`
	raw              string
}

// until is the line's Until as a time (zero when none).
func (l acctLine) until() time.Time {
	if l.Until == nil {
		return time.Time{}
	}
	t, _ := time.Parse(time.RFC3339, *l.Until)
	return t
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

// b) A weekly limit of one model family moves that family's requests to
// the other account and leaves the account serving the other families;
// `accounts list` says limited_model.
func TestRoutingModelLimit(t *testing.T) {
	rt := newRouter(t, "alpha", "beta")
	reset := time.Now().Add(time.Hour)
	rt.fake.SetModelLimit("alpha", "opus", reset)
	alphaOpus := 0
	for range 6 {
		r := rt.ask(opus)
		if r.servedBy() != "beta" {
			t.Fatalf("opus request: %s", r)
		}
		for _, a := range r.tried() {
			if a == "alpha" {
				alphaOpus++
			}
		}
	}
	if alphaOpus != 1 {
		t.Fatalf("alpha was sent %d opus requests; once limited it should get none", alphaOpus)
	}
	l := rt.waitStatus("alpha", "limited_model")
	if l.Family != "opus" || !l.until().Equal(time.Unix(reset.Unix(), 0)) {
		t.Fatalf("accounts list: alpha limited_model %q until %v, want opus until %v: %s", l.Family, l.until(), reset.Unix(), l.raw)
	}
	served := map[string]int{}
	for range 6 {
		served[rt.mustServe(sonnet)]++
	}
	if served["alpha"] == 0 {
		t.Fatalf("alpha, limited for opus only, served no sonnet request: %v", served)
	}
	rt.checkStatus("beta", "ok")
}

// b, alone) On a one-account pool the opus requests get the proxy's own 429,
// carrying the upstream's reset, representative claim and a retry-after,
// and are not sent upstream again; sonnet requests are still served.
func TestRoutingModelLimitOneAccount(t *testing.T) {
	rt := newRouter(t, "solo")
	reset := time.Now().Add(time.Hour)
	rt.fake.SetModelLimit("solo", "opus", reset)
	for i := range 2 {
		r := rt.ask(opus)
		_, _, id := r.errorOf()
		if r.status != 429 || id == "" {
			t.Fatalf("opus request %d: %s", i, r)
		}
		h := r.header
		if got := h.Get(fakeapi.UnifiedPrefix + "reset"); got != strconv.FormatInt(reset.Unix(), 10) {
			t.Errorf("opus request %d: unified reset %q, want %d", i, got, reset.Unix())
		}
		if got := h.Get(fakeapi.UnifiedPrefix + "representative-claim"); got != "seven_day_opus" {
			t.Errorf("opus request %d: representative claim %q", i, got)
		}
		if got := h.Get(fakeapi.UnifiedPrefix + "status"); got != "rejected" {
			t.Errorf("opus request %d: unified status %q", i, got)
		}
		if ra, err := strconv.Atoi(h.Get("Retry-After")); err != nil || ra <= 0 || ra > 3700 {
			t.Errorf("opus request %d: retry-after %q", i, h.Get("Retry-After"))
		}
		if i == 1 && len(r.attempts) != 0 {
			t.Errorf("the second opus request was sent upstream: %s", r)
		}
	}
	if who := rt.mustServe(sonnet); who != "solo" {
		t.Fatalf("sonnet served by %q", who)
	}
	rt.waitStatus("solo", "limited_model")
}

// c) An account served on overage (extra usage) is steered away from
// under the default policy (avoid): the others serve while it is the last
// choice; alone, it keeps serving. `accounts edit NAME --overage allow`
// puts it back in rotation.
func TestRoutingOverage(t *testing.T) {
	rt := newRouter(t, "alpha", "beta")
	rt.fake.SetOverage("alpha", fakeapi.OverageServed, time.Now().Add(time.Hour))
	r := rt.untilTried(sonnet, "alpha")
	if r.servedBy() != "alpha" {
		t.Fatalf("upstream served alpha on overage, the client should have that answer: %s", r)
	}
	for range 6 {
		if who := rt.mustServe(sonnet); who != "beta" {
			t.Fatalf("after alpha served on overage, %s served (policy avoid)", who)
		}
	}
	rt.checkStatus("alpha", "ok")
	testutil.WaitFor(t, "alpha's extra usage in accounts list", func() bool {
		l := rt.accounts()["alpha"]
		return l.Overage == "avoid" && l.OverageUntil != nil
	})

	rt.MustRun("", "accounts", "edit", "alpha", "--overage", "allow")
	if l := rt.accounts()["alpha"]; l.Overage != "allow" {
		t.Fatalf("after accounts edit alpha --overage allow: %s", l.raw)
	}
	rt.waitServedBy(sonnet, "alpha")
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
	reset := time.Now().Add(time.Hour)
	rt.fake.SetOverage("alpha", fakeapi.OverageRefused400, reset)
	r := rt.untilTried(sonnet, "alpha")
	if r.servedBy() != "beta" {
		t.Fatalf("the refusal of extra usage did not fail over: %s", r)
	}
	l := rt.waitStatus("alpha", "limited")
	if !l.until().Equal(time.Unix(reset.Unix(), 0)) {
		t.Fatalf("accounts list: alpha limited until %v, want the unified reset %v: %s", l.until(), reset.Unix(), l.raw)
	}
	for range 4 {
		if r := rt.ask(sonnet); r.servedBy() != "beta" || len(r.attempts) != 1 {
			t.Fatalf("alpha, limited, was tried: %s", r)
		}
	}
}

// d) Account-specific refusals (OAuth not allowed for the organization,
// credit balance too low) quarantine the account with the upstream's
// reason and fail over; a request-specific 400 passes through untouched
// and leaves the account alone.
func TestRoutingQuarantine(t *testing.T) {
	rt := newRouter(t, "alpha", "beta", "gamma")
	rt.fake.SetAccountRefusal("alpha", 403, "permission_error", fakeapi.MsgOAuthNotAllowed)
	rt.fake.SetAccountRefusal("gamma", 400, "invalid_request_error", fakeapi.MsgCreditTooLow)
	rt.untilTried(sonnet, "alpha")
	rt.untilTried(sonnet, "gamma")
	for name, want := range map[string]string{"alpha": "not allowed for this organization", "gamma": "credit balance is too low"} {
		l := rt.waitStatus(name, "quarantined")
		if !strings.Contains(l.StatusReason, want) {
			t.Fatalf("%s quarantined with reason %q, want it to name %q", name, l.StatusReason, want)
		}
	}
	for range 4 {
		if r := rt.ask(sonnet); r.servedBy() != "beta" || len(r.attempts) != 1 {
			t.Fatalf("a quarantined account was tried: %s", r)
		}
	}

	// A 400 about the request itself: the client gets it as upstream sent
	// it, after one try; beta stays ok.
	const bad = "messages.0.content: Input should be a valid list"
	rt.fake.Inject(fakeapi.Fault{Path: fakeapi.MessagesPath, Kind: fakeapi.FaultStatus, Status: 400,
		Type: "invalid_request_error", Message: bad})
	r := rt.ask(sonnet)
	typ, msg, id := r.errorOf()
	if r.status != 400 || typ != "invalid_request_error" || msg != bad || len(r.attempts) != 1 ||
		id == "" || id != r.header.Get("Request-Id") {
		t.Fatalf("a request-specific 400 was not passed through untouched: %s %v", r, r.header)
	}
	// Byte for byte what the fake wrote (its JSON has sorted keys).
	if want := fmt.Sprintf(`{"error":{"message":%q,"type":"invalid_request_error"},"request_id":%q,"type":"error"}`, bad, id); string(r.body) != want {
		t.Fatalf("the 400's body changed on the way:\n got %s\nwant %s", r.body, want)
	}
	rt.mustServe(sonnet)
	rt.checkStatus("beta", "ok")
}

// d, alone) A one-account pool whose account is refused: the client gets
// the upstream's refusal, then the proxy's 503 naming the quarantine and
// its reason, with x-should-retry: false, without a try upstream.
func TestRoutingQuarantineOneAccount(t *testing.T) {
	rt := newRouter(t, "solo")
	rt.fake.SetAccountRefusal("solo", 403, "permission_error", fakeapi.MsgOrgDisabled)
	r := rt.ask(sonnet)
	if _, msg, _ := r.errorOf(); r.status != 403 || msg != fakeapi.MsgOrgDisabled || len(r.attempts) != 1 {
		t.Fatalf("the refusal: %s", r)
	}
	r = rt.ask(sonnet)
	_, msg, id := r.errorOf()
	if r.status != 503 || r.header.Get("X-Should-Retry") != "false" || id == "" || len(r.attempts) != 0 ||
		!strings.Contains(msg, "quarantined") || !strings.Contains(msg, "organization has been disabled") {
		t.Fatalf("after the quarantine: %s, x-should-retry %q", r, r.header.Get("X-Should-Retry"))
	}
	rt.waitStatus("solo", "quarantined")
}

// e) A 401 that a refresh does not cure: alone, the client gets the 401
// with x-should-retry: false after one forced refresh; the account then
// rests (it is not sent the requests that follow) and the token is
// refreshed at most once however many requests come.
func TestRoutingUncurable401(t *testing.T) {
	rt := newRouter(t, "solo")
	rt.mustServe(sonnet)
	base := rt.fake.RefreshCount("solo")
	rt.fake.RefuseAccessTokens("solo")
	r := rt.ask(sonnet)
	if r.status != 401 || r.header.Get("X-Should-Retry") != "false" || len(r.attempts) > 2 {
		t.Fatalf("uncurable 401: %s, x-should-retry %q", r, r.header.Get("X-Should-Retry"))
	}
	for i := range 5 {
		r := rt.ask(sonnet)
		if r.status == 200 || len(r.attempts) != 0 {
			t.Fatalf("request %d after an uncurable 401: %s", i, r)
		}
		if i == 0 {
			t.Logf("while solo rests: %d %s, x-should-retry %q, retry-after %q", r.status, clip(r.body),
				r.header.Get("X-Should-Retry"), r.header.Get("Retry-After"))
		}
	}
	if n := rt.fake.RefreshCount("solo") - base; n > 1 {
		t.Fatalf("%d refreshes for an uncurable 401 within seconds, want at most 1", n)
	}
}

// e, two accounts) With another account, that one serves every request,
// and the refused account's token is refreshed at most once.
func TestRoutingUncurable401Failover(t *testing.T) {
	rt := newRouter(t, "alpha", "beta")
	rt.mustServe(sonnet)
	base := rt.fake.RefreshCount("alpha")
	rt.fake.RefuseAccessTokens("alpha")
	for range 6 {
		if who := rt.mustServe(sonnet); who != "beta" {
			t.Fatalf("served by %q", who)
		}
	}
	if n := rt.fake.RefreshCount("alpha") - base; n > 1 {
		t.Fatalf("%d refreshes of alpha within seconds, want at most 1", n)
	}
	rt.checkStatus("beta", "ok")
}

// e, API key) An API key upstream refuses: 401 with x-should-retry: false, and
// the account is key_refused.
func TestRoutingRevokedAPIKey(t *testing.T) {
	w := newWorld(t, routingConfig, "")
	w.addAPIKey("key")
	rt := &router{t: t, world: w, d: w.start(), c: newClient(30*time.Second, 8)}
	rt.mustServe(sonnet)
	rt.fake.RevokeAPIKeys("key")
	r := rt.ask(sonnet)
	if r.status != 401 || r.header.Get("X-Should-Retry") != "false" {
		t.Fatalf("revoked key: %s, x-should-retry %q", r, r.header.Get("X-Should-Retry"))
	}
	rt.waitStatus("key", "key_refused")
}

// An error event inside a stream already under way reaches the client as
// sent; the daemon logs it at warn, and a rate_limit_error there limits
// the account for the requests after it.
func TestRoutingInStreamRateLimit(t *testing.T) {
	rt := newRouter(t, "alpha", "beta")
	const event = `{"type":"error","error":{"type":"rate_limit_error","message":"Rate limited mid-stream"}}`
	rt.fake.Inject(fakeapi.Fault{Account: "alpha", Path: fakeapi.MessagesPath, Kind: fakeapi.FaultStreamError, AfterEvents: 2, Body: event})
	var r reply
	for range 4 {
		if r = rt.askStream(sonnet); len(r.attempts) == 1 && r.attempts[0].Account == "alpha" {
			break
		}
	}
	if r.status != 200 || len(r.attempts) != 1 || r.attempts[0].Account != "alpha" ||
		!strings.Contains(string(r.body), "event: error\ndata: "+event+"\n\n") {
		t.Fatalf("the stream alpha broke off: %s", r)
	}
	testutil.WaitFor(t, "the in-stream error logged at warn", func() bool {
		for _, line := range strings.Split(rt.d.logs(), "\n") {
			if strings.Contains(line, `"level":"WARN"`) && strings.Contains(line, "in-stream error") && strings.Contains(line, `"alpha"`) {
				return true
			}
		}
		return false
	})
	rt.waitStatus("alpha", "limited")
	rt.onlyBeta()
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
	reset := time.Now().Add(6 * time.Second)
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

// g, API key) An API key's rate limit (requests-* headers and a
// retry-after) rests the account until the retry-after, not before and
// not much after; the other key serves meanwhile.
func TestRoutingAPIKeyLimitHeals(t *testing.T) {
	w := newWorld(t, routingConfig, "")
	w.addAPIKey("k1")
	w.addAPIKey("k2")
	rt := &router{t: t, world: w, d: w.start(), c: newClient(30*time.Second, 8)}
	rt.fake.Inject(fakeapi.Fault{Account: "k1", Path: fakeapi.MessagesPath, Kind: fakeapi.FaultStatus, Status: 429, Bare: true,
		Headers: map[string]string{
			"anthropic-ratelimit-requests-limit":     "50",
			"anthropic-ratelimit-requests-remaining": "0",
			"anthropic-ratelimit-requests-reset":     time.Now().Add(3 * time.Second).UTC().Format(time.RFC3339),
			"retry-after":                            "3",
		}})
	r := rt.untilTried(sonnet, "k1")
	if r.servedBy() != "k2" || r.attempts[0].Account != "k1" || r.attempts[0].Status != 429 {
		t.Fatalf("k1's limit did not fail over: %s", r)
	}
	limited := r.attempts[0].Time
	at := rt.waitServedBy(sonnet, "k1")
	if d := at.Sub(limited); d < 3*time.Second || d > 20*time.Second {
		t.Fatalf("k1 served again %s after its 429 with retry-after: 3", d)
	}
}

// g, unblock) Blocks can be cleared: `accounts unblock NAME` makes the
// running daemon use a limited, quarantined or model-limited account
// again, without a restart (and only then: the fake heals first).
func TestRoutingUnblock(t *testing.T) {
	rt := newRouter(t, "alpha", "beta")

	// A far limit (5 hours), the fake healed at once: alpha stays out
	// until `accounts unblock alpha`.
	h := fakeapi.RateLimitHeaders("rejected", time.Now().Add(5*time.Hour))
	rt.fake.Inject(fakeapi.Fault{Account: "alpha", Path: fakeapi.MessagesPath, Kind: fakeapi.FaultStatus, Status: 429, Headers: h})
	rt.untilTried(sonnet, "alpha")
	rt.waitStatus("alpha", "limited")
	rt.onlyBeta()
	rt.MustRun("", "accounts", "unblock", "alpha")
	rt.waitServedBy(sonnet, "alpha")
	rt.waitStatus("alpha", "ok")

	// A quarantine, then the organization fixed upstream.
	rt.fake.SetAccountRefusal("alpha", 403, "permission_error", fakeapi.MsgOrgDisabled)
	rt.untilTried(sonnet, "alpha")
	rt.waitStatus("alpha", "quarantined")
	rt.fake.ClearAccountRefusal("alpha")
	rt.onlyBeta()
	rt.MustRun("", "accounts", "unblock", "alpha")
	rt.waitServedBy(sonnet, "alpha")

	// A model limit.
	rt.fake.SetModelLimit("alpha", "opus", time.Now().Add(72*time.Hour))
	rt.untilTried(opus, "alpha")
	rt.waitStatus("alpha", "limited_model")
	rt.fake.ClearModelLimit("alpha", "opus")
	rt.onlyBeta(opus)
	rt.MustRun("", "accounts", "unblock", "alpha")
	rt.waitServedBy(opus, "alpha")
	rt.waitStatus("alpha", "ok")
}

// g, check) `accounts check NAME --json` probes the account now: while
// upstream still refuses it, it stays quarantined with the reason; once
// upstream serves it, the check says ok and the running daemon uses it
// again.
func TestRoutingCheck(t *testing.T) {
	rt := newRouter(t, "alpha", "beta")
	rt.fake.SetAccountRefusal("alpha", 403, "permission_error", fakeapi.MsgOAuthNotAllowed)
	rt.untilTried(sonnet, "alpha")
	rt.waitStatus("alpha", "quarantined")
	check := func() map[string]any {
		t.Helper()
		out, errs, code := rt.Run("", "accounts", "check", "alpha", "--json")
		var m map[string]any
		if err := json.Unmarshal([]byte(strings.TrimSpace(out)), &m); err != nil {
			t.Fatalf("accounts check alpha --json: exit %d: %v: %s %s", code, err, out, errs)
		}
		return m
	}
	if m := check(); m["status"] != "quarantined" || !strings.Contains(fmt.Sprint(m["reason"]), "not allowed for this organization") {
		t.Fatalf("check while upstream refuses: %v", m)
	}
	rt.onlyBeta()
	rt.fake.ClearAccountRefusal("alpha")
	if m := check(); m["status"] != "ok" {
		t.Fatalf("check once upstream serves: %v", m)
	}
	rt.waitServedBy(sonnet, "alpha")
	rt.waitStatus("alpha", "ok")
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
