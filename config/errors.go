package config

import (
	"strconv"
	"strings"
)

// Error is a configuration error: an unknown key, a malformed or invalid
// value, or a config file that cannot be read. It says where the value came
// from: a file line, an environment variable or a command-line flag. The CLI
// maps it to exit code 2 with errors.As.
type Error struct {
	// File is the config file, "" when the value did not come from one.
	File string
	// Line is the 1-based line in File, 0 when unknown.
	Line int
	// Key is the dotted config key, e.g. "log.payloads"; may be "".
	Key string
	// Env is the environment variable the value came from, if any.
	Env string
	// Flag is true when the value came from a command-line flag (Source.Flags).
	Flag bool
	// Msg says what is wrong.
	Msg string
}

// Error formats e as one line:
//
//	config /etc/claudeflare.toml:12: unknown key "lb_stratgy"
//	config /etc/claudeflare.toml:3: port: must be between 0 and 65535
//	config env PORT: invalid integer "x"
//	config flag log.payloads: must be one of full, headers, off (got "some")
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("config")
	keyShown := false
	switch {
	case e.Env != "":
		b.WriteString(" env ")
		b.WriteString(e.Env)
	case e.Flag:
		b.WriteString(" flag ")
		b.WriteString(e.Key)
		keyShown = true
	case e.File != "":
		b.WriteString(" ")
		b.WriteString(e.File)
		if e.Line > 0 {
			b.WriteString(":")
			b.WriteString(strconv.Itoa(e.Line))
		}
	}
	b.WriteString(": ")
	if e.Key != "" && !keyShown && e.Env == "" && !strings.Contains(e.Msg, strconv.Quote(e.Key)) {
		b.WriteString(e.Key)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}
