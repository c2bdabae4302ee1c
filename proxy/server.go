// Package proxy is the daemon's forwarding core (package daemon builds
// it and composes access around it): an HTTP server that forwards /v1/*
// to the upstream API with one account's credentials at a time, choosing the
// account, refreshing its tokens, reading its rate limits, failing over
// before the first byte, and recording every request asynchronously.
//
// Choices worth knowing:
//
//   - Retry delay. A failed try moves to the next account at once: a
//     different account is not affected by the first one's trouble, and
//     the client is waiting. RETRY_DELAY_MS x RETRY_BACKOFF^n is slept only
//     before a try on an account this request already tried (no fresh
//     account is usable, after a 5xx or a connection error); n counts
//     those repeats. The sleep is Options.Sleep, so tests inject it.
//     RETRY_ATTEMPTS bounds the tries.
//   - Accept-Encoding. The client's value is not forwarded. Go's transport
//     then asks the upstream for gzip itself and decompresses, so the
//     client always gets a plain body it can decode whatever it asked for
//     (Claude Code asks for br and zstd too) and the usage tap reads plain
//     bytes.
//   - The hot path never touches SQLite: accounts are read by a poll
//     (every 2s, and on Reload), rate-limit state is saved by a goroutine,
//     and request rows and payloads go through a bounded queue to one
//     writer goroutine that also seals the payloads.
//   - One path per request: only a canonical request target is served
//     (target.Path; anything else is 400), and exactly that path is sent
//     upstream, the one the access guard authorized.
//   - Request bodies are read within server.body_read_timeout (else 408)
//     into a buffer that grows as bytes arrive, never from Content-Length;
//     all bodies in flight together hold at most
//     server.max_inflight_body_bytes (else 503, x-should-retry: true).
//   - Memory per request is bounded: the request body is kept once (capped
//     by server.max_body_bytes) for replay, except a batch or file upload
//     over that cap, which streams upstream once, unkept (owned.go); the
//     response passes through a 32 KiB buffer; the usage taps keep a few
//     KiB; the payload capture keeps at most log.payload_max_bytes.
package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/claudeflare/claudeflare/config"
	"github.com/claudeflare/claudeflare/internal/apierr"
	"github.com/claudeflare/claudeflare/oauth"
	"github.com/claudeflare/claudeflare/store"
	"github.com/claudeflare/claudeflare/upstream"
	"github.com/claudeflare/claudeflare/vault"
)

// DefaultPollInterval is how often the accounts are re-read so that CLI
// changes (add, pause, resume, remove, new tokens) take effect without a
// signal.
const DefaultPollInterval = 2 * time.Second

// Options configure a Server.
type Options struct {
	Config  *config.Config
	Vault   *vault.Vault
	VaultDB *store.DB // accounts and their rate-limit state
	LogDB   *store.DB // the request log; nil = none (every record counts as failed)
	Logger  *slog.Logger
	// Now is the clock (nil = time.Now).
	Now func() time.Time
	// HTTPClient forwards to the upstream and refreshes tokens; nil = a
	// transport of the server's own, tuned for streaming.
	HTTPClient *http.Client
	// Sleep waits between two tries on the same account (nil = a real
	// timer that stops when ctx ends). Tests inject one.
	Sleep func(ctx context.Context, d time.Duration) error
	// PollInterval is how often accounts are re-read (0 = 2s).
	PollInterval time.Duration
	// Observer is told about requests, failovers and refreshes (metrics);
	// nil = nothing. See also Accounts and RecorderStats.
	Observer Observer
	// Version names claudeflare's version in the User-Agent of the
	// token refreshes ("" = none).
	Version string
	// ClientName names the client of a request for the log's client
	// column (e.g. the client key the access guard established); nil =
	// the User-Agent, cut at 128 bytes.
	ClientName func(r *http.Request) string
	// Relay reports whether a request's client key is a relay key: it
	// goes upstream with the client's own credentials, never an
	// account's (relay.go); nil = none is.
	Relay func(r *http.Request) bool
	// RelayKeys reports whether any relay key exists: /health is then
	// degraded, not down, without a usable account; nil = none does.
	RelayKeys func() bool
	// ClientModels is the role and model allowlist of a request's client
	// key, for [models.allow] and the key's own list (models.go); nil =
	// no key lists, and role lists do not apply.
	ClientModels func(r *http.Request) (role string, models []string)
	// Middleware wraps the proxy's handler (client auth, /metrics, the
	// admin API); nil = none. Serve and Handler use the wrapped handler.
	Middleware func(http.Handler) http.Handler
}

