// Package daemon is the daemon's one owner. New builds every part of it
// from the config and the opened stores: the access guard in front of the
// proxy, the proxy (with its request recorder), the upstream transport,
// metrics at GET /metrics, the retention sweeper. Start listens (TLS with
// server.tls_cert and server.tls_key), serves and tells systemd it is
// ready; Reload applies a new config (SIGHUP); Shutdown drains and stops
// everything in order.
//
// The command line (commands/daemon.go) parses flags, loads the config,
// opens the stores, takes the data-dir lock and handles signals; tests
// build the same daemon through New.
//
//	d, err := daemon.New(ctx, daemon.Options{Config: cfg, Vault: v, LogDB: logDB, AuditKey: key, Logger: log})
//	err = d.Start(ctx)                  // listening, READY=1
//	d.ReloadFrom(ctx, loadConfig)       // on SIGHUP
//	err = d.Shutdown(context.Background()) // on SIGTERM: STOPPING=1, drain, flush
package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/claudeflare/claudeflare/access"
	"github.com/claudeflare/claudeflare/audit"
	"github.com/claudeflare/claudeflare/config"
	"github.com/claudeflare/claudeflare/metrics"
	"github.com/claudeflare/claudeflare/proxy"
	"github.com/claudeflare/claudeflare/retention"
	"github.com/claudeflare/claudeflare/store"
	"github.com/claudeflare/claudeflare/upstream"
	"github.com/claudeflare/claudeflare/vault"
)

// Options are what New builds the daemon from.
type Options struct {
	Config *config.Config
	Vault  *vault.Vault // opened with the master key
	// VaultDB is the vault's database (nil = Vault.DB()).
	VaultDB *store.DB
	// LogDB is the request log; nil serves without one (every record
	// counts as failed, /api/requests answers 503).
	LogDB *store.DB
	// AuditKey keys the audit rows (audit.Prepare's Key).
	AuditKey []byte
	Logger   *slog.Logger
	// Level is the logger's level, set by Reload from log_level and
	// debug; nil = the level is not changed by a reload.
	Level *slog.LevelVar
	// Now is the clock of the guard, the proxy and the sweeper (nil =
	// time.Now).
	Now func() time.Time
	// Transport reaches the upstream and the token endpoint (nil =
	// upstream.Transport(Config)).
	Transport http.RoundTripper
	// PollInterval is how often the guard re-reads the client keys and
	// the proxy the accounts (0 = their defaults).
	PollInterval time.Duration
	// Build labels the metrics.
	Build metrics.BuildInfo
	// Version is logged when listening ("" = Build.Version).
	Version string
	// NotifySocket is systemd's $NOTIFY_SOCKET ("" = no notifications).
	NotifySocket string
	// Watchdog is systemd's watchdog timeout (WatchdogInterval; 0 =
	// none): once ready, the daemon sends WATCHDOG=1 every half of it.
	Watchdog time.Duration
	// Stderr gets a "claudeflare: listening on URL" line besides the
	// log's (nil = none; the command line passes none, so that a JSON log
	// stays all JSON).
	Stderr io.Writer
}

// ErrNoClientKeys is matched (errors.Is) by New's refusal to listen on a
// non-loopback address while no client API key exists.
var ErrNoClientKeys = errors.New("no client API keys")

type noKeysError struct{ host string }

func (e noKeysError) Error() string {
	return fmt.Sprintf("refusing to listen on non-loopback address %s without client API keys", e.host)
}
func (e noKeysError) Is(target error) bool { return target == ErrNoClientKeys }

// Daemon is the running proxy with everything around it.
type Daemon struct {
	cfg     *config.Config // as started: what a restart setting keeps
	log     *slog.Logger
	level   *slog.LevelVar
	notify  string
	wdog    time.Duration
	stderr  io.Writer
	version string
	logDB   *store.DB

	guard   *access.Guard
	proxy   *proxy.Server
	metrics *metrics.Metrics
	sweeper *retention.Sweeper
	alerts  *alertsPart // nil without [[alerts.webhook]]

	reloadMu sync.Mutex // one reload at a time

	addr        net.Addr
	scheme      string
	stopServing context.CancelFunc
	stopSweep   context.CancelFunc
	sweepDone   chan struct{}
	stopWdog    context.CancelFunc
	wdogDone    chan struct{}
	done        chan struct{} // closed when serving has ended
	serveErr    error
}

