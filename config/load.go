package config

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/BurntSushi/toml"
)

// Source says where Load finds settings besides the defaults.
type Source struct {
	// Path is the --config value; "" looks at $CLAUDEFLARE_CONFIG_PATH, then
	// $XDG_CONFIG_HOME/claudeflare/claudeflare.toml.
	Path string
	// Getenv reads the environment; nil means os.Getenv.
	Getenv func(string) string
	// Flags maps config keys (dotted for sections: "host", "log.payloads",
	// "data_dir"; see Settings) to the values of the command-line flags the
	// user actually set.
	Flags map[string]string
	// Legacy also reads the unprefixed variables of the TypeScript
	// predecessor (PORT, HOST, LB_STRATEGY, ...; Setting.LegacyEnv),
	// each below its CLAUDEFLARE_ variable. The daemon (and `config show`,
	// which shows what the daemon would run with) sets it; other commands
	// do not, so that a stray PORT=abc in a shell breaks nothing.
	Legacy bool
}

// EnvConfigPath names the config file when --config is not given.
const EnvConfigPath = "CLAUDEFLARE_CONFIG_PATH"

// Load builds the configuration: defaults, then the config file, then the
// environment, then Source.Flags, each overriding the one before; then it
// resolves DataDir to an absolute path and validates everything. A missing
// default config file is fine; a missing file named by Source.Path or
// $CLAUDEFLARE_CONFIG_PATH is an error. Every configuration problem is an
// *Error. Load creates nothing.
func Load(src Source) (*Config, error) {
	l := &loader{getenv: src.Getenv}
	if l.getenv == nil {
		l.getenv = os.Getenv
	}
	path, namedBy := src.Path, "--config"
	if path == "" {
		path, namedBy = l.getenv(EnvConfigPath), EnvConfigPath
	}
	if path == "" {
		path, namedBy = l.defaultConfigPath(), ""
	}
	var data []byte
	if path != "" {
		if namedBy != "" {
			p, err := l.absPath(path, "")
			if err != nil {
				return nil, &Error{File: path, Msg: err.Error()}
			}
			path = p
		}
		var err error
		data, err = os.ReadFile(path)
		switch {
		case errors.Is(err, fs.ErrNotExist) && namedBy == "":
			path = ""
		case errors.Is(err, fs.ErrNotExist):
			return nil, &Error{File: path, Msg: "no such file (named by " + namedBy + ")"}
		case err != nil:
			return nil, &Error{File: path, Msg: "read: " + describeReadError(err)}
		}
	}
	return l.load(path, data, src)
}

func describeReadError(err error) string {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err.Error()
	}
	return err.Error()
}

type loader struct {
	getenv  func(string) string
	file    string
	text    string
	origins map[string]OriginKind
	// envs names the variable each key set from the environment came from.
	envs map[string]string
}

// defaultConfigPath is the config file used when none is named:
// $XDG_CONFIG_HOME/claudeflare/claudeflare.toml, with XDG_CONFIG_HOME
// defaulting to ~/.config; "" when neither it nor HOME is set.
func (l *loader) defaultConfigPath() string {
	if d := l.getenv("XDG_CONFIG_HOME"); filepath.IsAbs(d) {
		return filepath.Join(d, "claudeflare", "claudeflare.toml")
	}
	if h := l.getenv("HOME"); h != "" {
		return filepath.Join(h, ".config", "claudeflare", "claudeflare.toml")
	}
	return ""
}

// defaultDataDir is $XDG_DATA_HOME/claudeflare or
// ~/.local/share/claudeflare.
func (l *loader) defaultDataDir() (string, error) {
	if d := l.getenv("XDG_DATA_HOME"); filepath.IsAbs(d) {
		return filepath.Join(d, "claudeflare"), nil
	}
	if h := l.getenv("HOME"); h != "" {
		return filepath.Join(h, ".local", "share", "claudeflare"), nil
	}
	return "", errors.New("no default data directory: set CLAUDEFLARE_DATA_DIR, XDG_DATA_HOME or HOME")
}

