package commands

import (
	"fmt"
	"io"
	"net/url"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/urfave/cli/v2"

	"github.com/claudeflare/claudeflare/config"
	"github.com/claudeflare/claudeflare/upstream"
	"github.com/claudeflare/claudeflare/vault"
)

func configCommand() *cli.Command {
	return &cli.Command{
		Name:  "config",
		Usage: "check a config file, or show the effective config and where each value came from",
		Description: "Both read the config as the daemon would: flags, the environment (the\n" +
			"CLAUDEFLARE_ variables, and the daemon's unprefixed PORT, HOST, ...), the\n" +
			"file, then the defaults. Neither opens the data dir or starts anything.",
		Subcommands: []*cli.Command{
			{
				Name:      "check",
				Usage:     "validate a config (FILE, else the usual one) without starting anything",
				ArgsUsage: "[FILE]",
				Description: "Prints one line and exits 0 when the config is valid; otherwise prints\n" +
					"the error (file:line, or the variable or flag it came from) and exits 1.\n" +
					"FILE takes the place of --config.",
				Action: configCheck,
			},
			{
				Name:  "show",
				Usage: "print the effective config with each value's source; never a secret",
				Description: "One line a setting, in file order, as TOML with the source in a comment:\n" +
					"default, file PATH:LINE, env VARIABLE or flag --NAME; the output loads as\n" +
					"a config file. With --json, NDJSON: key, value, source, and env, file and\n" +
					"line or flag where they apply. Secret-like values (passphrases, keys,\n" +
					"tokens, passwords in URLs) are shown as \"[REDACTED]\"; the master key is\n" +
					"named by its source only.",
				Flags: []cli.Flag{
					&cli.BoolFlag{Name: "json", Usage: "print NDJSON, one setting a line"},
				},
				Action: configShow,
			},
		},
	}
}

// checkFailed is a config that did not pass `config check`: exit 1, the
// check's answer, not a mistake on the command line (exit 2).
type checkFailed struct{ err error }

func (e checkFailed) Error() string { return e.err.Error() }

func configCheck(c *cli.Context) error {
	if c.NArg() > 1 {
		return usagef("config check takes at most one FILE (got %d arguments)", c.NArg())
	}
	e := getEnv(c)
	if c.NArg() == 1 {
		if c.Args().First() == "" {
			return usagef("config check: FILE is empty")
		}
		e.cfgSource.Path = c.Args().First()
	}
	cfg, err := config.Load(e.cfgSource)
	if err != nil {
		return checkFailed{err}
	}
	// What else the daemon refuses at start for its settings alone: a pin
	// on a cleartext upstream.
	if _, err := upstream.Transport(cfg); err != nil {
		return checkFailed{fmt.Errorf("config: %w", err)}
	}
	if cfg.File == "" {
		_, err = fmt.Fprintln(e.stdout, "config ok: no config file; defaults and environment")
		return err
	}
	_, err = fmt.Fprintf(e.stdout, "config ok: %s\n", printable(cfg.File))
	return err
}

// flagNames are the command-line flags that set a config key.
var flagNames = map[string]string{
	"data_dir": "--data-dir", "identity_file": "--identity",
	"log_level": "--log-level", "log_format": "--log-format",
	"host": "--host", "port": "--port",
}

// shownSetting is one line of `config show --json`.
type shownSetting struct {
	Key    string `json:"key"`
	Value  any    `json:"value"`
	Source string `json:"source"`
	Env    string `json:"env,omitempty"`
	Flag   string `json:"flag,omitempty"`
	File   string `json:"file,omitempty"`
	Line   int    `json:"line,omitempty"`
}

func configShow(c *cli.Context) error {
	if c.NArg() > 0 {
		return usagef("config show takes no arguments (got %q)", c.Args().First())
	}
	e := getEnv(c)
	cfg, err := e.config(nil)
	if err != nil {
		return err
	}
	var rows []shownSetting
	for _, s := range config.Settings() {
		v, _ := cfg.Value(s.Key)
		o := cfg.Origin(s.Key)
		row := shownSetting{Key: s.Key, Value: showValue(s.Key, v, cfg), Source: o.Kind.String()}
		switch o.Kind {
		case config.FromEnv:
			row.Env = o.Env
		case config.FromFlag:
			row.Flag = flagNames[s.Key]
		case config.FromFile:
			row.File, row.Line = o.File, o.Line
		}
		rows = append(rows, row)
	}
	master := e.masterKeyOrigin(cfg)
	if c.Bool("json") {
		out := newNDJSON(e.stdout)
		for _, r := range rows {
			if err := out.write(r); err != nil {
				return err
			}
		}
		return nil
	}
	return writeShownConfig(e.stdout, cfg, rows, master)
}

