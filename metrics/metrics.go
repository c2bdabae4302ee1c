// Package metrics is claudeflare's Prometheus instrumentation: a registry of
// its own, the counters and histograms the proxy feeds on the hot path, a
// collector that reads the accounts' rate-limit state at scrape time, and
// the /metrics handler.
//
// Every method works on a nil *Metrics and does nothing, so callers need
// no checks. The hot-path methods (ObserveRequest, Failover, Refresh) do
// not allocate once a label combination has been seen.
package metrics

import (
	"net/http"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/claudeflare/claudeflare/store"
)

// Namespace prefixes every claudeflare metric name.
const Namespace = "claudeflare"

// Label values standing in for what is missing or too varied to keep.
const (
	// NoAccount is the account label of a request no account served
	// (no usable account, bad client key).
	NoAccount = "none"
	// NoModel is the model label of a request without a model.
	NoModel = "none"
	// OtherModel is the model label of every model that does not look
	// like a Claude model id (see ModelLabel), and of the ones past
	// MaxModels distinct ones, so that neither a client nor an upstream
	// can grow the series without bound or put arbitrary text, such as a
	// credential, into /metrics.
	OtherModel = "other"
)

// MaxModels is how many distinct model ids get a label value of their
// own (the first ones seen since the daemon started); later ones are
// counted as OtherModel.
const MaxModels = 64

// maxModelIDLen caps what follows "claude-" in a model id kept as a label.
const maxModelIDLen = 64

// ModelLabel reports whether model may be a model label value of its own:
// "claude-" followed by 1 to 64 lower-case letters, digits, dots and
// dashes (claude-sonnet-4-5, claude-3-5-haiku-20241022), and nothing that
// holds "sk-ant". Every other model is counted as OtherModel.
func ModelLabel(model string) bool {
	const prefix = "claude-"
	if len(model) <= len(prefix) || len(model) > len(prefix)+maxModelIDLen || model[:len(prefix)] != prefix {
		return false
	}
	for i := len(prefix); i < len(model); i++ {
		switch c := model[i]; {
		case 'a' <= c && c <= 'z', '0' <= c && c <= '9', c == '.', c == '-':
		default:
			return false
		}
	}
	return !strings.Contains(model, "sk-ant")
}

// Token kinds, the kind label of claudeflare_tokens_total.
const (
	TokensInput         = "input"
	TokensOutput        = "output"
	TokensCacheRead     = "cache_read"
	TokensCacheCreation = "cache_creation"
)

// Latency buckets, in seconds. Answers from the upstream take from a
// fraction of a second to many minutes (long streams).
var (
	DurationBuckets = []float64{0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600}
	TTFBBuckets     = []float64{0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 10, 20, 30, 60}
)

// BuildInfo is the claudeflare_build_info labels.
type BuildInfo struct {
	Version, Commit, Date string
}

// Request is one finished client request, as the proxy saw it.
type Request struct {
	// Account served the request; "" when none did.
	Account string
	// Status is the HTTP status the client got (499 when it went away).
	Status int
	// Model is the request's model; "" when it had none.
	Model string
	// Duration is from receiving the request to the end of the response.
	Duration time.Duration
	// TTFB is from receiving the request to the first response byte
	// sent to the client; negative when none was sent (the client left).
	TTFB time.Duration
	// Token usage reported by the upstream.
	InputTokens, OutputTokens, CacheReadTokens, CacheCreationTokens int64
	// CostUSD is the request's cost at the price table (the row's
	// cost_usd); 0 when its model has no price.
	CostUSD float64
}