// absPath expands a leading "~/" and makes p absolute, relative to base
// when base is not "" and to the working directory otherwise.
func (l *loader) absPath(p, base string) (string, error) {
	if p == "~" || strings.HasPrefix(p, "~/") {
		h := l.getenv("HOME")
		if h == "" {
			return "", fmt.Errorf("cannot expand %q: HOME is not set", p)
		}
		p = filepath.Join(h, p[1:])
	}
	if !filepath.IsAbs(p) && base != "" {
		p = filepath.Join(base, p)
	}
	abs, err := filepath.Abs(p)
	if err != nil {
		return "", fmt.Errorf("resolve %q: %w", p, err)
	}
	return abs, nil
}

// load applies the layers over Default() in precedence order (file, env,
// flags), resolves paths and validates. file is "" when there is no file.
func (l *loader) load(file string, data []byte, src Source) (*Config, error) {
	c := Default()
	l.origins = map[string]OriginKind{}
	l.envs = map[string]string{}
	if file != "" {
		l.file, l.text = file, string(data)
		c.File = file
		if err := l.decodeFile(&c); err != nil {
			return nil, err
		}
	}

	for _, s := range settings {
		if _, byFlag := src.Flags[s.Key]; byFlag {
			continue // shadowed: a bad value nobody uses is no error
		}
		name := s.Env
		v := l.getenv(name)
		if v == "" && src.Legacy && s.LegacyEnv != "" {
			name = s.LegacyEnv
			v = l.getenv(name)
		}
		if v == "" {
			continue
		}
		if err := l.apply(&c, s, v, FromEnv); err != nil {
			return nil, &Error{Key: s.Key, Env: name, Msg: err.Error()}
		}
		l.envs[s.Key] = name
	}

	flags := src.Flags
	keys := make([]string, 0, len(flags))
	for k := range flags {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		s := settingByKey[k]
		if s == nil {
			return nil, &Error{Key: k, Flag: true, Msg: "no such config key"}
		}
		if err := l.apply(&c, s, flags[k], FromFlag); err != nil {
			return nil, &Error{Key: k, Flag: true, Msg: err.Error()}
		}
	}

	if c.Debug {
		c.LogLevel = "debug"
		l.origins["log_level"] = l.origins["debug"]
		l.envs["log_level"] = l.envs["debug"]
	}
	if c.DataDir == "" {
		d, err := l.defaultDataDir()
		if err != nil {
			return nil, &Error{Key: "data_dir", Msg: err.Error()}
		}
		c.DataDir = d
	}
	for _, v := range []*string{&c.LBStrategy, &c.LogLevel, &c.LogFormat, &c.Log.Payloads} {
		*v = strings.ToLower(*v)
	}
	if p := c.validate(); p != nil {
		if p.alt != nil && l.origins[p.key] == FromDefault && l.origins[p.alt.key] != FromDefault {
			p = p.alt
		}
		return nil, l.errorAt(p.key, p.msg)
	}
	c.origins = l.originsOf()
	return &c, nil
}

// originsOf says, for every key not left at its default, where its value
// came from (Config.Origin).
func (l *loader) originsOf() map[string]Origin {
	out := make(map[string]Origin, len(l.origins))
	for key, kind := range l.origins {
		o := Origin{Kind: kind}
		switch kind {
		case FromEnv:
			o.Env = l.envs[key]
		case FromFile:
			o.File, o.Line = l.file, findLine(l.text, strings.Split(key, "."))
		}
		out[key] = o
	}
	return out
}

// apply sets one setting from a string, resolving paths against the
// working directory, and records where it came from.
func (l *loader) apply(c *Config, s *setting, v string, from OriginKind) error {
	if s.path && v != "" {
		p, err := l.absPath(v, "")
		if err != nil {
			return err
		}
		v = p
	}
	if err := s.set(c, v); err != nil {
		return err
	}
	l.origins[s.Key] = from
	return nil
}