// Server is the proxy. Create it with New, then Serve.
type Server struct {
	cfg      *config.Config
	log      *slog.Logger
	now      func() time.Time
	sleep    func(ctx context.Context, d time.Duration) error
	upstream *url.URL
	client   *http.Client
	vaultDB  *store.DB
	poll     time.Duration
	obs      Observer
	clientOf func(r *http.Request) string
	relayOf  func(r *http.Request) bool // Options.Relay (relay.go)
	relayKey func() bool                // Options.RelayKeys (health.go)

	pool    *pool
	tokens  *tokens
	rec     *recorder
	ids     apierr.IDs
	bodies  bodyBudget
	handler http.Handler
	healthw healthWatch // what /health remembers (health.go)
	owned   ownedTable  // message batch and file ids -> account (owned.go)
	costs   costs       // each row's cost_usd (cost.go)

	grace atomic.Int64 // server.shutdown_grace, a time.Duration

	reloadMu sync.Mutex // one reload at a time
	bg       sync.WaitGroup
	stopBg   context.CancelFunc
	started  atomic.Bool

	clouds cloudClients // the cloud accounts' clients (cloud.go)
	models modelsState  // aliases, allow lists, GET /v1/models (models.go)
}

// New builds a Server and loads the accounts. Background work (the
// recorder, the account poll, rate-state saves) starts with Serve, or with
// Start for callers that mount Handler themselves.
func New(opts Options) (*Server, error) {
	if opts.Config == nil || opts.Vault == nil || opts.VaultDB == nil {
		return nil, errors.New("create proxy: config, vault and vault database are required")
	}
	cfg := opts.Config
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	sleep := opts.Sleep
	if sleep == nil {
		sleep = sleepCtx
	}
	up, err := url.Parse(strings.TrimRight(cfg.UpstreamURL, "/"))
	if err != nil || up.Scheme == "" || up.Host == "" {
		return nil, fmt.Errorf("create proxy: invalid upstream url %q", cfg.UpstreamURL)
	}
	client := opts.HTTPClient
	if client == nil {
		client = &http.Client{Transport: upstream.NewTransport(cfg, nil)}
	}
	// Redirects are the client's business, never followed here.
	fwd := *client
	fwd.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	fwd.Timeout = 0

	poll := opts.PollInterval
	if poll <= 0 {
		poll = DefaultPollInterval
	}
	if opts.ClientName == nil {
		opts.ClientName = userAgent
	}
	obs := opts.Observer
	if obs == nil {
		obs = nopObserver{}
	}
	s := &Server{
		cfg: cfg, log: log, now: now, sleep: sleep, upstream: up, client: &fwd,
		vaultDB: opts.VaultDB, poll: poll, obs: obs, clientOf: opts.ClientName, relayOf: opts.Relay, relayKey: opts.RelayKeys,
		pool:   newPool(cfg, LimitPolicy{}),
		bodies: bodyBudget{limit: cfg.Server.MaxInflightBodyBytes},
	}
	s.pool.events.log = log
	s.models.scope = opts.ClientModels
	s.costs.log, s.costs.warned = log, map[string]bool{}
	s.costs.table.Store(cfg.Pricing.Table())
	s.tokens = &tokens{
		vault: opts.Vault,
		oauth: &oauth.Client{
			TokenURL: cfg.OAuthTokenURL, ClientID: cfg.ClientID, APIBase: cfg.UpstreamURL,
			HTTP: client, Now: now, UserAgent: oauth.UserAgent(opts.Version),
		},
		now:         now,
		log:         log,
		pool:        s.pool,
		obs:         obs,
		cache:       map[int64]*atomic.Pointer[cred]{},
		markedLogin: map[int64]bool{},
	}
	s.SetLive(cfg)
	s.rec = newRecorder(opts.LogDB, opts.Vault, log, now, recorderOptions{
		Payloads:      cfg.Log.Payloads,
		MaxBytes:      cfg.Log.PayloadMaxBytes,
		BodyPaths:     cfg.Log.BodyPaths,
		Redact:        cfg.Redactors(),
		QueueSize:     cfg.Log.QueueSize,
		BatchSize:     cfg.Log.BatchSize,
		FlushInterval: cfg.Log.FlushInterval.Std(),
		QueueBytes:    cfg.Log.QueueBytes,
	})
	if err := s.Reload(context.Background()); err != nil {
		return nil, fmt.Errorf("create proxy: %w", err)
	}
	s.handler = s.routes()
	if opts.Middleware != nil {
		s.handler = opts.Middleware(s.handler)
	}
	return s, nil
}

// Handler is the proxy's HTTP handler.
func (s *Server) Handler() http.Handler { return s.handler }

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/v1/", s.forward)
	mux.HandleFunc("GET /v1/models", s.listModels)
	mux.HandleFunc("GET /health", s.health)
	mux.HandleFunc("/", s.root)
	// A place for /metrics once the metrics issue lands.
	return s.canonical(mux)
}

