package commands

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// ndjson writes one JSON object per line.
type ndjson struct{ enc *json.Encoder }

func newNDJSON(w io.Writer) *ndjson {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	return &ndjson{enc}
}

func (n *ndjson) write(v any) error { return n.enc.Encode(v) }

// human formats unix milliseconds for a table, relative to now.
func human(ms int64, now time.Time) string {
	if ms == 0 {
		return "-"
	}
	t := time.UnixMilli(ms)
	d := t.Sub(now).Round(time.Second)
	switch {
	case d > 0:
		return "in " + d.String()
	case d < 0:
		return (-d).String() + " ago"
	}
	return "now"
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
