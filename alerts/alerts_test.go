package alerts_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/claudeflare/claudeflare/alerts"
	"github.com/claudeflare/claudeflare/config"
	"github.com/claudeflare/claudeflare/internal/testutil"
)

// hookSecret is the secret part of the test webhooks' URLs: it must reach
// no body and no log line.
const hookSecret = "T0HOOKSECRET/B0HOOKSECRET/xyzzySECRET"

// receiver is a local webhook: it records every body and answers from
// status (200 when it runs out).
type receiver struct {
	srv *httptest.Server
	mu  sync.Mutex
	// status are the answers to the next posts, in order.
	status []int
	header http.Header
	bodies [][]byte
	tries  int
}

func newReceiver(t *testing.T, status ...int) *receiver {
	r := &receiver{status: status}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		b, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		r.tries++
		code := http.StatusOK
		if len(r.status) > 0 {
			code, r.status = r.status[0], r.status[1:]
		}
		if code == http.StatusOK {
			r.bodies = append(r.bodies, b)
			r.header = req.Header.Clone()
		}
		r.mu.Unlock()
		if code == http.StatusTooManyRequests {
			w.Header().Set("Retry-After", "7")
		}
		w.WriteHeader(code)
	}))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *receiver) url() string { return r.srv.URL + "/services/" + hookSecret }

// events returns the bodies received, decoded, and the raw bodies.
func (r *receiver) events(t *testing.T) ([]map[string]any, string) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []map[string]any
	var raw strings.Builder
	for _, b := range r.bodies {
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatalf("body %s: %v", b, err)
		}
		out = append(out, m)
		raw.Write(b)
		raw.WriteByte('\n')
	}
	return out, raw.String()
}

func (r *receiver) waitFor(t *testing.T, n int) []map[string]any {
	t.Helper()
	testutil.WaitFor(t, "the receiver to get its events", func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		return len(r.bodies) >= n
	})
	ev, _ := r.events(t)
	return ev
}

// sleeps records the backoff waits instead of sleeping.
type sleeps struct {
	mu sync.Mutex
	d  []time.Duration
}

func (s *sleeps) sleep(ctx context.Context, d time.Duration) error {
	s.mu.Lock()
	s.d = append(s.d, d)
	s.mu.Unlock()
	return ctx.Err()
}

func (s *sleeps) got() []time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.d)
}

func newNotifier(t *testing.T, s *sleeps, clock *testutil.Clock, log io.Writer, hooks ...config.Webhook) *alerts.Notifier {
	if log == nil {
		log = io.Discard
	}
	n := alerts.New(alerts.Options{
		Webhooks: hooks, Sleep: s.sleep, Now: clock.Now,
		Logger: slog.New(slog.NewTextHandler(log, nil)),
	})
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		n.Close(ctx)
	})
	return n
}

var t0 = time.Date(2026, 12, 2, 16, 0, 0, 0, time.UTC)

// state is what the test's snapshot function answers.
type state struct {
	mu   sync.Mutex
	snap alerts.Snapshot
}

func (s *state) set(f func(*alerts.Snapshot)) {
	s.mu.Lock()
	f(&s.snap)
	s.mu.Unlock()
}

func (s *state) get() alerts.Snapshot {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := s.snap
	out.Accounts = slices.Clone(s.snap.Accounts)
	return out
}

