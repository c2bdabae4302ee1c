package proxy

import (
	"context"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/claudeflare/claudeflare/internal/fakeapi"
	"github.com/claudeflare/claudeflare/store"
	"github.com/claudeflare/claudeflare/vault"
)

// eventLog collects the events a subscriber gets.
type eventLog struct {
	mu  sync.Mutex
	evs []AccountEvent
}

func (l *eventLog) add(ev AccountEvent) {
	l.mu.Lock()
	l.evs = append(l.evs, ev)
	l.mu.Unlock()
}

func (l *eventLog) all() []AccountEvent {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]AccountEvent(nil), l.evs...)
}

func (l *eventLog) find(account string, kind AccountEventKind) (AccountEvent, bool) {
	for _, ev := range l.all() {
		if ev.Account == account && ev.Kind == kind {
			return ev, true
		}
	}
	return AccountEvent{}, false
}

// The proxy publishes an account that needs a login (once), one that a
// 429 takes out of rotation (until when, why), and one logged in again.
func TestAccountEventsPublished(t *testing.T) {
	h := newHarness(t)
	var got eventLog
	h.srv.Subscribe(got.add)
	aID := h.addOAuth("a", 0, true)
	h.addAPIKey("k", 1)
	h.addAPIKey("spare", 2)
	h.reload()

	// a's refresh token is refused: the request moves on, a needs login.
	h.api.RevokeAccount("a")
	if r := h.post(msgBody); r.status != 200 {
		t.Fatalf("status %d: %s", r.status, r.body)
	}
	waitFor(t, "the needs-login event", func() bool { _, ok := got.find("a", EventNeedsLogin); return ok })
	if ev, _ := got.find("a", EventNeedsLogin); ev.Reason == "" || !ev.At.Equal(h.clock.Now()) {
		t.Fatalf("needs-login event %+v", ev)
	}

	// k answers 429 with retry-after: limited until then.
	now := h.clock.Now()
	h.api.Inject(fakeapi.Fault{Account: "k", Kind: fakeapi.FaultStatus, Status: 429, Headers: map[string]string{"retry-after": "120"}})
	if r := h.post(msgBody); r.status != 200 {
		t.Fatalf("status %d: %s", r.status, r.body)
	}
	waitFor(t, "the limited event", func() bool { _, ok := got.find("k", EventLimited); return ok })
	if ev, _ := got.find("k", EventLimited); !ev.Until.Equal(now.Add(120*time.Second)) || ev.Reason == "" {
		t.Fatalf("limited event %+v, want until now+120s", ev)
	}

	// A poll that read a's row just before the needs-login mark (status
	// ok) must not use up the mark: under load the 20 ms poll did, and
	// the recovered event below never came.
	h.srv.tokens.loggedIn(aID)

	// a is logged in again (new tokens written, status ok): recovered.
	row, err := store.GetAccount(context.Background(), h.vdb, "a")
	if err != nil {
		t.Fatal(err)
	}
	s := vault.Secrets{RefreshToken: h.api.NewOAuthAccount("a2"), AccessToken: h.api.NewAccessToken("a2"), ExpiresAt: now.Add(time.Hour)}
	if _, err := h.vault.SwapTokens(context.Background(), aID, row.TokenVersion, s); err != nil {
		t.Fatal(err)
	}
	h.reload()
	waitFor(t, "the recovered event", func() bool { _, ok := got.find("a", EventRecovered); return ok })
	if ev, _ := got.find("a", EventRecovered); ev.Reason != "logged_in" {
		t.Fatalf("recovered event %+v", ev)
	}
	h.reload()
	n := 0
	for _, ev := range got.all() {
		if ev.Account == "a" {
			n++
		}
	}
	if n != 2 {
		t.Fatalf("events of a: %+v, want needs_login and recovered once each", got.all())
	}
}

