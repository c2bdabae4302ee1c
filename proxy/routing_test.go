package proxy

import (
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/claudeflare/claudeflare/config"
	"github.com/claudeflare/claudeflare/internal/acctstate"
	"github.com/claudeflare/claudeflare/internal/fakeapi"
	"github.com/claudeflare/claudeflare/store"
)

const (
	opusBody   = `{"model":"claude-opus-4-1","max_tokens":64,"messages":[{"role":"user","content":"hi"}]}`
	sonnetBody = msgBody
)

const uni = fakeapi.UnifiedPrefix

// modelLimit429 is Anthropic's answer for a weekly limit of one model
// family: unified rejected, the family's claim, the 5h and 7d windows
// allowed.
func modelLimit429(account, claim string, reset time.Time) fakeapi.Fault {
	return fakeapi.Fault{Account: account, Kind: fakeapi.FaultStatus, Status: 429, Headers: map[string]string{
		uni + "status": "rejected", uni + "reset": strconv.FormatInt(reset.Unix(), 10),
		uni + "representative-claim": claim, uni + "5h-status": "allowed", uni + "7d-status": "allowed"}}
}

// A model-scoped weekly limit blocks that family on that account only:
// opus requests skip the account (until the reset, also after a
// restart), sonnet requests still use it.
func TestModelLimitBlocksOnlyThatFamily(t *testing.T) {
	h := newHarness(t)
	h.addOAuth("a", 0, false)
	h.addOAuth("b", 1, false)
	h.reload()
	reset := h.clock.Now().Add(72 * time.Hour).Truncate(time.Second)
	h.api.Inject(modelLimit429("a", "seven_day_opus", reset))
	if rep := h.post(opusBody); rep.status != 200 {
		t.Fatalf("%d %s", rep.status, rep.body)
	}
	if row := h.lastRow(); row.Account != "b" || row.Attempts != 2 {
		t.Fatalf("row %+v", row)
	}
	if l := h.limit("a"); l.Blocked(h.clock.Now()) || !l.Models["opus"].Equal(reset) {
		t.Fatalf("limit of a %+v", l)
	}
	// With b paused, sonnet still goes to a; opus finds no account.
	ctx := context.Background()
	if err := store.SetPaused(ctx, h.vdb, "b", true, h.clock.Now()); err != nil {
		t.Fatal(err)
	}
	h.reload()
	if rep := h.post(sonnetBody); rep.status != 200 || h.lastRow().Account != "a" {
		t.Fatalf("sonnet: %d on %s", rep.status, h.lastRow().Account)
	}
	if rep := h.post(opusBody); rep.status != 429 {
		t.Fatalf("opus with b paused: %d %s", rep.status, rep.body)
	}
	if err := store.SetPaused(ctx, h.vdb, "b", false, h.clock.Now()); err != nil {
		t.Fatal(err)
	}
	h.reload()
	// Opus goes straight to b, a is not asked.
	h.api.ResetRequests()
	if rep := h.post(opusBody); rep.status != 200 || h.lastRow().Account != "b" || h.lastRow().Attempts != 1 {
		t.Fatalf("opus: %d %+v", rep.status, h.lastRow())
	}
	if reqs := h.apiRequests(); len(reqs) != 1 || reqs[0].Account != "b" {
		t.Fatalf("upstream requests %+v", reqs)
	}
	// The snapshot says it in the state words.
	for _, st := range h.srv.Accounts() {
		if st.Name == "a" && (st.State.Word != acctstate.LimitedModel || st.State.Family != "opus" || !st.State.Until.Equal(reset) || !st.Usable) {
			t.Fatalf("state of a %+v", st)
		}
	}
	// Saved, and read back by a restarted proxy.
	want := acctstate.ModelLimits{"opus": store.ToMS(reset)}.String()
	waitFor(t, "model limits saved", func() bool { return h.account("a").ModelLimits == want })
	h.restart()
	if l := h.limit("a"); !l.Models["opus"].Equal(reset) {
		t.Fatalf("after restart: %+v", l)
	}
	if h.post(opusBody); h.lastRow().Account != "b" {
		t.Fatalf("after restart opus went to %s", h.lastRow().Account)
	}
	// Once the reset passes, opus may use a again.
	h.clock.Add(72*time.Hour + time.Second)
	if rep := h.post(opusBody); rep.status != 200 || h.lastRow().Account != "a" {
		t.Fatalf("after the reset: %d on %s", rep.status, h.lastRow().Account)
	}
}