func (s *Server) root(w http.ResponseWriter, r *http.Request) {
	w.Header().Set(apierr.RequestIDHeader, s.ids.Next(s.now()))
	if r.URL.Path != "/" {
		apierr.Write(w, apierr.Reply{Status: http.StatusNotFound, Type: apierr.NotFound, Message: "Not found: claudeflare forwards /v1/*", Retry: apierr.RetryNo})
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		apierr.Write(w, apierr.Reply{Status: http.StatusMethodNotAllowed, Type: apierr.InvalidRequest, Message: "Method not allowed", Retry: apierr.RetryNo})
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodGet {
		w.Write([]byte("claudeflare\n"))
	}
}

// SetLive applies the settings that a reload changes while requests are
// served (config.ReloadLive among the proxy's): tokens.refresh_margin,
// ratelimit.* and server.shutdown_grace. The other settings keep the
// values New was given until a restart.
func (s *Server) SetLive(cfg *config.Config) {
	s.tokens.margin.Store(int64(cfg.Tokens.RefreshMargin.Std()))
	s.grace.Store(int64(cfg.Server.ShutdownGrace.Std()))
	s.costs.table.Store(cfg.Pricing.Table())
	s.models.policy.Store(newModelPolicy(cfg.Models))
	policy := newLimitPolicy(cfg.RateLimit)
	s.pool.mu.Lock()
	s.pool.policy = policy
	s.pool.mu.Unlock()
}

// Reload re-reads the accounts (called on SIGHUP and by the poll).
// Accounts keep their in-memory rate-limit state; new ones start from the
// state saved in the database, so a quarantine survives a restart.
func (s *Server) Reload(ctx context.Context) error {
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	gen := s.pool.readGen()
	rows, err := store.ListAccounts(ctx, s.vaultDB)
	if err != nil {
		return fmt.Errorf("reload accounts: %w", err)
	}
	changed, added, removed := s.pool.reload(rows, gen)
	for _, id := range changed {
		s.tokens.forget(id)
	}
	for _, r := range rows {
		if r.Status == store.StatusOK {
			s.tokens.loggedIn(r.ID)
		}
	}
	if s.started.Load() && (len(added) > 0 || len(removed) > 0) {
		s.log.Info("accounts changed", "added", added, "removed", removed, "accounts", len(rows))
	}
	return nil
}

// Start launches the background goroutines: the recorder, the account
// poll, the rate-state saver and the re-check of far blocks. Serve calls it; Stop ends them.
func (s *Server) Start() {
	if !s.started.CompareAndSwap(false, true) {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.stopBg = cancel
	s.bg.Add(5)
	go func() { defer s.bg.Done(); s.rec.run() }()
	go func() { defer s.bg.Done(); s.pool.runSaver(ctx, s.vaultDB, s.log) }()
	go func() { defer s.bg.Done(); s.runRecheck(ctx) }() // recheck.go
	go func() { defer s.bg.Done(); s.runUsage(ctx) }()   // usage.go
	go func() {
		defer s.bg.Done()
		t := time.NewTicker(s.poll)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				err := s.Reload(ctx)
				if err != nil && ctx.Err() == nil {
					s.log.Warn("poll accounts", "err", err)
				}
				if ctx.Err() == nil {
					s.healthw.polled(err, s.now())
					s.healthw.observe(s.rec, s.now())
				}
			}
		}
	}()
}

// Stop flushes the request log and the rate-limit state and ends the
// background goroutines, waiting at most until ctx ends.
func (s *Server) Stop(ctx context.Context) {
	if !s.started.Load() {
		return
	}
	s.rec.close(ctx)
	s.stopBg()
	s.pool.events.wait(ctx) // account events published so far reach their subscribers
	done := make(chan struct{})
	go func() { s.bg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
	}
}

// Serve answers on ln until ctx is cancelled, then shuts down gracefully:
// no new connections, in-flight requests (streams included) get up to
// server.shutdown_grace to finish, then the rest are cut; the request log
// is flushed last.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	s.Start()
	hs := &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: s.cfg.Server.ReadHeaderTimeout.Std(),
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
		// WriteTimeout stays 0: streams last as long as they last.
	}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	var serveErr error
	select {
	case serveErr = <-errc:
	case <-ctx.Done():
	}
	grace := time.Duration(s.grace.Load())
	sctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	if err := hs.Shutdown(sctx); err != nil {
		s.log.Warn("shutdown grace over: closing remaining connections", "grace", grace.String())
		hs.Close()
	}
	fctx, fcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer fcancel()
	s.Stop(fctx)
	if serveErr != nil && !errors.Is(serveErr, http.ErrServerClosed) {
		return fmt.Errorf("serve: %w", serveErr)
	}
	return nil
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
