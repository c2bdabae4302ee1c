package proxy

// The redactor as it was before the built-in shapes were scanned for
// without regular expressions (commit f5f3956), kept as the baseline of
// BenchmarkRedactBody; only its names changed.

import (
	"bytes"
	"net/http"
	"regexp"
	"slices"
	"unicode/utf16"
	"unicode/utf8"
)

type oldRedactor struct {
	pats []oldPattern // the built-in patterns, then log.redact
}

// pattern is one redaction pattern. The patterns are run one by one, not
// joined into one alternation: Go's regexp skips quickly to a literal
// prefix (sk-ant-, cf_) only when the expression has one. A pattern that
// starts with a case-insensitive literal ((?i)bearer) is run only where a
// lower-cased copy of the text holds that literal.
type oldPattern struct {
	re       *regexp.Regexp
	fold     []byte         // the lower-case literal every match starts with, or nil
	anchored *regexp.Regexp // re anchored at the start, used with fold
}

func newOldRedactor(extra []*regexp.Regexp) *oldRedactor {
	res := make([]*regexp.Regexp, 0, len(builtinRedact)+len(extra))
	for _, p := range builtinRedact {
		res = append(res, regexp.MustCompile(p))
	}
	r := &oldRedactor{}
	seen := map[string]bool{}
	for _, re := range append(res, extra...) {
		if seen[re.String()] { // log.redact's defaults are built in too
			continue
		}
		seen[re.String()] = true
		p := oldPattern{re: re}
		if lit := foldPrefix(re.String()); lit != "" {
			if a, err := regexp.Compile(`^(?:` + re.String() + `)`); err == nil {
				p.fold, p.anchored = []byte(lit), a
			}
		}
		r.pats = append(r.pats, p)
	}
	return r
}

// find calls add with every match of p in b; lower returns b lower-cased
// (ASCII only), made once per text.
func (p *oldPattern) find(b []byte, lower func() []byte, add func(start, end int)) {
	if p.fold == nil {
		for _, m := range p.re.FindAllIndex(b, -1) {
			add(m[0], m[1])
		}
		return
	}
	lb := lower()
	for i := 0; i < len(b); {
		j := bytes.Index(lb[i:], p.fold)
		if j < 0 {
			return
		}
		i += j
		if m := p.anchored.FindIndex(b[i:]); m != nil && m[1] > 0 {
			add(i, i+m[1])
			i += m[1]
			continue
		}
		i++
	}
}

// findAll calls add with every match of every pattern in b.
func (r *oldRedactor) findAll(b []byte, add func(start, end int)) {
	var lb []byte
	lower := func() []byte {
		if lb == nil {
			lb = make([]byte, len(b))
			for i, c := range b {
				if c >= 'A' && c <= 'Z' {
					c += 'a' - 'A'
				}
				lb[i] = c
			}
		}
		return lb
	}
	for i := range r.pats {
		r.pats[i].find(b, lower, add)
	}
}

