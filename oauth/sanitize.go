package oauth

import (
	"regexp"
	"sort"
	"strings"
	"unicode"
	"unicode/utf8"
)

// MaxDescription caps the length, in characters, of a sanitised message.
const MaxDescription = 200

// Redacted replaces anything that looks like a credential.
const Redacted = "[REDACTED]"

// credentialRE matches Anthropic credentials (sk-ant-...) and runs of 24 or
// more base64/base64url/hex characters.
var credentialRE = regexp.MustCompile(`sk-ant-[A-Za-z0-9_\-+/=]*|[A-Za-z0-9+/=_\-]{24,}`)

// clean drops invalid UTF-8, control and format characters (line breaks
// and tabs become spaces).
func clean(s string) string {
	s = strings.ToValidUTF8(s, "")
	return strings.Map(func(r rune) rune {
		switch {
		case r == '\n' || r == '\r' || r == '\t':
			return ' '
		case unicode.IsControl(r) || r == utf8.RuneError ||
			unicode.In(r, unicode.Cf): // bidi overrides, zero-width characters
			return -1
		}
		return r
	}, s)
}

// wordyRE matches runs made only of lower-case letters and separators:
// identifiers and paths such as "claude_cli/create_api_key", which read
// as words, not as secrets, and are kept.
var wordyRE = regexp.MustCompile(`^[a-z_\-/]+$`)

// Sanitize makes text from a remote party (or an error that may quote a
// request) safe to show and log: invalid UTF-8 and control characters are
// removed (line breaks and tabs become spaces), every occurrence of each
// non-empty secret is replaced with [REDACTED], and so is anything that
// looks like a credential: "sk-ant-..." strings and runs of 24 or more
// base64/hex characters, unless the run is made only of lower-case
// letters, "_", "-" and "/". The result is at most MaxDescription
// characters long.
func Sanitize(msg string, secrets ...string) string {
	msg = clean(msg)

	// A secret is looked for as cleaning left it in the message: a
	// secret with a control character still matches, and one with
	// invalid UTF-8 can never cut a character of msg in half.
	sorted := make([]string, 0, len(secrets))
	for _, s := range secrets {
		if s = clean(s); s != "" {
			sorted = append(sorted, s)
		}
	}
	sort.Slice(sorted, func(i, j int) bool { return len(sorted[i]) > len(sorted[j]) })
	for _, s := range sorted {
		msg = strings.ReplaceAll(msg, s, Redacted)
	}

	msg = credentialRE.ReplaceAllStringFunc(msg, func(m string) string {
		if !strings.HasPrefix(m, "sk-ant-") && wordyRE.MatchString(m) {
			return m
		}
		return Redacted
	})
	msg = strings.TrimSpace(msg)
	if utf8.RuneCountInString(msg) > MaxDescription {
		r := []rune(msg)
		msg = string(r[:MaxDescription-3]) + "..."
	}
	return msg
}
