package commands

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/claudeflare/claudeflare/access"
	"github.com/claudeflare/claudeflare/config"
	"github.com/claudeflare/claudeflare/internal/statefile"
	"github.com/claudeflare/claudeflare/proxy"
	"github.com/claudeflare/claudeflare/retention"
	"github.com/claudeflare/claudeflare/store"
	"github.com/claudeflare/claudeflare/upstream"
	"github.com/claudeflare/claudeflare/vault"
)

func daemonCommand() *cli.Command {
	return &cli.Command{
		Name:  "daemon",
		Usage: "run the proxy until SIGTERM or SIGINT; SIGHUP reloads config and accounts",
		Description: "The daemon listens on HOST:PORT (127.0.0.1:8080 by default) and forwards\n" +
			"/v1/* to the upstream with one account's credentials. A non-loopback address\n" +
			"is refused unless client API keys exist. SIGINT or SIGTERM drain in-flight\n" +
			"requests up to server.shutdown_grace; a second signal exits at once. Under\n" +
			"systemd (Type=notify) it reports READY=1 once listening. SIGHUP re-reads the\n" +
			"config: access control, retention and the log level change at once; other\n" +
			"settings on restart (the daemon logs which). A request log that cannot be\n" +
			"opened does not stop it: it serves, warns, and counts the records it loses.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "host", Usage: "listen `ADDRESS` (default $HOST, then 127.0.0.1)"},
			&cli.StringFlag{Name: "port", Usage: "listen `PORT` (default $PORT, then 8080; 0 picks a free port)"},
		},
		Action: runDaemon,
	}
}