// When every account is limited for a family, the proxy's own 429 says
// so for that family, with Anthropic's headers; other families are
// served.
func TestModelLimitEveryAccount(t *testing.T) {
	h := newHarness(t)
	h.addOAuth("only", 0, false)
	h.reload()
	reset := h.clock.Now().Add(48 * time.Hour).Truncate(time.Second)
	h.api.Inject(modelLimit429("only", "seven_day_opus", reset))
	h.post(opusBody)
	h.api.ResetRequests()
	rep := h.post(opusBody)
	if rep.status != 429 || len(h.apiRequests()) != 0 {
		t.Fatalf("%d %s (upstream %d)", rep.status, rep.body, len(h.apiRequests()))
	}
	e := decodeError(t, rep.body)
	if !strings.Contains(e.Error.Message, "only: limited_model (opus) until") || e.RequestID == "" {
		t.Fatalf("%+v", e)
	}
	if rep.header.Get(hdrUnifiedStatus) != "rejected" || rep.header.Get(hdrUnifiedClaim) != "seven_day_opus" ||
		rep.header.Get(hdrUnifiedReset) != strconv.FormatInt(reset.Unix(), 10) || rep.header.Get("Retry-After") == "" {
		t.Fatalf("headers %v", rep.header)
	}
	if rep := h.post(sonnetBody); rep.status != 200 {
		t.Fatalf("sonnet: %d %s", rep.status, rep.body)
	}
}

// overage200 is a 200 served on extra usage.
func overage200(account string, reset time.Time) fakeapi.Fault {
	return fakeapi.Fault{Account: account, Kind: fakeapi.FaultStatus, Status: 200,
		Body: `{"id":"msg_1","type":"message","role":"assistant","content":[],"usage":{"input_tokens":1,"output_tokens":1}}`,
		Headers: map[string]string{"content-type": "application/json",
			uni + "status": "rejected", uni + "reset": strconv.FormatInt(reset.Unix(), 10), uni + "overage-status": "allowed"}}
}

// An account served on extra usage is tried last under the default
// policy (avoid) until the unified reset, never refused; under allow it
// is used like any other.
func TestOverageAvoidAndAllow(t *testing.T) {
	// Priority order decides between a and b: the session strategy.
	h := newHarness(t, withConfig(func(c *config.Config) { c.LBStrategy = config.StrategySession }))
	h.addOAuth("a", 0, false)
	h.addOAuth("b", 1, false)
	h.reload()
	reset := h.clock.Now().Add(2 * time.Hour).Truncate(time.Second)
	h.api.Inject(overage200("a", reset))
	if rep := h.post(msgBody); rep.status != 200 || h.lastRow().Account != "a" {
		t.Fatalf("%d on %s", rep.status, h.lastRow().Account)
	}
	if l := h.limit("a"); l.Blocked(h.clock.Now()) || !l.Overage.Equal(reset) {
		t.Fatalf("limit %+v", l)
	}
	if h.post(msgBody); h.lastRow().Account != "b" {
		t.Fatalf("avoid: went to %s", h.lastRow().Account)
	}
	waitFor(t, "overage saved", func() bool { return h.account("a").OverageUntil == store.ToMS(reset) })
	// Never refused: with b limited, a serves.
	h.api.Inject(fakeapi.Fault{Account: "b", Kind: fakeapi.FaultStatus, Status: 429, Headers: fakeapi.RateLimitHeaders("rejected", reset)})
	if rep := h.post(msgBody); rep.status != 200 || h.lastRow().Account != "a" {
		t.Fatalf("b limited: %d on %s", rep.status, h.lastRow().Account)
	}
	// allow: a is first again.
	allow := store.OverageAllow
	if err := store.UpdateAccount(context.Background(), h.vdb, h.account("a").ID, store.AccountEdit{Overage: &allow}, h.clock.Now()); err != nil {
		t.Fatal(err)
	}
	h.clock.Add(3 * time.Hour) // b's limit over too
	h.api.Inject(overage200("a", h.clock.Now().Add(2*time.Hour)))
	h.reload()
	h.post(msgBody)
	if h.post(msgBody); h.lastRow().Account != "a" {
		t.Fatalf("allow: went to %s", h.lastRow().Account)
	}
}