// New builds the daemon: nothing listens or runs until Start.
func New(ctx context.Context, opts Options) (*Daemon, error) {
	cfg := opts.Config
	if cfg == nil || opts.Vault == nil {
		return nil, errors.New("create daemon: config and vault are required")
	}
	vdb := opts.VaultDB
	if vdb == nil {
		vdb = opts.Vault.DB()
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	if err := CheckAddress(ctx, cfg, vdb); err != nil {
		return nil, err
	}
	transport := opts.Transport
	if transport == nil {
		tr, err := upstream.Transport(cfg)
		if err != nil {
			return nil, err
		}
		transport = tr
	}
	d := &Daemon{
		cfg: cfg, log: log, level: opts.Level, notify: opts.NotifySocket, wdog: opts.Watchdog, stderr: opts.Stderr,
		version: opts.Version, logDB: opts.LogDB, done: make(chan struct{}),
	}
	if d.version == "" {
		d.version = opts.Build.Version
	}
	tools, err := accountTools(cfg, opts.Vault, transport, opts.Build.Version)
	if err != nil {
		return nil, err
	}
	d.guard, err = access.New(ctx, access.Options{
		Config: cfg, VaultDB: vdb, AuditKey: opts.AuditKey, LogDB: opts.LogDB, Logger: log,
		Now: opts.Now, PollInterval: opts.PollInterval, Accounts: tools,
		// /api/status shows the proxy's live sessions (d.proxy is set below,
		// before anything is served).
		Sessions: func() map[string]int { return d.proxy.SessionsByAccount() },
	})
	if err != nil {
		return nil, err
	}
	d.metrics = metrics.New(metrics.Options{Build: opts.Build})
	d.proxy, err = proxy.New(proxy.Options{
		Config: cfg, Vault: opts.Vault, VaultDB: vdb, LogDB: opts.LogDB, Logger: log, Now: opts.Now,
		HTTPClient:   &http.Client{Transport: transport},
		PollInterval: opts.PollInterval,
		Version:      opts.Build.Version,
		Observer:     d.metrics,
		ClientName:   clientName,
		Relay:        clientRelay,
		RelayKeys:    d.guard.RelayKeys,
		ClientModels: clientModels,
		Middleware:   d.middleware,
	})
	if err != nil {
		return nil, err
	}
	watchProxy(d.metrics, d.proxy)
	// Client key budgets count what each finished request used.
	d.proxy.OnRecord(d.guard.RecordUsage)
	watchAccountEvents(d.proxy, d.metrics, audit.NeedsLogin(vdb, opts.AuditKey, log))
	d.alerts = newAlerts(cfg, d.proxy, d.guard, log, now, opts.Build.Version)
	d.sweeper = retention.NewSweeper(opts.LogDB, cfg.Retention, log, now)
	return d, nil
}

// middleware composes access around the proxy: the guard decides, then
// /metrics or the proxy's own routes answer.
func (d *Daemon) middleware(next http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", d.metrics.Handler())
	mux.Handle("/", next)
	return d.guard.Wrap(mux)
}

// Proxy is the daemon's proxy (its accounts, recorder state).
func (d *Daemon) Proxy() *proxy.Server { return d.proxy }

// Handler is what the daemon serves: the guard, /metrics, the proxy.
func (d *Daemon) Handler() http.Handler { return d.proxy.Handler() }

// Addr is the address the daemon listens on, once started.
func (d *Daemon) Addr() net.Addr { return d.addr }

// URL is the base URL clients use ("https://127.0.0.1:8080"), once
// started.
func (d *Daemon) URL() string { return d.scheme + "://" + d.addr.String() }

// Start listens on host:port (TLS when configured), starts the guard's
// poll, the proxy (recorder, account poll) and the retention sweeper,
// serves, and then says so: a log line, the Stderr line and READY=1.
func (d *Daemon) Start(ctx context.Context) error {
	ln, err := net.Listen("tcp", d.cfg.Addr())
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	ln, scheme, err := access.Listener(ln, d.cfg)
	if err != nil {
		ln.Close()
		return err
	}
	d.addr, d.scheme = ln.Addr(), scheme
	d.guard.Start()
	d.sweepDone = make(chan struct{})
	if d.logDB != nil {
		sctx, cancel := context.WithCancel(context.Background())
		d.stopSweep = cancel
		go func() { defer close(d.sweepDone); d.sweeper.Run(sctx) }()
	} else {
		close(d.sweepDone)
	}
	sctx, cancel := context.WithCancel(context.Background())
	d.stopServing = cancel
	go func() {
		defer close(d.done)
		d.serveErr = d.proxy.Serve(sctx, ln)
	}()
	// The URL is in the message: the one line people and scripts look
	// for, in text and JSON logs alike.
	d.log.Info("listening on "+d.URL(), "addr", d.addr.String(), "scheme", scheme, "data_dir", d.cfg.DataDir, "version", d.version)
	if d.stderr != nil {
		fmt.Fprintf(d.stderr, "claudeflare: listening on %s\n", d.URL())
	}
	d.alerts.start()
	d.sdNotify("READY=1\nSTATUS=listening on " + d.addr.String())
	if d.wdog > 0 && d.notify != "" {
		wctx, cancel := context.WithCancel(context.Background())
		d.stopWdog, d.wdogDone = cancel, make(chan struct{})
		go func() { defer close(d.wdogDone); d.runWatchdog(wctx, d.wdog) }()
	}
	return nil
}

// Done is closed when the daemon stopped serving: after Shutdown, or
// because serving failed (Shutdown then returns the error).
func (d *Daemon) Done() <-chan struct{} { return d.done }

// Shutdown stops the daemon: STOPPING=1; no new connections; in-flight
// requests get server.shutdown_grace; the request log and rate-limit
// state are flushed; then the guard (last-use and audit writes) and the
// sweeper stop. It returns serving's error, if serving failed, and the
// guard's, if its last writes (key use, audit rows) failed.
func (d *Daemon) Shutdown(ctx context.Context) error {
	if d.stopWdog != nil {
		// From here TimeoutStopSec= bounds the stop; no ping follows
		// STOPPING=1.
		d.stopWdog()
		<-d.wdogDone
	}
	d.sdNotify("STOPPING=1")
	if d.stopServing == nil {
		d.alerts.shutdown(ctx)
		return nil // never started
	}
	d.stopServing()
	select {
	case <-d.done:
	case <-ctx.Done():
		return ctx.Err()
	}
	gctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	flushErr := d.guard.Stop(gctx)
	if flushErr != nil {
		flushErr = fmt.Errorf("write the access guard's last records: %w", flushErr)
	}
	if d.stopSweep != nil {
		d.stopSweep()
	}
	select {
	case <-d.sweepDone:
	case <-ctx.Done():
	}
	d.alerts.shutdown(ctx)
	serveErr := d.serveErr
	if errors.Is(serveErr, context.Canceled) {
		serveErr = nil
	}
	return errors.Join(serveErr, flushErr)
}

// ReloadFrom is what SIGHUP does: RELOADING=1, load the config, Reload,
// READY=1. A config that does not load or apply is logged and the
// running one kept.
func (d *Daemon) ReloadFrom(ctx context.Context, load func() (*config.Config, error)) {
	d.sdNotify("RELOADING=1")
	cfg, err := load()
	if err == nil {
		err = d.Reload(ctx, cfg)
	}
	if err != nil {
		d.log.Error("reload failed; keeping the running configuration", "err", err)
	} else {
		d.log.Info("reloaded")
	}
	d.sdNotify("READY=1")
}

// Reload applies cfg to the running daemon, as the settings table says
// (config.Setting.Reload): every "live" setting takes effect now (access
// control, limits, CORS, metrics.public, retention, the log level,
// tokens.refresh_margin, ratelimit.*, server.shutdown_grace); every
// "restart" setting that differs from the running value is logged by
// key and keeps its running value. The accounts and client keys are
// re-read too.
func (d *Daemon) Reload(ctx context.Context, cfg *config.Config) error {
	d.reloadMu.Lock()
	defer d.reloadMu.Unlock()
	if err := d.guard.ConfigReloaded(ctx, cfg); err != nil {
		return err
	}
	d.sweeper.SetConfig(cfg.Retention)
	if d.level != nil {
		d.level.Set(cfg.SlogLevel())
	}
	d.proxy.SetLive(cfg)
	if restart := config.RestartChanges(d.cfg, cfg); len(restart) > 0 {
		d.log.Warn("config changes that take effect on restart", "keys", restart)
	}
	return d.proxy.Reload(ctx)
}

// CheckAddress refuses a non-loopback listen address while no client API
// key exists (ErrNoClientKeys). New checks it; a caller may check it
// earlier, before it changes anything.
func CheckAddress(ctx context.Context, cfg *config.Config, vaultDB *store.DB) error {
	if isLoopback(cfg.Host) {
		return nil
	}
	n, err := store.CountClientKeys(ctx, vaultDB)
	if err != nil {
		return err
	}
	if n == 0 {
		return noKeysError{cfg.Host}
	}
	return nil
}

// clientName fills the request log's client column: the client key's
// name when keys exist, else the remote address.
func clientName(r *http.Request) string {
	if c, ok := access.ClientFrom(r.Context()); ok {
		if c.Key != "" {
			return c.Key
		}
		return c.Addr
	}
	return ""
}

// clientModels is the request's client key role and model allowlist
// (proxy: [models.allow] and the key's own list).
func clientModels(r *http.Request) (string, []string) {
	if c, ok := access.ClientFrom(r.Context()); ok {
		return string(c.Role), c.Models
	}
	return "", nil
}

// clientRelay reports whether the request's client key is a relay key
// (proxy/relay.go: the client's own credentials go upstream).
func clientRelay(r *http.Request) bool {
	c, ok := access.ClientFrom(r.Context())
	return ok && c.Relay
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