// Every event kind reaches the receiver exactly once, in order, with its
// fields, however often the snapshot repeats the same state.
func TestEveryEventOnce(t *testing.T) {
	rcv := newReceiver(t)
	clock := testutil.NewClock(t0)
	var s sleeps
	var logs testutil.Buffer
	n := newNotifier(t, &s, clock, &logs, config.Webhook{URL: rcv.url()})
	st := &state{}
	st.set(func(s *alerts.Snapshot) {
		s.Accounts = []alerts.Account{
			{Name: "work-1", Usable: true, State: "ok", Util5h: 0.5, Util7d: -1},
			{Name: "work-2", Usable: true, State: "ok", Util5h: -1, Util7d: 0.1},
			{Name: "idle", Paused: true, State: "paused", Util5h: 0.99, Util7d: 0.99},
		}
	})
	w := alerts.NewWatcher(n, st.get, clock.Now)
	w.Check()
	w.Check()

	until := t0.Add(2 * time.Hour)
	st.set(func(s *alerts.Snapshot) {
		s.Accounts[0] = alerts.Account{Name: "work-1", State: "limited", Reason: "5h", Until: until, Util5h: 0.5, Util7d: -1}
	})
	w.AccountChanged(alerts.AccountChange{Account: "work-1", Kind: alerts.ChangeBlocked, State: "limited", Reason: "5h", Until: until, At: clock.Now()})
	w.Check()

	clock.Add(time.Minute)
	st.set(func(s *alerts.Snapshot) {
		s.Accounts[1] = alerts.Account{Name: "work-2", State: "needs_login", Reason: "invalid_grant", Util5h: -1, Util7d: 0.1}
	})
	w.AccountChanged(alerts.AccountChange{Account: "work-2", Kind: alerts.ChangeNeedsLogin, State: "needs_login", Reason: "invalid_grant", At: clock.Now()})
	w.Check()

	clock.Add(time.Minute)
	st.set(func(s *alerts.Snapshot) {
		s.Accounts[0] = alerts.Account{Name: "work-1", Usable: true, State: "ok", Util5h: 0.85, Util7d: -1, Reset5h: until}
	})
	w.AccountChanged(alerts.AccountChange{Account: "work-1", Kind: alerts.ChangeRecovered, State: "ok", Reason: "ok", At: clock.Now()})
	st.set(func(s *alerts.Snapshot) { s.Accounts[0].Util5h = 0.86 })
	w.Check()

	w.BudgetExceeded("alice", "day", "usd", 10, 10.5, clock.Now())

	st.set(func(s *alerts.Snapshot) { s.DroppedRecords, s.DroppedPayloads = 3, 1 })
	w.Check()
	w.Check()

	got := rcv.waitFor(t, 8)
	var names []string
	for _, e := range got {
		names = append(names, e["event"].(string))
	}
	want := []string{
		config.AlertAccountBlocked, config.AlertAccountNeedsLogin, config.AlertPoolExhausted,
		config.AlertAccountRecovered, config.AlertUtilizationThreshold, config.AlertPoolRecovered,
		config.AlertBudgetExceeded, config.AlertRecorderDropping,
	}
	if !slices.Equal(names, want) {
		t.Fatalf("events\n got %v\nwant %v", names, want)
	}
	if s := slices.Clone(config.AlertEvents); !slices.Equal(sorted(s), sorted(want)) {
		t.Errorf("the test does not cover every event: %v", config.AlertEvents)
	}
	check := func(e map[string]any, fields map[string]any) {
		t.Helper()
		for k, v := range fields {
			if e[k] != v {
				t.Errorf("%s: %s = %#v, want %#v (%v)", e["event"], k, e[k], v, e)
			}
		}
		if txt, _ := e["text"].(string); !strings.HasPrefix(txt, "claudeflare: ") {
			t.Errorf("%s: text %q", e["event"], txt)
		}
		if _, err := time.Parse(time.RFC3339, e["at"].(string)); err != nil {
			t.Errorf("%s: at: %v", e["event"], err)
		}
	}
	check(got[0], map[string]any{"account": "work-1", "state": "limited", "reason": "5h", "until": until.Format(time.RFC3339), "at": t0.Format(time.RFC3339)})
	check(got[1], map[string]any{"account": "work-2", "state": "needs_login", "reason": "invalid_grant"})
	check(got[2], map[string]any{"accounts": 2.0, "usable": 0.0, "until": until.Format(time.RFC3339)})
	check(got[3], map[string]any{"account": "work-1", "reason": "ok"})
	check(got[4], map[string]any{"account": "work-1", "window": "5h", "utilization": 0.85, "threshold": 0.8, "reset": until.Format(time.RFC3339)})
	check(got[5], map[string]any{"accounts": 2.0, "usable": 1.0})
	check(got[6], map[string]any{"client_key": "alice", "period": "day", "unit": "usd", "limit": 10.0, "used": 10.5})
	check(got[7], map[string]any{"dropped_records": 3.0, "dropped_payloads": 1.0, "new_dropped": 4.0})
	for _, txt := range []string{"account work-2 needs a new login: run `claudeflare accounts login work-2`", "over its daily budget: $10.50 of $10.00", "is at 85% of its 5h window (threshold 80%)"} {
		if _, raw := rcv.events(t); !strings.Contains(raw, txt) {
			t.Errorf("no event says %q", txt)
		}
	}

	// Nothing more comes: close (drains the queue) and count.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	n.Close(ctx)
	if got, _ := rcv.events(t); len(got) != 8 {
		t.Errorf("%d events, want 8", len(got))
	}
	if st := n.Stats(); st.Sent != 8 || st.Failed != 0 || st.Dropped != 0 {
		t.Errorf("stats %+v", st)
	}
	_, raw := rcv.events(t)
	if strings.Contains(raw, "SECRET") {
		t.Errorf("a body holds the webhook URL's secret: %s", raw)
	}
	if ct := rcv.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("content type %q", ct)
	}
}