// An account's refusal of extra usage limits it and the request fails
// over.
func TestExtraUsageRefusalLimits(t *testing.T) {
	h := newHarness(t)
	h.addOAuth("a", 0, false)
	h.addOAuth("b", 1, false)
	h.reload()
	reset := h.clock.Now().Add(4 * time.Hour).Truncate(time.Second)
	h.api.Inject(fakeapi.Fault{Account: "a", Kind: fakeapi.FaultStatus, Status: 400,
		Headers: fakeapi.RateLimitHeaders("rejected", reset),
		Body:    errBody("invalid_request_error", "You're out of extra usage. Add more at claude.ai/settings/usage and keep going.")})
	if rep := h.post(msgBody); rep.status != 200 || h.lastRow().Account != "b" {
		t.Fatalf("%d on %s", rep.status, h.lastRow().Account)
	}
	if l := h.limit("a"); !l.Until.Equal(reset) || l.Reason != WindowExtraUsage {
		t.Fatalf("limit %+v", l)
	}
}

// An account-specific 403/400 quarantines the account (persisted, with
// the reason) and the request fails over; any other 403 passes through
// with the account untouched.
func TestQuarantine(t *testing.T) {
	h := newHarness(t)
	h.addOAuth("a", 0, false)
	h.addOAuth("b", 1, false)
	h.reload()
	var got eventLog
	h.srv.Subscribe(got.add)
	const msg = "OAuth authentication is currently not allowed for this organization."
	h.api.Inject(fakeapi.Fault{Account: "a", Kind: fakeapi.FaultStatus, Status: 403, Body: errBody("permission_error", msg)})
	if rep := h.post(msgBody); rep.status != 200 || h.lastRow().Account != "b" {
		t.Fatalf("%d on %s", rep.status, h.lastRow().Account)
	}
	if row := h.account("a"); row.Status != store.StatusQuarantined || row.StatusReason != msg {
		t.Fatalf("row %s %q", row.Status, row.StatusReason)
	}
	h.reload() // the poll reads the row it wrote: still out
	h.api.ResetRequests()
	if h.post(msgBody); h.lastRow().Account != "b" || len(h.apiRequests()) != 1 {
		t.Fatalf("quarantined a used: %+v", h.lastRow())
	}
	h.srv.pool.events.wait(context.Background())
	if ev, ok := got.find("a", EventQuarantined); !ok || ev.Reason != msg || ev.State.Word != acctstate.Quarantined {
		t.Fatalf("event %+v %v", ev, ok)
	}

	// Another 403 is the request's: passed through untouched.
	const other = `{"type":"error","error":{"type":"permission_error","message":"Your API key does not have permission to use the specified resource."}}`
	h.api.Inject(fakeapi.Fault{Account: "b", Kind: fakeapi.FaultStatus, Status: 403, Body: other})
	rep := h.post(msgBody)
	if rep.status != 403 || string(rep.body) != other || h.lastRow().Attempts != 1 {
		t.Fatalf("%d %s %+v", rep.status, rep.body, h.lastRow())
	}
	if row := h.account("b"); row.Status != store.StatusOK {
		t.Fatalf("b: %s", row.Status)
	}
	// With every account out, the upstream's refusal reaches the client.
	h.api.Inject(fakeapi.Fault{Account: "b", Kind: fakeapi.FaultStatus, Status: 400,
		Body: errBody("invalid_request_error", "Your credit balance is too low to access the Anthropic API.")})
	if rep := h.post(msgBody); rep.status != 400 || !strings.Contains(string(rep.body), "credit balance") {
		t.Fatalf("%d %s", rep.status, rep.body)
	}
	if row := h.account("b"); row.Status != store.StatusQuarantined {
		t.Fatalf("b: %s", row.Status)
	}
}

// A refusal of long context is the request's: tried once on another
// account, then passed through; no account rests.
func TestLongContextRefusalScoped(t *testing.T) {
	h := newHarness(t)
	h.addOAuth("a", 0, false)
	h.addOAuth("b", 1, false)
	h.addOAuth("c", 2, false)
	h.reload()
	body := errBody("invalid_request_error", "The long context beta is not yet available for this subscription.")
	h.api.Inject(fakeapi.Fault{Kind: fakeapi.FaultStatus, Status: 400, Body: body, Count: 3})
	rep := h.post(msgBody)
	if rep.status != 400 || string(rep.body) != body || h.lastRow().Attempts != 2 {
		t.Fatalf("%d %s %+v", rep.status, rep.body, h.lastRow())
	}
	for _, n := range []string{"a", "b", "c"} {
		if l := h.limit(n); l.Blocked(h.clock.Now()) {
			t.Fatalf("%s rests: %+v", n, l)
		}
	}
	h.api.ClearFaults()
	if rep := h.post(msgBody); rep.status != 200 || h.lastRow().Account != "a" {
		t.Fatalf("next: %d on %s", rep.status, h.lastRow().Account)
	}
}

