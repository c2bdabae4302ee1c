// Package alerts tells people, through webhooks, what needs them: an
// account that needs a login, is blocked or has recovered, a pool with no
// usable account left (and when it serves again), an account's 5h or 7d
// utilization crossing a threshold, a client key over its budget, and a
// request log that drops records.
//
// A Notifier posts each Event as JSON to every webhook of the config
// (config.Webhook) that wants it: a human "text" line (what Slack-compatible
// incoming webhooks show) and the event's fields. Sending never blocks the
// caller: each webhook has a bounded queue, drained by a goroutine of its
// own that retries with backoff. A Watcher turns the daemon's account
// events and snapshots into events, each once per transition.
//
// No event holds a token, an API key or a client key (only names), and a
// webhook's URL, which may hold a secret, is never logged whole.
package alerts

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/claudeflare/claudeflare/config"
)

// Event is the JSON body of one alert. Text is a line for people; the
// other fields are for programs and are present only where they apply.
type Event struct {
	// Event is one of config.AlertEvents.
	Event string `json:"event"`
	// Text says it in one line ("claudeflare: account a needs a login ...").
	Text string    `json:"text"`
	At   time.Time `json:"at"`
	// Account names the account (account_*, utilization_threshold).
	Account string `json:"account,omitempty"`
	// State is the account's state word (needs_login, limited,
	// quarantined, ...), for account events.
	State string `json:"state,omitempty"`
	// Reason: why it is blocked (the window 5h, 7d, cooldown, ...; the
	// upstream's refusal), or why it recovered.
	Reason string `json:"reason,omitempty"`
	// Until is when a block ends, when known (account_blocked; for
	// pool_exhausted the earliest account's).
	Until *time.Time `json:"until,omitempty"`
	// Accounts and Usable count the pool's accounts that are not paused,
	// and those of them usable (pool_*).
	Accounts *int `json:"accounts,omitempty"`
	Usable   *int `json:"usable,omitempty"`
	// Window ("5h" or "7d"), Utilization (a share, 0.83) and Threshold
	// (the highest crossed) of utilization_threshold; Reset is when the
	// window resets, when known.
	Window      string     `json:"window,omitempty"`
	Utilization *float64   `json:"utilization,omitempty"`
	Threshold   *float64   `json:"threshold,omitempty"`
	Reset       *time.Time `json:"reset,omitempty"`
	// ClientKey is the client key's name, never the key (budget_exceeded),
	// with the budget's Period (day, week, month), Unit (usd, tokens),
	// Limit and Used.
	ClientKey string   `json:"client_key,omitempty"`
	Period    string   `json:"period,omitempty"`
	Unit      string   `json:"unit,omitempty"`
	Limit     *float64 `json:"limit,omitempty"`
	Used      *float64 `json:"used,omitempty"`
	// DroppedRecords and DroppedPayloads are the recorder's losses since
	// the daemon started; NewDropped what was lost since the last alert
	// (recorder_dropping).
	DroppedRecords  *int64 `json:"dropped_records,omitempty"`
	DroppedPayloads *int64 `json:"dropped_payloads,omitempty"`
	NewDropped      *int64 `json:"new_dropped,omitempty"`
}

// Delivery: tries per event, the first wait between tries (doubled
// after each) and the longest wait.
const (
	maxTries     = 5
	firstBackoff = time.Second
	maxBackoff   = 30 * time.Second
	// tryTimeout bounds one POST, answer included.
	tryTimeout = 10 * time.Second
	// defaultQueue is each webhook's queue length; past it events drop.
	defaultQueue = 256
)

// Options are what a Notifier is built from.
type Options struct {
	Webhooks []config.Webhook
	Logger   *slog.Logger
	// Client posts the events (nil: a client of its own; each try is
	// bounded to 10 s anyway).
	Client *http.Client
	// Now is the clock (nil: time.Now).
	Now func() time.Time
	// Sleep waits d or until ctx ends (nil: a timer); tests pass one
	// that does not sleep.
	Sleep func(ctx context.Context, d time.Duration) error
	// QueueSize bounds each webhook's queue (0: 256).
	QueueSize int
	// UserAgent is sent with each POST ("" = "claudeflare").
	UserAgent string
}