func sorted(s []string) []string { slices.Sort(s); return s }

// An event goes only to the webhooks that want it.
func TestEventsFilter(t *testing.T) {
	all, some := newReceiver(t), newReceiver(t)
	clock := testutil.NewClock(t0)
	n := newNotifier(t, &sleeps{}, clock, nil,
		config.Webhook{URL: all.url()},
		config.Webhook{URL: some.url(), Events: []string{config.AlertBudgetExceeded}})
	w := alerts.NewWatcher(n, func() alerts.Snapshot { return alerts.Snapshot{} }, clock.Now)
	n.Send(alerts.Event{Event: config.AlertPoolExhausted, Text: "x"})
	w.BudgetExceeded("bob", "month", "tokens", 1000, 1200, t0)
	all.waitFor(t, 2)
	got := some.waitFor(t, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	n.Close(ctx)
	if got, _ := some.events(t); len(got) != 1 || got[0]["event"] != config.AlertBudgetExceeded {
		t.Errorf("the budget-only hook got %v", got)
	}
	if !strings.Contains(got[0]["text"].(string), "1200 tokens of 1000 tokens") {
		t.Errorf("text %q", got[0]["text"])
	}
}

// A threshold fires once when crossed upward, again only after the
// utilization fell below it; a jump over several fires once, with the
// highest; each webhook has its thresholds.
func TestUtilizationThresholds(t *testing.T) {
	def, low := newReceiver(t), newReceiver(t)
	clock := testutil.NewClock(t0)
	n := newNotifier(t, &sleeps{}, clock, nil,
		config.Webhook{URL: def.url()},
		config.Webhook{URL: low.url(), UtilizationThresholds: []float64{0.5}})
	for _, u := range []float64{-1, 0.1, 0.97, 0.99, 0.9, 0.96, 0.3, 0.81, 0.85} {
		n.Utilization("a", "7d", u, time.Time{}, t0)
	}
	n.Utilization("b", "5h", 0.6, time.Time{}, t0)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	n.Close(ctx)
	var got []string
	evs, _ := def.events(t)
	for _, e := range evs {
		got = append(got, e["account"].(string)+" "+e["window"].(string)+" "+jsonNum(e["threshold"]))
	}
	if want := []string{"a 7d 0.95", "a 7d 0.95", "a 7d 0.8"}; !slices.Equal(got, want) {
		t.Errorf("default thresholds: got %v, want %v", got, want)
	}
	got = nil
	evs, _ = low.events(t)
	for _, e := range evs {
		got = append(got, e["account"].(string)+" "+jsonNum(e["threshold"]))
	}
	if want := []string{"a 0.5", "a 0.5", "b 0.5"}; !slices.Equal(got, want) {
		t.Errorf("threshold 0.5: got %v, want %v", got, want)
	}
}

func jsonNum(v any) string { b, _ := json.Marshal(v); return string(b) }

// A 500 is tried again after 1s, then 2s; a 429 after its Retry-After;
// a 400 is not tried again; five failures give up.
func TestRetries(t *testing.T) {
	for _, tc := range []struct {
		name   string
		status []int
		tries  int
		waits  []time.Duration
		sent   int64
	}{
		{"500 then success", []int{500, 502, 200}, 3, []time.Duration{time.Second, 2 * time.Second}, 1},
		{"429 retry-after", []int{429, 200}, 2, []time.Duration{7 * time.Second}, 1},
		{"400 is final", []int{400}, 1, nil, 0},
		{"five tries", []int{503, 503, 503, 503, 503, 503}, 5, []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rcv := newReceiver(t, tc.status...)
			var s sleeps
			var logs testutil.Buffer
			n := newNotifier(t, &s, testutil.NewClock(t0), &logs, config.Webhook{URL: rcv.url()})
			n.Send(alerts.Event{Event: config.AlertPoolExhausted, Text: "claudeflare: test"})
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			n.Close(ctx)
			rcv.mu.Lock()
			tries := rcv.tries
			rcv.mu.Unlock()
			if tries != tc.tries {
				t.Errorf("%d tries, want %d", tries, tc.tries)
			}
			if !slices.Equal(s.got(), tc.waits) {
				t.Errorf("waits %v, want %v", s.got(), tc.waits)
			}
			if st := n.Stats(); st.Sent != tc.sent || st.Sent+st.Failed != 1 {
				t.Errorf("stats %+v", st)
			}
			if tc.sent == 0 && !strings.Contains(logs.String(), "alert not delivered") {
				t.Errorf("no log line for the lost alert: %s", logs.String())
			}
			if strings.Contains(logs.String(), "SECRET") {
				t.Errorf("the log shows the webhook URL's secret: %s", logs.String())
			}
		})
	}
}