// An API key refused with 401 is key_refused at once (persisted) and the
// request fails over; a lone account's 401 reaches the client with
// x-should-retry: false.
func TestAPIKeyRefused(t *testing.T) {
	h := newHarness(t)
	h.addAPIKey("k", 0)
	h.addAPIKey("j", 1)
	h.reload()
	h.api.Inject(fakeapi.Fault{Account: "k", Kind: fakeapi.FaultStatus, Status: 401, Body: errBody("authentication_error", "invalid x-api-key")})
	if rep := h.post(msgBody); rep.status != 200 || h.lastRow().Account != "j" {
		t.Fatalf("%d on %s", rep.status, h.lastRow().Account)
	}
	if row := h.account("k"); row.Status != store.StatusKeyRefused || !strings.Contains(row.StatusReason, "invalid x-api-key") {
		t.Fatalf("row %s %q", row.Status, row.StatusReason)
	}
	h.api.Inject(fakeapi.Fault{Account: "j", Kind: fakeapi.FaultStatus, Status: 401, Body: errBody("authentication_error", "invalid x-api-key")})
	rep := h.post(msgBody)
	if rep.status != 401 || rep.header.Get("X-Should-Retry") != "false" {
		t.Fatalf("%d %v", rep.status, rep.header)
	}
}

// A 401 that a forced refresh does not cure rests the OAuth account with
// a doubling backoff (reason unauthorized), at most one forced refresh a
// minute, and the third in a row marks it needs_login.
func TestUncurable401(t *testing.T) {
	h := newHarness(t)
	h.addOAuth("only", 0, false)
	h.reload()
	fail401 := func() {
		h.api.Inject(fakeapi.Fault{Account: "only", Kind: fakeapi.FaultStatus, Status: 401, Count: 2,
			Body: errBody("authentication_error", "OAuth token has expired.")})
	}
	fail401()
	rep := h.post(msgBody)
	if rep.status != 401 || rep.header.Get("X-Should-Retry") != "false" {
		t.Fatalf("%d %v %s", rep.status, rep.header, rep.body)
	}
	if n := h.api.RefreshCount("only"); n != 1 {
		t.Fatalf("%d refreshes, want 1", n)
	}
	now := h.clock.Now()
	if l := h.limit("only"); l.Reason != LimitUnauthorized || !l.Until.Equal(now.Add(time.Minute)) {
		t.Fatalf("limit %+v", l)
	}
	// Resting: refused by the proxy, no refresh, no upstream request;
	// not as rate limited (a 429 the client would wait out) but as
	// unusable, with x-should-retry: false.
	h.api.ResetRequests()
	if rep := h.post(msgBody); rep.status != 503 || rep.header.Get("X-Should-Retry") != "false" ||
		len(h.apiRequests()) != 0 || h.api.RefreshCount("only") != 1 {
		t.Fatalf("while resting: %d %v %s", rep.status, rep.header, rep.body)
	}
	// The rest heals: the next request is sent; its 401 doubles the rest.
	h.clock.Add(time.Minute)
	fail401()
	h.post(msgBody)
	if l := h.limit("only"); l.Reason != LimitUnauthorized || !l.Until.Equal(h.clock.Now().Add(2*time.Minute)) || l.Unauthorized != 2 {
		t.Fatalf("second: %+v", l)
	}
	h.clock.Add(2 * time.Minute)
	fail401()
	h.post(msgBody)
	if row := h.account("only"); row.Status != store.StatusNeedsLogin {
		t.Fatalf("third uncured 401: %s %q", row.Status, row.StatusReason)
	}
}

