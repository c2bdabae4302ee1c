package commands

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"

	"github.com/urfave/cli/v2"

	"github.com/claudeflare/claudeflare/config"
	"github.com/claudeflare/claudeflare/daemon"
	"github.com/claudeflare/claudeflare/internal/statefile"
	"github.com/claudeflare/claudeflare/metrics"
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
			"systemd (Type=notify) it reports READY=1 once listening, and with WatchdogSec=\n" +
			"sends WATCHDOG=1 every half of it while its account pool (locked by every\n" +
			"request) answers. SIGHUP re-reads the\n" +
			"config: access control, client limits, retention, the log level, token\n" +
			"refresh margin, rate-limit cooldowns and shutdown grace change at once; other\n" +
			"settings on restart (the daemon logs which; claudeflare.toml(5), RELOAD).\n" +
			"A request log that cannot be opened does not stop it: it serves, warns, and\n" +
			"counts the records it loses. GET /health (no key, no account names) answers\n" +
			"200 {\"status\":\"ok\"}; 200 \"degraded\" with \"reasons\" while requests are served\n" +
			"but accounts are out or the request log is not writing; 503 \"down\" when no\n" +
			"request can be served (no usable account). With JSON logs (LOG_FORMAT=json)\n" +
			"every line it writes on stderr is a JSON object.",
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
		if wantsJSONLogs(e) {
			// No config, no logger: the error is still a JSON record.
			e.stderr = &logLines{log: slog.New(slog.NewJSONHandler(e.stderr, nil)), level: slog.LevelInfo}
		}
		return err
	}
	// The daemon logs at its level wherever stderr goes (not as a
	// one-shot command in a script does). With JSON logs every line it
	// writes is JSON: what other code prints on stderr (a note from
	// opening the vault, a warning, the error it ends with) becomes a log
	// record.
	e.log = newLogger(e.stderr, cfg, e.level)
	if cfg.JSONLogs(isTerminal(e.stderr)) {
		e.stderr = &logLines{log: e.log, level: slog.LevelInfo}
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
		e.log.Error("request log unavailable: serving without a request log; requests are not logged", "err", err)
		logDB = nil
	} else {
		defer logDB.Close()
	}
	d, err := openDaemon(ctx, e, cfg, v, logDB, transport)
	if err != nil {
		return err
	}

	// Catch signals before announcing readiness: a SIGHUP right after
	// READY=1 must reload, not kill.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)
	if err := d.Start(ctx); err != nil {
		return err
	}
	go func() {
		stopping := false
		for s := range sigs {
			switch {
			case s == syscall.SIGHUP:
				d.ReloadFrom(ctx, func() (*config.Config, error) { return e.reloadConfig(extra) })
			case !stopping:
				stopping = true
				e.log.Info("shutting down", "signal", s.String())
				cancel()
			default:
				e.log.Warn("second signal: exiting now")
				os.Exit(ExitFailure)
			}
		}
	}()
	select {
	case <-ctx.Done():
	case <-d.Done():
	}
	if err := d.Shutdown(context.Background()); err != nil {
		return err
	}
	e.log.Info("stopped")
	return nil
}

// wantsJSONLogs says whether JSON logs were asked for where that can be
// read without a config that loads: --log-format, then the variables (as
// the systemd unit sets). "auto" is not trusted here: the file that did
// not load may say text.
func wantsJSONLogs(e *env) bool {
	format := e.cfgSource.Flags["log_format"]
	for _, name := range []string{"CLAUDEFLARE_LOG_FORMAT", "LOG_FORMAT"} {
		if format == "" {
			format = e.getenv(name)
		}
	}
	return format == "json"
}

// openDaemon builds the daemon on the opened stores: it needs the audit
// key (and keys a log made by an earlier release).
func openDaemon(ctx context.Context, e *env, cfg *config.Config, v *vault.Vault, logDB *store.DB, transport http.RoundTripper) (*daemon.Daemon, error) {
	// Refused before the audit key is prepared (which may key an old log).
	if err := daemon.CheckAddress(ctx, cfg, v.DB()); err != nil {
		return nil, noKeysHint(err)
	}
	auditKey, err := e.openAudit(ctx, v)
	if err != nil {
		return nil, err
	}
	version, commit, date := buildInfo()
	d, err := daemon.New(ctx, daemon.Options{
		Config: cfg, Vault: v, LogDB: logDB, AuditKey: auditKey, Logger: e.log, Level: e.level,
		Transport:    transport,
		Build:        metrics.BuildInfo{Version: version, Commit: commit, Date: date},
		Version:      versionString(),
		NotifySocket: e.getenv("NOTIFY_SOCKET"),
		Watchdog:     daemon.WatchdogInterval(e.getenv),
	})
	return d, noKeysHint(err)
}

func noKeysHint(err error) error {
	if errors.Is(err, daemon.ErrNoClientKeys) {
		return withHint(err, "create one with `claudeflare apikey create NAME`, or listen on 127.0.0.1")
	}
	return err
}