// bytes returns b with every secret replaced by [REDACTED]: each match of
// a pattern in b itself, each match found once %XX escapes are undone (a
// query string, a form, a URL in a body), and each match found once JSON
// string escapes (\uXXXX, \/, \\ and the rest) are undone, up to
// maxEscapeLevels deep. Such a match is replaced with the escaped bytes it
// came from, so JSON stays JSON. b is not modified; the result is b itself
// when there is nothing to redact. Empty b gives nil.
func (r *oldRedactor) bytes(b []byte) []byte {
	if len(b) == 0 {
		return nil
	}
	var spans []span
	r.findAll(b, func(start, end int) { spans = append(spans, span{start, end}) })
	if hasPercentEscape(b) {
		next, npos := unescapePercent(nil, nil, b)
		r.findAll(next, func(start, end int) { spans = append(spans, span{int(npos[start]), int(npos[end])}) })
	}
	if bytes.IndexByte(b, '\\') >= 0 {
		sc := escapeScratchPool.Get().(*escapeScratch)
		text, pos := b, []int32(nil)
		for level := 0; level < maxEscapeLevels && bytes.IndexByte(text, '\\') >= 0; level++ {
			next, npos := unescapeJSON(sc.text[level][:0], sc.pos[level][:0], text, pos, len(b))
			sc.text[level], sc.pos[level] = next, npos
			if len(next) == len(text) {
				break // nothing was an escape
			}
			r.findAll(next, func(start, end int) { spans = append(spans, span{int(npos[start]), int(npos[end])}) })
			text, pos = next, npos
		}
		if cap(sc.text[0]) <= 8<<20 {
			escapeScratchPool.Put(sc)
		}
	}
	if len(spans) == 0 {
		return b
	}
	slices.SortFunc(spans, func(a, b span) int { return a[0] - b[0] })
	out := make([]byte, 0, len(b))
	at := 0
	for i := 0; i < len(spans); {
		s := spans[i]
		for i++; i < len(spans) && spans[i][0] <= s[1]; i++ {
			s[1] = max(s[1], spans[i][1])
		}
		out = append(append(out, b[at:s[0]]...), Redacted...)
		at = s[1]
	}
	return append(out, b[at:]...)
}

// header redacts h for a capture: credential headers replaced whole,
// secrets in the other values replaced.
func (r *oldRedactor) header(h http.Header) map[string][]string {
	out := redactHeader(h)
	for k, vs := range out {
		if credentialHeaders[k] {
			continue
		}
		for i, v := range vs {
			vs[i] = r.string(v)
		}
	}
	return out
}

func (r *oldRedactor) string(s string) string {
	if s == "" {
		return s
	}
	return string(r.bytes([]byte(s)))
}

// oldUnescapeJSON is unescapeJSON as it was, one byte at a time. It appends to out text with its JSON string escapes undone,
// wherever they are (the text may be JSON, SSE, or JSON cut short), and
// to opos, for each byte appended, the offset in the original bytes where
// the escape or byte it came from starts, plus a final origLen. pos maps
// text's bytes to the original the same way; nil means text is the
// original. A backslash that starts no valid escape is kept as it is.
func oldUnescapeJSON(out []byte, opos []int32, text []byte, pos []int32, origLen int) ([]byte, []int32) {
	origin := func(j int) int32 {
		if pos == nil {
			return int32(j)
		}
		return pos[j]
	}
	if cap(out) < len(text) {
		out = make([]byte, 0, len(text))
	}
	if cap(opos) < len(text)+1 {
		opos = make([]int32, 0, len(text)+1)
	}
	for j := 0; j < len(text); {
		c := text[j]
		if c != '\\' || j+1 == len(text) {
			out, opos = append(out, c), append(opos, origin(j))
			j++
			continue
		}
		o := origin(j)
		n, before := 2, len(out)
		switch e := text[j+1]; e {
		case '"', '\\', '/':
			out = append(out, e)
		case 'b':
			out = append(out, '\b')
		case 'f':
			out = append(out, '\f')
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case 't':
			out = append(out, '\t')
		case 'u':
			r, ok := hex4(text[j+2:])
			if !ok {
				n = 0
				break
			}
			n = 6
			if utf16.IsSurrogate(r) && j+12 <= len(text) && text[j+6] == '\\' && text[j+7] == 'u' {
				if r2, ok := hex4(text[j+8:]); ok {
					if d := utf16.DecodeRune(r, r2); d != utf8.RuneError {
						r, n = d, 12
					}
				}
			}
			out = utf8.AppendRune(out, r)
		default:
			n = 0
		}
		if n == 0 { // not an escape: the backslash stays
			out, opos = append(out, c), append(opos, o)
			j++
			continue
		}
		for range len(out) - before {
			opos = append(opos, o)
		}
		j += n
	}
	return out, append(opos, int32(origLen))
}