// A receiver that is down blocks no sender: the queue takes what it can,
// drops the rest, and Close returns when its context ends.
func TestReceiverDown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + ln.Addr().String() + "/hook/" + hookSecret
	ln.Close() // nothing listens: connection refused
	var logs testutil.Buffer
	clock := testutil.NewClock(t0)
	// The backoff waits until the notifier is closed, as a long one would.
	n := alerts.New(alerts.Options{
		Webhooks: []config.Webhook{{URL: url}}, Now: clock.Now, QueueSize: 4,
		Logger: slog.New(slog.NewTextHandler(&logs, nil)),
		Sleep: func(ctx context.Context, d time.Duration) error {
			<-ctx.Done()
			return ctx.Err()
		},
	})
	for i := 0; i < 100; i++ {
		n.Send(alerts.Event{Event: config.AlertRecorderDropping, Text: "x"})
	}
	if st := n.Stats(); st.Dropped < 95 {
		t.Errorf("stats %+v: a full queue should drop", st)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	n.Close(ctx) // returns although the worker is in a backoff
	n.Send(alerts.Event{Event: config.AlertRecorderDropping, Text: "after close"})
	if !strings.Contains(logs.String(), "queue is full") || strings.Contains(logs.String(), "SECRET") {
		t.Errorf("log: %s", logs.String())
	}
	if c := strings.Count(logs.String(), "queue is full"); c != 1 {
		t.Errorf("the full queue was logged %d times, want once a minute", c)
	}
}