// AccountState is one account's state at scrape time.
type AccountState struct {
	Name       string
	Paused     bool
	NeedsLogin bool
	// Usable is whether the account could be picked right now.
	Usable bool
	// RateLimitStatus is the last anthropic-ratelimit-unified-status seen
	// ("allowed", "allowed_warning", "rejected"); "" when none was.
	RateLimitStatus string
	// Util5h and Util7d are the last utilisations seen, 0..1; negative when
	// unknown.
	Util5h, Util7d float64
	// Reset is the last unified reset time seen; Reset5h and Reset7d the
	// per-window ones. Zero when unknown.
	Reset, Reset5h, Reset7d time.Time
	// BlockedUntil is when the account's rest (a limit, cooldown or the rest after an
	// uncured 401 or a blocked refresh) ends; zero
	// or past when it is not blocked.
	BlockedUntil time.Time
	// InFlight is the number of requests it is serving.
	InFlight int
	// State is the account's state word (internal/acctstate: ok, paused,
	// needs_login, key_refused, quarantined, refresh_blocked, limited,
	// limited_model); "" is not reported.
	State string
}

// Sources are read at every scrape. Any may be nil.
type Sources struct {
	// Accounts returns a snapshot of every account; called once per scrape.
	Accounts func() []AccountState
	// QueueDepth is the number of records waiting in the recorder queue.
	QueueDepth func() int
	// QueueCapacity is the recorder queue's length.
	QueueCapacity func() int
	// DroppedPayloads and DroppedRecords are the totals of payloads and
	// whole records the recorder dropped because its queue was full.
	DroppedPayloads func() int64
	DroppedRecords  func() int64
	// FailedRecords is the total of records lost to a database error.
	FailedRecords func() int64
}

// Metrics holds claudeflare's registry and metrics.
type Metrics struct {
	reg *prometheus.Registry
	now func() time.Time

	requests  *prometheus.CounterVec
	duration  *prometheus.HistogramVec
	ttfb      *prometheus.HistogramVec
	tokens    *prometheus.CounterVec
	cost      *prometheus.CounterVec
	refreshes *prometheus.CounterVec
	refreshFa *prometheus.CounterVec
	failovers *prometheus.CounterVec
	acctEvs   *prometheus.CounterVec

	mu        sync.RWMutex
	series    map[seriesKey]*series // by label values: bounded
	models    map[string]struct{}   // the model labels given out, at most MaxModels
	accounts  map[string]*accountSeries
	failovByR map[failoverKey]prometheus.Counter

	sources atomic.Pointer[Sources]
}

type seriesKey struct {
	account, model string // model: the label value, never the raw model
	status         int
}

type series struct {
	requests prometheus.Counter
	tokens   [4]prometheus.Counter // input, output, cache_read, cache_creation
	cost     prometheus.Counter
	acct     *accountSeries
}

type accountSeries struct {
	duration, ttfb       prometheus.Observer
	refreshOK, refreshNo prometheus.Counter
}

type failoverKey struct{ account, reason string }

// Options configure New.
type Options struct {
	Build BuildInfo
	// Now is the clock for "seconds until reset" (nil = time.Now).
	Now func() time.Time
	// NoProcess leaves out the Go runtime and process collectors (tests).
	NoProcess bool
}