// writeShownConfig writes rows as TOML, each with its source as a comment.
func writeShownConfig(w io.Writer, cfg *config.Config, rows []shownSetting, master string) error {
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	file := "none"
	if cfg.File != "" {
		file = cfg.File
	}
	fmt.Fprintf(tw, "# config file: %s\n", printable(file))
	fmt.Fprintf(tw, "# master key: %s\n", printable(master))
	// TOML puts a top-level key before the first table, wherever
	// config.Settings lists it (pricing comes after [alerts]).
	top := make([]shownSetting, 0, len(rows))
	for _, r := range rows {
		if !strings.Contains(r.Key, ".") {
			top = append(top, r)
		}
	}
	for _, r := range rows {
		if strings.Contains(r.Key, ".") {
			top = append(top, r)
		}
	}
	section := ""
	for _, r := range top {
		sec, name := "", r.Key
		if i := strings.LastIndex(r.Key, "."); i >= 0 {
			sec, name = r.Key[:i], r.Key[i+1:]
		}
		if sec != section {
			section = sec
			fmt.Fprintf(tw, "\n[%s]\n", sec)
		}
		fmt.Fprintf(tw, "%s = %s\t# %s\n", name, tomlValue(r.Value), printable(sourceText(r)))
	}
	return tw.Flush()
}

// sourceText is where a value came from, for people.
func sourceText(r shownSetting) string {
	switch r.Source {
	case "env":
		return "env " + r.Env
	case "flag":
		if r.Flag != "" {
			return "flag " + r.Flag
		}
	case "file":
		if r.Line > 0 {
			return "file " + r.File + ":" + strconv.Itoa(r.Line)
		}
		return "file " + r.File
	}
	return r.Source
}

// tomlValue writes a shown value as TOML.
func tomlValue(v any) string {
	switch v := v.(type) {
	case string:
		return strconv.Quote(v)
	case config.Duration:
		return strconv.Quote(v.String())
	case float64:
		s := strconv.FormatFloat(v, 'f', -1, 64)
		if !strings.ContainsAny(s, ".eEn") {
			s += ".0"
		}
		return s
	case []string:
		q := make([]string, len(v))
		for i, s := range v {
			q[i] = strconv.Quote(s)
		}
		return "[" + strings.Join(q, ", ") + "]"
	}
	return fmt.Sprint(v)
}

// redacted replaces a secret in `config show`.
const redacted = "[REDACTED]"

// secretKeyRe matches the last part of a key whose value is a secret by
// its name, as a setting holding one would be called.
var secretKeyRe = regexp.MustCompile(`(?i)(^|_)(pass(word|phrase)?|secret|token|private_key|api_key|credentials?)$`)

// secretValueRe matches values that are secrets whatever the key: age
// identities, Anthropic keys and tokens, bearer credentials.
var secretValueRe = regexp.MustCompile(`(?i)AGE-SECRET-KEY-|sk-ant-|bearer\s+\S`)

// showValue is v as `config show` prints it: secret-like values redacted
// (by the key's name, by the value's shape, by log.redact, and a URL's
// user and password), durations as their text.
func showValue(key string, v any, cfg *config.Config) any {
	name := key[strings.LastIndex(key, ".")+1:]
	switch v := v.(type) {
	case string:
		if v != "" && secretKeyRe.MatchString(name) {
			return redacted
		}
		return redactString(key, v, cfg)
	case []string:
		out := make([]string, len(v))
		for i, s := range v {
			out[i] = s
			if secretKeyRe.MatchString(name) {
				out[i] = redacted
			} else if key != "log.redact" { // the patterns themselves are not secrets
				out[i] = redactString(key, s, cfg)
			}
		}
		return out
	case config.Duration:
		return v.String()
	}
	return v
}

func redactString(key, s string, cfg *config.Config) string {
	if secretValueRe.MatchString(s) {
		return redacted
	}
	if key != "log.redact" {
		for _, re := range cfg.Redactors() {
			if re.MatchString(s) {
				return redacted
			}
		}
	}
	// The password, or a lone user name: that is a token as often as not
	// (https://TOKEN@host).
	if u, err := url.Parse(s); err == nil && u.User != nil {
		if _, has := u.User.Password(); has {
			u.User = url.UserPassword(u.User.Username(), "REDACTED")
		} else {
			u.User = url.User("REDACTED")
		}
		return u.String()
	}
	return s
}

// masterKeyOrigin names where the master key would come from, never the
// key: the source that wins (vault.KeySource.Resolve) and what set it.
func (e *env) masterKeyOrigin(cfg *config.Config) string {
	ks := e.keySource(cfg)
	switch {
	case ks.EncryptionKey != "":
		return "env CLAUDEFLARE_ENCRYPTION_KEY"
	case ks.Passphrase != "":
		return "env CLAUDEFLARE_PASSPHRASE"
	case ks.CredentialsDir != "":
		return "systemd credential " + filepath.Join(ks.CredentialsDir, vault.CredentialName)
	case ks.IdentityFile != "":
		o := cfg.Origin("identity_file")
		r := shownSetting{Source: o.Kind.String(), Env: o.Env, Flag: flagNames["identity_file"], File: o.File, Line: o.Line}
		return "identity file " + ks.IdentityFile + " (" + sourceText(r) + ")"
	}
	return "identity file " + filepath.Join(cfg.DataDir, vault.IdentityFileName) + " (default)"
}