// The recorder's drops are told at most once every 15 minutes, with what
// was lost meanwhile.
func TestRecorderDroppingRateLimited(t *testing.T) {
	rcv := newReceiver(t)
	clock := testutil.NewClock(t0)
	n := newNotifier(t, &sleeps{}, clock, nil, config.Webhook{URL: rcv.url(), Events: []string{config.AlertRecorderDropping}})
	st := &state{}
	w := alerts.NewWatcher(n, st.get, clock.Now)
	w.Check()
	st.set(func(s *alerts.Snapshot) { s.DroppedRecords = 5 })
	w.Check()
	clock.Add(time.Minute)
	st.set(func(s *alerts.Snapshot) { s.DroppedRecords = 7 })
	w.Check()
	clock.Add(14 * time.Minute)
	w.Check()
	clock.Add(time.Hour)
	w.Check() // nothing new
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	n.Close(ctx)
	evs, _ := rcv.events(t)
	var got []string
	for _, e := range evs {
		got = append(got, jsonNum(e["new_dropped"])+"/"+jsonNum(e["dropped_records"]))
	}
	if want := []string{"5/5", "2/7"}; !slices.Equal(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
}

// An account or a pool already in trouble at the first snapshot is told
// once; a stale event (older than what a snapshot told) is ignored.
func TestFirstSnapshotAndStaleEvents(t *testing.T) {
	rcv := newReceiver(t)
	clock := testutil.NewClock(t0)
	n := newNotifier(t, &sleeps{}, clock, nil, config.Webhook{URL: rcv.url()})
	st := &state{}
	st.set(func(s *alerts.Snapshot) {
		s.Accounts = []alerts.Account{{Name: "a", State: "quarantined", Reason: "organization disabled", Util5h: -1, Util7d: -1}}
	})
	w := alerts.NewWatcher(n, st.get, clock.Now)
	w.Check()
	w.AccountChanged(alerts.AccountChange{Account: "a", Kind: alerts.ChangeRecovered, Reason: "ok", At: t0.Add(-time.Second)})
	w.Check()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	n.Close(ctx)
	evs, _ := rcv.events(t)
	var got []string
	for _, e := range evs {
		got = append(got, e["event"].(string))
	}
	if want := []string{config.AlertAccountBlocked, config.AlertPoolExhausted}; !slices.Equal(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
	if len(evs) > 0 && !strings.Contains(evs[0]["text"].(string), "quarantined: organization disabled") {
		t.Errorf("text %q", evs[0]["text"])
	}
}

// A connection error is logged without the URL (net/url errors quote it,
// secret path included).
func TestConnectionErrorHidesURL(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + ln.Addr().String() + "/hook/" + hookSecret
	ln.Close() // nothing listens: connection refused
	var s sleeps
	var logs testutil.Buffer
	n := newNotifier(t, &s, testutil.NewClock(t0), &logs, config.Webhook{URL: url})
	n.Send(alerts.Event{Event: config.AlertPoolExhausted, Text: "claudeflare: test"})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	n.Close(ctx)
	if st := n.Stats(); st.Failed != 1 || len(s.got()) != 4 {
		t.Errorf("stats %+v, waits %v: want one event failed after 5 tries", st, s.got())
	}
	if !strings.Contains(logs.String(), "alert not delivered") || !strings.Contains(logs.String(), "refused") {
		t.Errorf("no log line for the lost alert: %s", logs.String())
	}
	if strings.Contains(logs.String(), "SECRET") {
		t.Errorf("the log shows the webhook URL's secret: %s", logs.String())
	}
}

// A redirect from the webhook is an answer, not followed: the alert
// never goes to the host it points at (perhaps plain http elsewhere).
func TestRedirectNotFollowed(t *testing.T) {
	other := newReceiver(t)
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, other.url(), http.StatusTemporaryRedirect)
	}))
	t.Cleanup(hook.Close)
	var s sleeps
	n := newNotifier(t, &s, testutil.NewClock(t0), nil, config.Webhook{URL: hook.URL + "/services/" + hookSecret})
	n.Send(alerts.Event{Event: config.AlertPoolExhausted, Text: "claudeflare: test"})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	n.Close(ctx)
	other.mu.Lock()
	tries := other.tries
	other.mu.Unlock()
	if tries != 0 {
		t.Fatalf("the redirect was followed: the other host got %d posts", tries)
	}
	if st := n.Stats(); st.Sent != 0 || st.Failed != 1 {
		t.Fatalf("stats %+v: a redirect is not a delivery", st)
	}
}