// New makes a registry with every claudeflare metric, the build info and,
// unless opts.NoProcess, the Go runtime and process collectors.
func New(opts Options) *Metrics {
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	m := &Metrics{
		reg:       prometheus.NewRegistry(),
		now:       now,
		series:    map[seriesKey]*series{},
		models:    map[string]struct{}{},
		accounts:  map[string]*accountSeries{},
		failovByR: map[failoverKey]prometheus.Counter{},
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "requests_total",
			Help: "Client requests answered, by the account that served them, the HTTP status the client got and the model.",
		}, []string{"account", "status", "model"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: Namespace, Name: "request_duration_seconds",
			Help:    "Time from receiving a request to the end of its response, by account.",
			Buckets: DurationBuckets,
		}, []string{"account"}),
		ttfb: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: Namespace, Name: "time_to_first_byte_seconds",
			Help:    "Time from receiving a request to the first response byte sent to the client (the upstream's, or the proxy's own error), by account.",
			Buckets: TTFBBuckets,
		}, []string{"account"}),
		tokens: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "tokens_total",
			Help: "Tokens reported by the upstream, by account, model and kind (input, output, cache_read, cache_creation).",
		}, []string{"account", "model", "kind"}),
		cost: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "cost_usd_total",
			Help: "Cost in USD of the requests answered, at the API's list prices (the request log's cost_usd; for subscription accounts the API-equivalent value), by account, HTTP status and model. Requests of a model without a price add nothing.",
		}, []string{"account", "status", "model"}),
		refreshes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "token_refreshes_total",
			Help: "OAuth token refreshes attempted, by account.",
		}, []string{"account"}),
		refreshFa: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "token_refresh_failures_total",
			Help: "OAuth token refreshes that failed, by account.",
		}, []string{"account"}),
		failovers: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "failovers_total",
			Help: "Requests moved from an account to the next before the first byte, by the account left and why.",
		}, []string{"account", "reason"}),
		acctEvs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "account_events_total",
			Help: "Account status changes the proxy made, by account and event (needs_login, limited, recovered).",
		}, []string{"account", "event"}),
	}
	build := prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: Namespace, Name: "build_info",
		Help: "Always 1; the labels say which claudeflare is running.",
		ConstLabels: prometheus.Labels{
			"version": opts.Build.Version, "commit": opts.Build.Commit,
			"date": opts.Build.Date, "goversion": runtime.Version(),
		},
	})
	build.Set(1)
	m.reg.MustRegister(m.requests, m.duration, m.ttfb, m.tokens, m.cost, m.refreshes, m.refreshFa, m.failovers, m.acctEvs, build,
		&stateCollector{m: m})
	if !opts.NoProcess {
		m.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	return m
}

// Registry is the registry, for callers that add metrics of their own.
func (m *Metrics) Registry() *prometheus.Registry {
	if m == nil {
		return nil
	}
	return m.reg
}

// SetSources sets what the scrape-time collector reads. It may be called
// at any time, more than once; nil funcs are skipped.
func (m *Metrics) SetSources(s Sources) {
	if m == nil {
		return
	}
	m.sources.Store(&s)
}

// Handler serves the registry in the Prometheus text (or negotiated)
// format. It does no authorisation: the caller decides who may scrape.
func (m *Metrics) Handler() http.Handler {
	if m == nil {
		return http.NotFoundHandler()
	}
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
}

// ObserveRequest counts one finished client request: the request counter,
// the duration and time-to-first-byte histograms and the tokens.
func (m *Metrics) ObserveRequest(r Request) {
	if m == nil {
		return
	}
	s := m.seriesFor(r.Account, r.Model, r.Status)
	s.requests.Inc()
	s.acct.duration.Observe(max(r.Duration, 0).Seconds())
	if r.TTFB >= 0 {
		s.acct.ttfb.Observe(r.TTFB.Seconds())
	}
	for i, n := range [4]int64{r.InputTokens, r.OutputTokens, r.CacheReadTokens, r.CacheCreationTokens} {
		if n > 0 {
			s.tokens[i].Add(float64(n))
		}
	}
	if r.CostUSD > 0 {
		s.cost.Add(r.CostUSD)
	}
}

// Request counts one finished client request from its request-log row;
// with Failover and Refresh it makes *Metrics a proxy.Observer.
func (m *Metrics) Request(r store.Request) {
	var cost float64
	if r.CostUSD != nil {
		cost = *r.CostUSD
	}
	ttfb := time.Duration(r.TTFBMS) * time.Millisecond
	if r.TTFBMS == 0 && r.Status == store.StatusClientClosed {
		ttfb = -1 // the client left before the first byte
	}
	m.ObserveRequest(Request{
		Account: r.Account, Status: r.Status, Model: r.Model,
		Duration:    time.Duration(r.DurationMS) * time.Millisecond,
		TTFB:        ttfb,
		InputTokens: r.InputTokens, OutputTokens: r.OutputTokens,
		CacheReadTokens: r.CacheReadInputTokens, CacheCreationTokens: r.CacheCreationInputTokens,
		CostUSD: cost,
	})
}