// decodeFile decodes l.text over c, rejects unknown keys and resolves the
// file's relative paths against its directory.
func (l *loader) decodeFile(c *Config) error {
	md, err := toml.Decode(l.text, c)
	if err != nil {
		return l.decodeError(err)
	}

	// The first key, in document order, that is unknown or was not decoded
	// (the decoder also matches keys case-insensitively; we do not).
	undecoded := map[string]bool{}
	for _, k := range md.Undecoded() {
		undecoded[k.String()] = true
	}
	for _, k := range md.Keys() {
		if !undecoded[k.String()] && knownKey(strings.Join(k, ".")) {
			continue
		}
		msg := fmt.Sprintf("unknown key %q", k.String())
		if s := suggest(strings.Join(k, ".")); s != "" {
			msg += fmt.Sprintf(" (did you mean %q?)", s)
		}
		return &Error{File: l.file, Line: findLine(l.text, k), Key: k.String(), Msg: msg}
	}

	for _, k := range md.Keys() {
		s := settingByKey[strings.Join(k, ".")]
		if s == nil && len(k) > 1 {
			s = settingByKey[k[0]] // a table inside a top-level map ([pricing."claude-x"])
		}
		if s == nil {
			continue
		}
		l.origins[s.Key] = FromFile
		if !s.path {
			continue
		}
		f := s.field(c)
		if f.String() == "" {
			continue
		}
		p, err := l.absPath(f.String(), filepath.Dir(l.file))
		if err != nil {
			return l.errorAt(s.Key, err.Error())
		}
		f.SetString(p)
	}
	return nil
}

// tomlErrRe matches the decoder's type errors, which carry no position.
var tomlErrRe = regexp.MustCompile(`^toml: (?:line \d+ )?\(last key ("(?:[^"\\]|\\.)*")\): (.*)$`)

// tomlTypes names the decoder's type words (Go types of TOML values and
// destination kinds) for users.
var tomlTypes = map[string]string{
	"string":                  "a string",
	"int64":                   "an integer",
	"float64":                 "a float",
	"bool":                    "a boolean",
	"[]any":                   "an array",
	"[]map[string]any":        "an array of tables",
	"map[string]any":          "a table",
	"time.Time":               "a datetime",
	"integer":                 "an integer",
	"float":                   "a number",
	"boolean":                 "a boolean",
	"slice":                   "an array",
	"primitive (string-like)": "a string",
}

var (
	incompatibleRe = regexp.MustCompile(`^incompatible types: TOML value has type (.+); destination has type (.+)$`)
	mismatchRe     = regexp.MustCompile(`^type mismatch for (.+): expected table but found (.+)$`)
)

func tomlTypeName(t string) string {
	if n, ok := tomlTypes[t]; ok {
		return n
	}
	return t
}

// decodeError turns an error of toml.Decode into an *Error with the line.
func (l *loader) decodeError(err error) error {
	var pe toml.ParseError
	if errors.As(err, &pe) {
		e := &Error{File: l.file, Line: pe.Position.Line, Key: pe.LastKey, Msg: pe.Message}
		if e.Line == 0 && pe.LastKey != "" {
			e.Line = findLine(l.text, splitKey(pe.LastKey))
		}
		return e
	}
	m := tomlErrRe.FindStringSubmatch(err.Error())
	if m == nil {
		return &Error{File: l.file, Msg: strings.TrimPrefix(err.Error(), "toml: ")}
	}
	key, uerr := strconv.Unquote(m[1])
	if uerr != nil {
		key = m[1]
	}
	msg := m[2]
	if t := incompatibleRe.FindStringSubmatch(msg); t != nil {
		msg = fmt.Sprintf("must be %s, not %s", tomlTypeName(t[2]), tomlTypeName(t[1]))
	} else if t := mismatchRe.FindStringSubmatch(msg); t != nil {
		msg = fmt.Sprintf("must be a table, not %s", tomlTypeName(t[2]))
	}
	return &Error{File: l.file, Line: findLine(l.text, splitKey(key)), Key: key, Msg: msg}
}

// splitKey splits a key as toml.Key.String writes it; quoted parts with
// dots are rare enough in a config file that a plain split will do.
func splitKey(k string) []string {
	parts := strings.Split(k, ".")
	for i, p := range parts {
		if u, err := strconv.Unquote(p); err == nil {
			parts[i] = u
		}
	}
	return parts
}

// errorAt locates a problem with key at the layer that last set it.
func (l *loader) errorAt(key, msg string) *Error {
	e := &Error{Key: key, Msg: msg}
	switch l.origins[key] {
	case FromFlag:
		e.Flag = true
	case FromEnv:
		e.Env = l.envs[key]
	case FromFile:
		e.File = l.file
		e.Line = findLine(l.text, strings.Split(key, "."))
	}
	return e
}