// Stats count what a Notifier did, over all webhooks.
type Stats struct {
	Sent    int64 // delivered (a 2xx answer)
	Failed  int64 // given up after the tries, or refused (4xx)
	Dropped int64 // not queued: the webhook's queue was full, or the notifier closed
}

// Notifier posts events to the webhooks. Its methods are safe for
// concurrent use and never block on a webhook.
type Notifier struct {
	log    *slog.Logger
	client *http.Client
	now    func() time.Time
	sleep  func(ctx context.Context, d time.Duration) error
	ua     string
	hooks  []*hook

	ctx    context.Context // ends when Close gives up waiting
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu     sync.Mutex
	closed bool
	stats  Stats
}

// hook is one webhook: its settings, queue and threshold state.
type hook struct {
	cfg        config.Webhook
	name       string // the URL redacted: what logs show
	thresholds []float64
	queue      chan Event

	mu sync.Mutex
	// crossed: how many of thresholds each account's window is at or
	// above, as last seen ("account\x00window").
	crossed     map[string]int
	droppedLogd time.Time // when a full queue was last logged
}

// New starts a Notifier: one goroutine per webhook. Close stops it.
func New(opts Options) *Notifier {
	n := &Notifier{log: opts.Logger, client: opts.Client, now: opts.Now, sleep: opts.Sleep, ua: opts.UserAgent}
	if n.log == nil {
		n.log = slog.New(slog.DiscardHandler)
	}
	if n.client == nil {
		n.client = &http.Client{}
	}
	// A redirect is an answer, never followed: following it would send
	// the alert (and the hook's path) to another host, perhaps over
	// plain http, past the https-only check of the config.
	c := *n.client
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	n.client = &c
	if n.now == nil {
		n.now = time.Now
	}
	if n.sleep == nil {
		n.sleep = sleepCtx
	}
	if n.ua == "" {
		n.ua = "claudeflare"
	}
	size := opts.QueueSize
	if size <= 0 {
		size = defaultQueue
	}
	n.ctx, n.cancel = context.WithCancel(context.Background())
	for _, w := range opts.Webhooks {
		h := &hook{cfg: w, name: w.Redacted(), thresholds: w.Thresholds(), queue: make(chan Event, size), crossed: map[string]int{}}
		n.hooks = append(n.hooks, h)
		n.wg.Add(1)
		go n.run(h)
	}
	return n
}

// Stats returns the counts so far.
func (n *Notifier) Stats() Stats {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.stats
}

// Send queues ev for every webhook that wants it; it never waits. An
// event a full queue cannot take is dropped, counted and logged (at most
// once a minute per webhook). utilization_threshold events go through
// Utilization.
func (n *Notifier) Send(ev Event) {
	if n == nil {
		return
	}
	if ev.At.IsZero() {
		ev.At = n.now()
	}
	ev.At = ev.At.UTC()
	for _, h := range n.hooks {
		if h.cfg.Wants(ev.Event) {
			n.enqueue(h, ev)
		}
	}
}

func (n *Notifier) enqueue(h *hook, ev Event) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		n.stats.Dropped++
		return
	}
	select {
	case h.queue <- ev:
		return
	default:
	}
	n.stats.Dropped++
	now := n.now()
	h.mu.Lock()
	logIt := h.droppedLogd.IsZero() || now.Sub(h.droppedLogd) >= time.Minute
	if logIt {
		h.droppedLogd = now
	}
	h.mu.Unlock()
	if logIt {
		n.log.Warn("alert dropped: the webhook's queue is full (is it down?)", "webhook", h.name, "event", ev.Event)
	}
}

