package commands

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/urfave/cli/v2"

	"github.com/claudeflare/claudeflare/config"
)

// ndjson writes one JSON object per line.
type ndjson struct{ enc *json.Encoder }

func newNDJSON(w io.Writer) *ndjson {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	return &ndjson{enc}
}

func (n *ndjson) write(v any) error { return n.enc.Encode(v) }

// writeNDJSON writes each of vs as one NDJSON line.
func writeNDJSON[T any](w io.Writer, vs []T) error {
	out := newNDJSON(w)
	for _, v := range vs {
		if err := out.write(v); err != nil {
			return err
		}
	}
	return nil
}

// tableTime is the one rule for a point in time in a table, in every
// command: local time with its UTC offset, to the second, so a reader
// knows which zone it is in ("01-02 08:34:05 +0530"); "-" for none. The
// year is left out to fit 80 columns. JSON output keeps RFC 3339 UTC.
func tableTime(ms int64) string {
	if ms == 0 {
		return "-"
	}
	return time.UnixMilli(ms).Local().Format("01-02 15:04:05 -0700")
}

// lineTime is tableTime for a human line, where a date may be far off
// and there is room for its year: "2026-01-02 08:34:05 +0530".
func lineTime(t time.Time) string {
	return t.Local().Format("2006-01-02 15:04:05 -0700")
}

// printable makes an untrusted string (a path, model, user agent, client,
// account or key name, error message) safe to print in human output, so
// that it can neither drive the terminal nor fake a line or a column: a
// backslash becomes \\, and each control character, other non-printable
// rune (C1 controls, bidi overrides, zero-width characters) and invalid
// UTF-8 byte becomes an escape as in a Go string literal: \n \r \t, \x1b
// (bytes below 0x80, and invalid bytes), \u202e or \U000e0001 (runes).
// Printable text, non-ASCII letters included, is kept as it is.
func printable(s string) string {
	i := 0
	for i < len(s) && s[i] >= 0x20 && s[i] < 0x7f && s[i] != '\\' {
		i++
	}
	if i == len(s) {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 8)
	b.WriteString(s[:i])
	for i < len(s) {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case r == '\\':
			b.WriteString(`\\`)
		case r == ' ' || r != utf8.RuneError && strconv.IsPrint(r):
			b.WriteString(s[i : i+size])
		default:
			q := strconv.QuoteRuneToASCII(r) // '\x1b', '\n', '\u202e'
			b.WriteString(q[1 : len(q)-1])
		}
		i += size
	}
	return b.String()
}

// clip shortens s to n runes, marking the cut with an ellipsis.
func clip(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	runes := []rune(s)
	return string(runes[:n-1]) + "…"
}

// say prints a success message ("claudeflare: account paused") for a
// person: on stderr, only when stderr is a terminal and --quiet is not
// given, so that a script's stderr (and cron's mail) holds only failures.
// Elsewhere the event is a debug log record instead: one event is never
// both a log line and a human line.
func (e *env) say(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if e.quiet || !isTerminal(e.stderr) {
		if e.log != nil {
			e.log.Debug(msg)
		}
		return
	}
	fmt.Fprintf(e.stderr, "claudeflare: %s\n", msg)
}

// scriptHandler is a one-shot command's log handler away from a terminal
// (or with --quiet): it passes warnings and errors, and info only when
// the level is debug. A command's info records (an account paused, a key
// made) are success messages; in cron they would be mailed.
type scriptHandler struct {
	slog.Handler
	level slog.Leveler
}

func (h scriptHandler) Enabled(ctx context.Context, l slog.Level) bool {
	if l < slog.LevelWarn && h.level.Level() > slog.LevelDebug {
		return false
	}
	return h.Handler.Enabled(ctx, l)
}

func (h scriptHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return scriptHandler{h.Handler.WithAttrs(as), h.level}
}

func (h scriptHandler) WithGroup(name string) slog.Handler {
	return scriptHandler{h.Handler.WithGroup(name), h.level}
}

// commandLogger is the logger of a one-shot command: as configured on a
// terminal, warnings and errors only elsewhere or with --quiet (unless
// the level is debug). The daemon makes its own with newLogger.
func (e *env) commandLogger(cfg *config.Config, level *slog.LevelVar) *slog.Logger {
	log := newLogger(e.stderr, cfg, level)
	if e.quiet || !isTerminal(e.stderr) {
		return slog.New(scriptHandler{log.Handler(), level})
	}
	return log
}

// logLines is the daemon's stderr when its logs are JSON: each plain line
// written to it ("claudeflare: warning: ...", a note from opening the
// vault, the final error) becomes a log record, so that every line the
// daemon writes parses as JSON. "claudeflare: " is cut; "warning: "
// makes the record a warning.
type logLines struct {
	log   *slog.Logger
	level slog.Level // of a line without "warning: "
	mu    sync.Mutex
	buf   []byte
}

func (w *logLines) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			return len(p), nil
		}
		line := string(w.buf[:i])
		w.buf = w.buf[i+1:]
		if strings.TrimSpace(line) != "" {
			w.record(line)
		}
	}
}

func (w *logLines) record(line string) {
	line = strings.TrimPrefix(line, "claudeflare: ")
	level := w.level
	if rest, ok := strings.CutPrefix(line, "warning: "); ok {
		line, level = rest, slog.LevelWarn
	}
	w.log.Log(context.Background(), level, line)
}

// logError logs the error a command ends with (printError's JSON form):
// one record at error level, its hint as an attribute.
func (w *logLines) logError(msg, hint string) {
	if hint != "" {
		w.log.Error(msg, "hint", hint)
		return
	}
	w.log.Error(msg)
}

// errorOut is where Run prints the error a command ends with: the
// command's stderr, which the daemon with JSON logs turned into logLines.
func errorOut(app *cli.App, stderr io.Writer) io.Writer {
	if e, ok := app.Metadata["env"].(*env); ok && e.stderr != nil {
		return e.stderr
	}
	return stderr
}