// Failover counts a request moved away from account for reason (one of
// the proxy's failover reasons, proxy.Reason*, defined there once).
func (m *Metrics) Failover(account, reason string) {
	if m == nil {
		return
	}
	k := failoverKey{account, reason}
	m.mu.RLock()
	c, ok := m.failovByR[k]
	m.mu.RUnlock()
	if !ok {
		m.mu.Lock()
		if c, ok = m.failovByR[k]; !ok {
			c = m.failovers.WithLabelValues(orNone(account), reason)
			m.failovByR[k] = c
		}
		m.mu.Unlock()
	}
	c.Inc()
}

// Refresh counts one OAuth token refresh of account; ok is false when it
// failed.
func (m *Metrics) Refresh(account string, ok bool) {
	if m == nil {
		return
	}
	a := m.accountFor(account)
	a.refreshOK.Inc()
	if !ok {
		a.refreshNo.Inc()
	}
}

// AccountEvents are the event label values of
// claudeflare_account_events_total (the proxy's AccountEventKind values);
// any other is counted as "other".
var AccountEvents = []string{"needs_login", "limited", "recovered", "limited_model", "quarantined", "key_refused", "unblocked"}

// AccountEvent counts one status change of account (the proxy's account
// events: subscribe it with proxy.Server.Subscribe). It is called off the
// request path.
func (m *Metrics) AccountEvent(account, event string) {
	if m == nil {
		return
	}
	if !slices.Contains(AccountEvents, event) {
		event = "other"
	}
	m.acctEvs.WithLabelValues(orNone(account), event).Inc()
}

func orNone(s string) string {
	if s == "" {
		return NoAccount
	}
	return s
}

// modelLabel is the label value of model: NoModel, model itself (a model
// id, one of the first MaxModels seen) or OtherModel.
func (m *Metrics) modelLabel(model string) string {
	if model == "" {
		return NoModel
	}
	m.mu.RLock()
	_, known := m.models[model]
	full := len(m.models) >= MaxModels
	m.mu.RUnlock()
	switch {
	case known:
		return model
	case full || !ModelLabel(model):
		return OtherModel
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, known := m.models[model]; !known {
		if len(m.models) >= MaxModels {
			return OtherModel
		}
		m.models[model] = struct{}{}
	}
	return model
}

// seriesFor returns the cached series of a label combination, creating it
// on first use. The cache is keyed by label values, so it stays as small
// as the series whatever models the requests name.
func (m *Metrics) seriesFor(account, model string, status int) *series {
	label := m.modelLabel(model)
	k := seriesKey{account, label, status}
	m.mu.RLock()
	s, ok := m.series[k]
	m.mu.RUnlock()
	if ok {
		return s
	}
	a := m.accountFor(account)
	m.mu.Lock()
	defer m.mu.Unlock()
	if s, ok := m.series[k]; ok {
		return s
	}
	acct := orNone(account)
	s = &series{
		requests: m.requests.WithLabelValues(acct, strconv.Itoa(status), label),
		cost:     m.cost.WithLabelValues(acct, strconv.Itoa(status), label),
		acct:     a,
	}
	for i, kind := range [4]string{TokensInput, TokensOutput, TokensCacheRead, TokensCacheCreation} {
		s.tokens[i] = m.tokens.WithLabelValues(acct, label, kind)
	}
	m.series[k] = s
	return s
}

func (m *Metrics) accountFor(account string) *accountSeries {
	m.mu.RLock()
	a, ok := m.accounts[account]
	m.mu.RUnlock()
	if ok {
		return a
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if a, ok := m.accounts[account]; ok {
		return a
	}
	acct := orNone(account)
	a = &accountSeries{
		duration:  m.duration.WithLabelValues(acct),
		ttfb:      m.ttfb.WithLabelValues(acct),
		refreshOK: m.refreshes.WithLabelValues(acct),
		refreshNo: m.refreshFa.WithLabelValues(acct),
	}
	m.accounts[account] = a
	return a
}