// A limit that ends by time is followed by a recovered event when the
// account next answers well: the block is then forgotten (a stale
// block would also keep its reason in the saved row).
func TestRecoveredAfterLimitEnds(t *testing.T) {
	h := newHarness(t)
	var got eventLog
	h.srv.Subscribe(got.add)
	h.addAPIKey("k", 0)
	h.reload()
	h.api.Inject(fakeapi.Fault{Account: "k", Kind: fakeapi.FaultStatus, Status: 429, Count: 1,
		Headers: map[string]string{"retry-after": "120"}})
	if r := h.post(msgBody); r.status != http.StatusTooManyRequests {
		t.Fatalf("status %d: %s", r.status, r.body)
	}
	waitFor(t, "the limited event", func() bool { _, ok := got.find("k", EventLimited); return ok })
	h.clock.Add(121 * time.Second)
	if r := h.post(msgBody); r.status != 200 {
		t.Fatalf("after the limit: status %d: %s", r.status, r.body)
	}
	waitFor(t, "the recovered event", func() bool { _, ok := got.find("k", EventRecovered); return ok })
	if l := h.limit("k"); !l.Until.IsZero() || l.Reason != "" {
		t.Fatalf("the block is still held after a good answer: %+v", l)
	}
}

// A subscriber that does not return does not delay any response: events
// wait for it, in order, and reach it once it goes on.
func TestSlowSubscriberDoesNotBlockRequests(t *testing.T) {
	h := newHarness(t)
	entered, release := make(chan AccountEvent, 1), make(chan struct{})
	var got eventLog
	h.srv.Subscribe(func(ev AccountEvent) {
		select {
		case entered <- ev:
		default:
		}
		<-release
		got.add(ev)
	})
	var once sync.Once
	unblock := func() { once.Do(func() { close(release) }) }
	t.Cleanup(unblock) // before the harness stops the server
	h.addAPIKey("k1", 0)
	h.addAPIKey("k2", 1)
	h.addAPIKey("k3", 2)
	h.reload()

	// post fails, rather than hangs, should a response wait for the
	// subscriber (which waits for the test): the bound is no timing
	// assertion, only the end of a wait that would never end.
	post := func() {
		t.Helper()
		done := make(chan reply, 1)
		go func() { done <- h.post(msgBody) }()
		select {
		case r := <-done:
			if r.status != http.StatusOK {
				t.Fatalf("status %d: %s", r.status, r.body)
			}
		case <-time.After(time.Minute):
			t.Fatal("the response waited for the subscriber")
		}
	}
	limit := func(account string) {
		t.Helper()
		h.api.Inject(fakeapi.Fault{Account: account, Kind: fakeapi.FaultStatus, Status: 429, Headers: map[string]string{"retry-after": "60"}})
		post()
	}
	limit("k1")
	first := <-entered // the subscriber now holds k1's event and waits
	if first.Account != "k1" || first.Kind != EventLimited {
		t.Fatalf("first event %+v", first)
	}
	// Requests that make more events are answered while it waits.
	limit("k2")
	for range 3 {
		post()
	}
	if evs := got.all(); len(evs) != 0 {
		t.Fatalf("delivered while the subscriber waited: %+v", evs)
	}
	unblock()
	waitFor(t, "both events delivered", func() bool { return len(got.all()) == 2 })
	if evs := got.all(); evs[0].Account != "k1" || evs[1].Account != "k2" {
		t.Fatalf("order: %+v", evs)
	}
}

// Publishing without subscribers costs nothing and keeps nothing; past
// maxQueuedEvents, events are dropped rather than held without bound.
func TestEventQueueBounded(t *testing.T) {
	var e events
	e.publish(AccountEvent{Account: "x"})
	if len(e.queue) != 0 || e.idle != nil {
		t.Fatal("an event was queued without subscribers")
	}
	release := make(chan struct{})
	e.subs = []func(AccountEvent){func(AccountEvent) { <-release }}
	for range maxQueuedEvents + 10 {
		e.publish(AccountEvent{Account: "x"})
	}
	e.mu.Lock()
	queued, dropped := len(e.queue), e.dropped
	e.mu.Unlock()
	// One event may be held by the subscriber already.
	if queued > maxQueuedEvents || dropped < 9 {
		t.Fatalf("queued %d, dropped %d", queued, dropped)
	}
	close(release)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	e.wait(ctx)
	if ctx.Err() != nil || len(e.queue) != 0 {
		t.Fatal("queue not drained")
	}
}
