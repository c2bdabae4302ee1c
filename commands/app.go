// Package commands is claudeflare's command line: the cli.App, one file per
// command group, flag/env/config wiring, output and the exit-code table. It
// is the only package that imports urfave/cli.
package commands

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/urfave/cli/v2"
	"golang.org/x/term"

	"github.com/claudeflare/claudeflare/config"
)

// Exit codes.
const (
	ExitOK      = 0
	ExitFailure = 1
	ExitUsage   = 2
)

// Build information, set with -ldflags "-X ...".
var (
	Version = ""
	Commit  = ""
	Date    = ""
)

// usageError is a mistake on the command line: exit 2.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return usageError{fmt.Sprintf(format, args...)} }

// hintError carries a line telling the user what to do next.
type hintError struct {
	err  error
	hint string
}

func (e hintError) Error() string { return e.err.Error() }
func (e hintError) Unwrap() error { return e.err }

func withHint(err error, hint string) error { return hintError{err, hint} }

// exitCode maps an error to the exit-code table; in one place.
func exitCode(err error) int {
	var ue usageError
	var ce *config.Error
	switch {
	case err == nil:
		return ExitOK
	case errors.As(err, &ue), errors.As(err, &ce):
		return ExitUsage
	}
	return ExitFailure
}

// Run runs the command line and returns the exit code.
func Run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	app := NewApp(stdin, stdout, stderr)
	var err error
	if name := commandName(app, args); name != "" && findCommand(app.Commands, name) == nil && name != "help" && name != "h" {
		err = usagef("unknown command %q (see claudeflare --help)", name)
	} else {
		err = app.RunContext(context.Background(), reorderArgs(app, hoistGlobalFlags(app, args)))
	}
	if err != nil {
		printError(errorOut(app, stderr), err)
	}
	return exitCode(err)
}

// hoistGlobalFlags moves global flags written after the command
// (`daemon --data-dir X`, `accounts list --data-dir X`) in front of it,
// where urfave/cli looks for them. A flag the command itself defines
// stays its own; arguments after "--" are left alone.
func hoistGlobalFlags(app *cli.App, args []string) []string {
	if len(args) < 2 {
		return args
	}
	i := skipFlags(app.Flags, args, 1)
	if i >= len(args) {
		return args
	}
	cmd := findCommand(app.Commands, args[i])
	if cmd == nil {
		return args
	}
	at := i // where hoisted flags go: right before the command
	var global, rest []string
	onPath := true // every argument so far names a subcommand (accounts list)
	for j := i + 1; j < len(args); j++ {
		a := args[j]
		if a == "--" {
			rest = append(rest, args[j:]...)
			break
		}
		if sub := findCommand(cmd.Subcommands, a); sub != nil && onPath {
			cmd = sub
			rest = append(rest, a)
			continue
		}
		name, _, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		isFlag := strings.HasPrefix(a, "-") && a != "-"
		switch {
		case !isFlag:
			onPath = false
			rest = append(rest, a)
		case flagDefined(cmd.Flags, name):
			onPath = false
			rest = append(rest, a)
			if !hasValue && takesValue(cmd.Flags, name) && j+1 < len(args) {
				rest = append(rest, args[j+1])
				j++
			}
		case flagDefined(app.Flags, name):
			global = append(global, a)
			if !hasValue && takesValue(app.Flags, name) && j+1 < len(args) {
				global = append(global, args[j+1])
				j++
			}
		default:
			onPath = false
			rest = append(rest, a) // unknown: urfave/cli says so
		}
	}
	if len(global) == 0 {
		return args
	}
	out := append([]string{}, args[:at]...)
	out = append(out, global...)
	out = append(out, args[at])
	return append(out, rest...)
}

// flagDefined reports whether name is one of flags' names.
func flagDefined(flags []cli.Flag, name string) bool {
	for _, f := range flags {
		for _, n := range f.Names() {
			if n == name {
				return true
			}
		}
	}
	return false
}

// printError writes err as one line starting "claudeflare: ", plus a hint.
func printError(w io.Writer, err error) {
	msg := strings.ReplaceAll(err.Error(), "\n", " ")
	var hint string
	var he hintError
	// Domain errors may carry their own advice (a data dir of another
	// user names the user to run as).
	var hinter interface{ Hint() string }
	if errors.As(err, &he) && he.hint != "" {
		hint = he.hint
	} else if errors.As(err, &hinter) && hinter.Hint() != "" {
		hint = strings.ReplaceAll(hinter.Hint(), "\n", " ")
	}
	if lw, ok := w.(*logLines); ok { // the daemon with JSON logs
		lw.logError(msg, hint)
		return
	}
	fmt.Fprintf(w, "claudeflare: %s\n", msg)
	if hint != "" {
		fmt.Fprintf(w, "hint: %s\n", hint)
	}
}

// env is what every command shares: streams, the loaded config, a logger.
type env struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	getenv         func(string) string
	cfgSource      config.Source
	cfg            *config.Config
	log            *slog.Logger
	level          *slog.LevelVar // the logger's level, changed by a reload
	secrets        *masterSecrets // the master key variables, read once (open.go)
	audit          auditNotes     // what the audit log told this command (audit.go)
	quiet          bool           // --quiet: no success messages (output.go, say)
}

// config loads the configuration once; extra are command flags that are
// config keys (daemon --host), set only when the user gave them.
func (e *env) config(extra map[string]string) (*config.Config, error) {
	if e.cfg != nil {
		return e.cfg, nil
	}
	src := e.cfgSource
	flags := map[string]string{}
	for k, v := range src.Flags {
		flags[k] = v
	}
	for k, v := range extra {
		flags[k] = v
	}
	src.Flags = flags
	cfg, err := config.Load(src)
	if err != nil {
		return nil, err
	}
	e.cfg = cfg
	e.level = new(slog.LevelVar)
	e.level.Set(cfg.SlogLevel())
	e.log = e.commandLogger(cfg, e.level)
	return cfg, nil
}