// lockDataDir takes an exclusive, non-blocking lock on <dir>/daemon.lock,
// so a second daemon on the same data dir refuses to start.
func lockDataDir(dir string) (*os.File, error) {
	// Never through a symbolic link: the pid written below would
	// overwrite whatever a planted link points to.
	f, err := statefile.LockDataDir(dir)
	if errors.Is(err, statefile.ErrLocked) {
		return nil, withHint(fmt.Errorf("another claudeflare daemon is running on %s", dir), "stop it first, or give this one its own --data-dir")
	}
	if err != nil {
		return nil, stateHint(err)
	}
	f.Truncate(0)
	f.WriteString(strconv.Itoa(os.Getpid()) + "\n")
	return f, nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func runDaemon(c *cli.Context) error {
	if c.NArg() > 0 {
		return usagef("daemon takes no arguments")
	}
	e := getEnv(c)
	extra := map[string]string{}
	if c.IsSet("host") {
		extra["host"] = c.String("host")
	}
	if c.IsSet("port") {
		extra["port"] = c.String("port")
	}
	cfg, err := e.config(extra)
	if err != nil {
		return err
	}
	// The upstream transport (verification, upstream.pin_sha256 on the
	// upstream and token endpoint hosts) before anything is opened: a
	// pin that cannot apply is a config error.
	transport, err := upstream.Transport(cfg)
	if err != nil {
		return withHint(usagef("%v", err), "use https:// for upstream_url and oauth_token_url, or set no upstream.pin_sha256")
	}
	ctx, cancel := context.WithCancel(c.Context)
	defer cancel()

	// A daemon never prompts for a passphrase: set CLAUDEFLARE_PASSPHRASE.
	v, err := e.openVaultWith(ctx, cfg, vault.Options{Create: true, Logger: e.log}, false)
	if err != nil {
		return err
	}
	defer v.DB().Close()
	lock, err := lockDataDir(cfg.DataDir)
	if err != nil {
		return err
	}
	defer lock.Close()
	// The proxy matters more than its log: when the request log cannot be
	// opened (disk full, read-only, damaged), serve without it, say so, and
	// count every record as failed (/health, /metrics).
	logDB, err := e.openLog(cfg)
	if err != nil {
		e.log.Error("request log unavailable: serving without it; requests are not logged", "err", err)
		fmt.Fprintf(e.stderr, "claudeflare: warning: %v: serving without a request log\n", err)
		logDB = nil
	} else {
		defer logDB.Close()
	}

	if !isLoopback(cfg.Host) {
		n, err := store.CountClientKeys(ctx, v.DB())
		if err != nil {
			return err
		}
		if n == 0 {
			return withHint(fmt.Errorf("refusing to listen on non-loopback address %s without client API keys", cfg.Host),
				"create one with `claudeflare apikey create NAME`, or listen on 127.0.0.1")
		}
	}

	// The guard writes audit rows: it needs the audit key (and a log made
	// by an earlier release is keyed now).
	auditKey, err := e.openAudit(ctx, v)
	if err != nil {
		return err
	}
	guard, err := access.New(ctx, access.Options{Config: cfg, VaultDB: v.DB(), AuditKey: auditKey, LogDB: logDB, Logger: e.log})
	if err != nil {
		return err
	}
	m := newMetrics()
	srv, err := proxy.New(proxy.Options{
		Config: cfg, Vault: v, VaultDB: v.DB(), LogDB: logDB, Logger: e.log,
		HTTPClient: &http.Client{Transport: transport},
		Observer:   m,
		ClientName: clientName,
		Middleware: func(next http.Handler) http.Handler {
			mux := http.NewServeMux()
			mux.Handle("GET /metrics", m.Handler())
			mux.Handle("/", next)
			return guard.Wrap(mux)
		},
	})
	if err != nil {
		return err
	}
	watchProxy(m, srv)
	guard.Start()
	defer func() {
		sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer scancel()
		guard.Stop(sctx)
	}()
	sweeper := retention.NewSweeper(logDB, cfg.Retention, e.log, time.Now)
	if logDB != nil {
		go sweeper.Run(ctx)
	}

	// Catch signals before announcing readiness: a SIGHUP right after
	// READY=1 must reload, not kill.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)
	ln, err := net.Listen("tcp", cfg.Addr())
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	ln, scheme, err := access.Listener(ln, cfg)
	if err != nil {
		return err
	}
	e.log.Info("listening", "addr", ln.Addr().String(), "scheme", scheme, "data_dir", cfg.DataDir, "version", versionString())
	fmt.Fprintf(e.stderr, "claudeflare: listening on %s://%s\n", scheme, ln.Addr())
	notifySocket := e.getenv("NOTIFY_SOCKET")
	sdNotify(notifySocket, "READY=1\nSTATUS=listening on "+ln.Addr().String())

	go func() {
		stopping := false
		for s := range sigs {
			switch {
			case s == syscall.SIGHUP:
				sdNotify(notifySocket, "RELOADING=1")
				if err := reload(ctx, e, cfg, extra, srv, guard, sweeper); err != nil {
					e.log.Error("reload failed; keeping the running configuration", "err", err)
				} else {
					e.log.Info("reloaded")
				}
				sdNotify(notifySocket, "READY=1")
			case !stopping:
				stopping = true
				e.log.Info("shutting down", "signal", s.String())
				sdNotify(notifySocket, "STOPPING=1")
				cancel()
			default:
				e.log.Warn("second signal: exiting now")
				os.Exit(ExitFailure)
			}
		}
	}()
	err = srv.Serve(ctx, ln)
	if err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	e.log.Info("stopped")
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

// reload re-reads the config file and the accounts (SIGHUP). Access
// control (client keys, allow_ips, CORS, limits), retention and the log
// level change at once; listen address, TLS files, upstream and proxy
// tuning keep their running values until a restart, and a change to them
// is logged.
func reload(ctx context.Context, e *env, running *config.Config, extra map[string]string, srv *proxy.Server, guard *access.Guard, sweeper *retention.Sweeper) error {
	cfg, err := e.reloadConfig(extra)
	if err != nil {
		return err
	}
	if err := guard.ConfigReloaded(ctx, cfg); err != nil {
		return err
	}
	sweeper.SetConfig(cfg.Retention)
	e.level.Set(cfg.SlogLevel())
	if restart := restartKeys(running, cfg); len(restart) > 0 {
		e.log.Warn("config changes that take effect on restart", "keys", restart)
	}
	return srv.Reload(ctx)
}

// restartKeys lists settings that differ but are only read at start.
func restartKeys(a, b *config.Config) []string {
	var keys []string
	for key, same := range map[string]bool{
		"host/port":             a.Addr() == b.Addr(),
		"data_dir":              a.DataDir == b.DataDir,
		"server":                a.Server.TLSCert == b.Server.TLSCert && a.Server.TLSKey == b.Server.TLSKey && a.Server.MaxBodyBytes == b.Server.MaxBodyBytes,
		"upstream_url":          a.UpstreamURL == b.UpstreamURL && a.OAuthTokenURL == b.OAuthTokenURL,
		"lb_strategy/retry_*":   a.LBStrategy == b.LBStrategy && a.RetryAttempts == b.RetryAttempts && a.RetryDelayMS == b.RetryDelayMS && a.RetryBackoff == b.RetryBackoff && a.SessionDurationMS == b.SessionDurationMS,
		"log (payload capture)": a.Log.Payloads == b.Log.Payloads && a.Log.PayloadMaxBytes == b.Log.PayloadMaxBytes && strings.Join(a.Log.Redact, "\x00") == strings.Join(b.Log.Redact, "\x00") && strings.Join(a.Log.BodyPaths, "\x00") == strings.Join(b.Log.BodyPaths, "\x00"),
	} {
		if !same {
			keys = append(keys, key)
		}
	}
	sort.Strings(keys)
	return keys
}