// At most one forced refresh per account per minute: a 401 soon after a
// refresh that cured one rests the account instead of refreshing again.
func TestForcedRefreshAtMostOncePerMinute(t *testing.T) {
	h := newHarness(t)
	h.addOAuth("only", 0, false)
	h.reload()
	h.api.Inject(fakeapi.Fault{Account: "only", Kind: fakeapi.FaultStatus, Status: 401, Body: errBody("authentication_error", "OAuth token has expired.")})
	if rep := h.post(msgBody); rep.status != 200 || h.api.RefreshCount("only") != 1 {
		t.Fatalf("cured: %d, %d refreshes", rep.status, h.api.RefreshCount("only"))
	}
	h.clock.Add(30 * time.Second)
	h.api.Inject(fakeapi.Fault{Account: "only", Kind: fakeapi.FaultStatus, Status: 401, Body: errBody("authentication_error", "OAuth token has expired.")})
	rep := h.post(msgBody)
	if rep.status != 401 || h.api.RefreshCount("only") != 1 || rep.header.Get("X-Should-Retry") != "false" {
		t.Fatalf("%d, %d refreshes", rep.status, h.api.RefreshCount("only"))
	}
	if l := h.limit("only"); l.Reason != LimitUnauthorized {
		t.Fatalf("limit %+v", l)
	}
}

// An error event inside a stream is logged at warn with the request id,
// the account and the error type.
func TestInStreamErrorLogged(t *testing.T) {
	h := newHarness(t)
	h.addOAuth("a", 0, false)
	h.reload()
	h.api.Inject(fakeapi.Fault{Kind: fakeapi.FaultStreamError, AfterEvents: 2})
	rep := h.post(streamBody)
	if rep.status != 200 {
		t.Fatalf("%d", rep.status)
	}
	id := rep.header.Get("X-Claudeflare-Request-Id")
	var line string
	for _, l := range strings.Split(h.logs.String(), "\n") {
		if strings.Contains(l, "in-stream error event") {
			line = l
		}
	}
	if !strings.Contains(line, "level=WARN") || !strings.Contains(line, "request_id="+id) ||
		!strings.Contains(line, "account=a") || !strings.Contains(line, "error_type=overloaded_error") {
		t.Fatalf("log line %q (request %s)", line, id)
	}
}

// `accounts unblock` (store.Unblock) reaches the running proxy: its next
// poll drops every block it holds in memory and takes the row's status.
func TestUnblockReachesTheProxy(t *testing.T) {
	h := newHarness(t)
	h.addOAuth("a", 0, false)
	h.addOAuth("b", 1, false)
	h.reload()
	ctx := context.Background()
	far := h.clock.Now().Add(5 * 24 * time.Hour)
	h.api.Inject(fakeapi.Fault{Account: "a", Kind: fakeapi.FaultStatus, Status: 429, Headers: fakeapi.RateLimitHeaders("rejected", far)})
	h.post(msgBody)
	h.api.Inject(modelLimit429("b", "seven_day_opus", far))
	h.post(opusBody)
	h.api.Inject(fakeapi.Fault{Account: "b", Kind: fakeapi.FaultStatus, Status: 403, Body: errBody("permission_error", "This organization has been disabled.")})
	h.post(msgBody)
	now := h.clock.Now()
	if ok, _, _ := h.srv.pool.byID[h.account("a").ID].usable(now); ok {
		t.Fatal("a usable before the unblock")
	}
	// An in-memory rest a save may not have written yet goes too.
	h.srv.pool.rest(h.srv.pool.byID[h.account("a").ID], time.Hour, now)
	for _, n := range []string{"a", "b"} {
		if _, err := store.Unblock(ctx, h.vdb, n, now); err != nil {
			t.Fatal(err)
		}
	}
	h.reload()
	for _, n := range []string{"a", "b"} {
		st := h.srv.pool.stateOf(h.srv.pool.byID[h.account(n).ID], now)
		if st.Word != acctstate.OK || len(st.Models) != 0 {
			t.Fatalf("%s after unblock: %+v", n, st)
		}
	}
	if rep := h.post(opusBody); rep.status != 200 {
		t.Fatalf("%d on %s", rep.status, h.lastRow().Account)
	}
	// The saver does not write the old blocks back (Stop saves last).
	h.stop()
	if row := h.account("a"); row.RateLimitedUntil != 0 || row.Status != store.StatusOK {
		t.Fatalf("row %+v", row)
	}
	if row := h.account("b"); row.ModelLimits != "" || row.Status != store.StatusOK {
		t.Fatalf("row %+v", row)
	}
}

// The errBody helper must build what the fake would send.
func TestErrBodyShape(t *testing.T) {
	var e struct {
		Type  string `json:"type"`
		Error struct{ Type, Message string }
	}
	if err := json.Unmarshal([]byte(errBody("x", "y")), &e); err != nil || e.Type != "error" || e.Error.Message != "y" {
		t.Fatalf("%+v %v", e, err)
	}
}