// reloadConfig reads the configuration again from the same sources (the
// daemon's SIGHUP); the running one stays in e.cfg.
func (e *env) reloadConfig(extra map[string]string) (*config.Config, error) {
	running := e.cfg
	e.cfg = nil
	defer func() { e.cfg = running }()
	level, log := e.level, e.log
	cfg, err := e.config(extra)
	e.level, e.log = level, log
	return cfg, err
}

// newLogger logs to w: text on a terminal, JSON otherwise (LOG_FORMAT).
func newLogger(w io.Writer, cfg *config.Config, level slog.Leveler) *slog.Logger {
	opts := &slog.HandlerOptions{Level: level}
	if cfg.JSONLogs(isTerminal(w)) {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

func getEnv(c *cli.Context) *env { return c.App.Metadata["env"].(*env) }

// NewApp builds the cli.App reading stdin and writing stdout and stderr.
func NewApp(stdin io.Reader, stdout, stderr io.Writer) *cli.App {
	e := &env{stdin: stdin, stdout: stdout, stderr: stderr, getenv: os.Getenv}
	app := &cli.App{
		Name:    "claudeflare",
		Usage:   "share several Claude accounts behind one local endpoint",
		Version: versionString(),
		Description: "claudeflare forwards Anthropic API requests to one of several Claude accounts,\n" +
			"keeps their OAuth tokens fresh, moves to another account when one is rate\n" +
			"limited, and logs every request. Tokens are stored encrypted with age.",
		Reader:                 stdin,
		Writer:                 stdout,
		ErrWriter:              stderr,
		EnableBashCompletion:   true,
		UseShortOptionHandling: false,
		Metadata:               map[string]any{"env": e},
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "config", Usage: "config `FILE` (default $CLAUDEFLARE_CONFIG_PATH, then $XDG_CONFIG_HOME/claudeflare/claudeflare.toml)"},
			&cli.StringFlag{Name: "data-dir", Usage: "data `DIR` (default $CLAUDEFLARE_DATA_DIR, config data_dir, then $XDG_DATA_HOME/claudeflare)"},
			&cli.StringFlag{Name: "identity", Usage: "age master identity `FILE`; wins over every other master key source (default $CLAUDEFLARE_ENCRYPTION_KEY, $CLAUDEFLARE_IDENTITY_FILE, $CLAUDEFLARE_PASSPHRASE, the systemd credential, then <data dir>/identity.txt)"},
			&cli.StringFlag{Name: "log-level", Usage: "`LEVEL`: debug, info, warn or error (default $CLAUDEFLARE_LOG_LEVEL, then info)"},
			&cli.BoolFlag{Name: "quiet", Usage: "print no success messages, only warnings and errors (as away from a terminal)"},
			&cli.StringFlag{Name: "log-format", Usage: "`FORMAT`: auto, text or json (default $CLAUDEFLARE_LOG_FORMAT, then auto)"},
		},
		Before: func(c *cli.Context) error {
			flags := map[string]string{}
			for flag, key := range map[string]string{"data-dir": "data_dir", "identity": "identity_file", "log-level": "log_level", "log-format": "log_format"} {
				if c.IsSet(flag) {
					flags[key] = c.String(flag)
				}
			}
			// Command flags that are config keys (daemon --host/--port) are
			// applied by the command itself through reloadConfig.
			e.quiet = c.Bool("quiet")
			e.cfgSource = config.Source{Path: c.String("config"), Getenv: e.getenv, Flags: flags,
				Legacy: readsLegacyEnv(c.Args().First())}
			return nil
		},
		OnUsageError: onUsageError,
		ExitErrHandler: func(*cli.Context, error) {
			// Run maps errors to exit codes; never os.Exit from inside.
		},
		Commands: []*cli.Command{
			initCommand(),
			keyCommand(),
			accountsCommand(),
			daemonCommand(),
			apikeyCommand(),
			auditCommand(),
			requestsCommand(),
			payloadCommand(),
			cleanupCommand(),
			statsCommand(),
			statusCommand(),
			statuslineCommand(),
			simulateCommand(),
			doctorCommand(),
			backupCommand(),
			restoreCommand(),
			completionCommand(),
			completeCommand(),
			configCommand(),
			versionCommand(),
			docsCommand(),
		},
	}
	setUsageErrors(app.Commands)
	return app
}

// readsLegacyEnv says whether a command reads the predecessor's
// unprefixed variables (PORT, HOST, LB_STRATEGY, ...): the daemon, and
// `config`, which checks and shows what the daemon would run with. The
// others ignore them, so a stray PORT=abc breaks no `claudeflare stats`.
func readsLegacyEnv(command string) bool {
	return command == "daemon" || command == "config"
}

func onUsageError(c *cli.Context, err error, isSub bool) error {
	return usageError{err.Error()}
}

func setUsageErrors(cmds []*cli.Command) {
	for _, c := range cmds {
		c.OnUsageError = onUsageError
		setUsageErrors(c.Subcommands)
	}
}

func versionString() string {
	v, commit, date := buildInfo()
	if v == "" || v == "(devel)" {
		v = "dev"
	}
	out := v
	if commit != "" {
		out += " (commit " + shortCommit(commit)
		if date != "" {
			out += ", built " + date
		}
		out += ")"
	}
	return out
}

func shortCommit(c string) string {
	if len(c) > 12 {
		return c[:12]
	}
	return c
}

// isTerminal reports whether f is a terminal.
func isTerminal(w any) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}