// Utilization tells the webhooks that want utilization_threshold of an
// account's window ("5h", "7d") at util (a share; negative = unknown):
// each webhook whose thresholds it crossed upward since the last call
// gets one event, with the highest threshold crossed. Falling below a
// threshold re-arms it.
func (n *Notifier) Utilization(account, window string, util float64, reset, at time.Time) {
	if n == nil || util < 0 {
		return
	}
	for _, h := range n.hooks {
		if !h.cfg.Wants(config.AlertUtilizationThreshold) {
			continue
		}
		crossed := 0
		for _, t := range h.thresholds {
			if util >= t {
				crossed++
			}
		}
		k := account + "\x00" + window
		h.mu.Lock()
		before := h.crossed[k]
		h.crossed[k] = crossed
		h.mu.Unlock()
		if crossed <= before {
			continue
		}
		th := h.thresholds[crossed-1]
		ev := Event{Event: config.AlertUtilizationThreshold, At: at.UTC(), Account: account, Window: window,
			Utilization: &util, Threshold: &th}
		ev.Text = fmt.Sprintf("claudeflare: account %s is at %s of its %s window (threshold %s)", account, pct(util), window, pct(th))
		if !reset.IsZero() {
			r := reset.UTC()
			ev.Reset = &r
			ev.Text += ", resets " + r.Format(time.RFC3339)
		}
		n.enqueue(h, ev)
	}
}

// Close stops taking events and lets the queued ones go out until ctx
// ends; then it cancels what is still being sent.
func (n *Notifier) Close(ctx context.Context) {
	if n == nil {
		return
	}
	n.mu.Lock()
	if !n.closed {
		n.closed = true
		for _, h := range n.hooks {
			close(h.queue)
		}
	}
	n.mu.Unlock()
	done := make(chan struct{})
	go func() { n.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		n.cancel()
		<-done
	}
	n.cancel()
}

// run sends h's events one at a time, in order.
func (n *Notifier) run(h *hook) {
	defer n.wg.Done()
	for ev := range h.queue {
		err := n.deliver(h, ev)
		n.mu.Lock()
		if err == nil {
			n.stats.Sent++
		} else {
			n.stats.Failed++
		}
		n.mu.Unlock()
		if err != nil && n.ctx.Err() == nil {
			n.log.Warn("alert not delivered", "webhook", h.name, "event", ev.Event, "err", err)
		}
	}
}

// deliver posts ev to h, up to maxTries times: again after a connection
// error, a 5xx or a 429 (waiting its Retry-After when it says, within
// maxBackoff), not after another answer.
func (n *Notifier) deliver(h *hook, ev Event) error {
	body, err := json.Marshal(ev)
	if err != nil {
		return err
	}
	wait := firstBackoff
	var last error
	for try := 1; ; try++ {
		retryAfter, err := n.post(h, body)
		if err == nil {
			return nil
		}
		last = err
		var fatal permanentError
		if errors.As(err, &fatal) || try == maxTries {
			break
		}
		d := wait
		if retryAfter > 0 {
			d = min(retryAfter, maxBackoff)
		}
		if n.sleep(n.ctx, d) != nil {
			break
		}
		wait = min(2*wait, maxBackoff)
	}
	return last
}

// permanentError is an answer that another try would not change.
type permanentError struct{ msg string }

func (e permanentError) Error() string { return e.msg }

// post makes one try. The error never holds the URL.
func (n *Notifier) post(h *hook, body []byte) (retryAfter time.Duration, err error) {
	ctx, cancel := context.WithTimeout(n.ctx, tryTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.cfg.URL, bytes.NewReader(body))
	if err != nil {
		return 0, permanentError{"invalid webhook URL"}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", n.ua)
	resp, err := n.client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // its text holds the URL
		}
		return 0, fmt.Errorf("post: %w", err)
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		return 0, nil
	case resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500:
		if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s > 0 {
			retryAfter = time.Duration(s) * time.Second
		}
		return retryAfter, fmt.Errorf("the webhook answered %d %s", resp.StatusCode, http.StatusText(resp.StatusCode))
	}
	return 0, permanentError{fmt.Sprintf("the webhook answered %d %s; not retried", resp.StatusCode, http.StatusText(resp.StatusCode))}
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// pct writes a share as a percentage: 0.834 -> "83%".
func pct(f float64) string {
	return strconv.FormatFloat(f*100, 'f', 0, 64) + "%"
}
