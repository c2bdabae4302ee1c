package proxy

import (
	"bytes"
	"compress/flate"
	"compress/gzip"
	"compress/zlib"
	"errors"
	"io"
	"net/http"
	"regexp"
	"regexp/syntax"
	"slices"
	"strings"
	"sync"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"
	"unsafe"
)

// builtinRedact are redacted from everything the request log keeps,
// whatever log.redact says (log.redact adds to them): Anthropic API keys
// and OAuth tokens (sk-ant-...), claudeflare client keys (cf_ and 43
// base64url characters; 16 are enough to be one), and bearer credentials.
// They are found by scanShapes, without regular expressions; a log.redact
// pattern written the same way is not run a second time.
var builtinRedact = []string{
	`sk-ant-[A-Za-z0-9_\-]{8,}`,
	`cf_[A-Za-z0-9_\-]{16,}`,
	`(?i)bearer\s+[A-Za-z0-9._~+/=\-]{8,}`,
}

// redactSlack is how far past log.payload_max_bytes a body is read before
// it is redacted and cut, so that a secret straddling the cut is seen
// whole and redacted rather than stored in part.
const redactSlack = 4 << 10

// maxEscapeLevels is how many rounds of JSON string escapes are undone
// when looking for secrets: one for a secret inside a JSON string
// ("sk\u002dant-..."), two for one inside JSON text inside a JSON string
// (a tool input or result that holds JSON).
const maxEscapeLevels = 2

// redactor replaces secrets in what the request log keeps: payload bodies
// and header values, and the request row's path, model, client and error.
type redactor struct {
	pats []pattern // log.redact's patterns, other than the built-in shapes
}

// pattern is one log.redact pattern. The patterns are run one by one, not
// joined into one alternation: Go's regexp skips quickly to a literal
// prefix only when the expression has one. A pattern that starts with a
// case-insensitive literal ((?i)token=) is run only where a lower-cased
// copy of the text holds that literal.
type pattern struct {
	re       *regexp.Regexp
	fold     []byte         // the lower-case literal every match starts with, or nil
	anchored *regexp.Regexp // re anchored at the start, used with fold
}

func newRedactor(extra []*regexp.Regexp) *redactor {
	r := &redactor{}
	seen := map[string]bool{}
	for _, p := range builtinRedact { // log.redact's defaults are built in
		seen[p] = true
	}
	for _, re := range extra {
		if seen[re.String()] {
			continue
		}
		seen[re.String()] = true
		p := pattern{re: re}
		if lit := foldPrefix(re.String()); lit != "" {
			if a, err := regexp.Compile(`^(?:` + re.String() + `)`); err == nil {
				p.fold, p.anchored = []byte(lit), a
			}
		}
		r.pats = append(r.pats, p)
	}
	return r
}

// foldPrefix returns the lower-case literal that every match of expr
// starts with when expr starts with a case-insensitive ASCII literal
// whose letters fold only among themselves (so not k or s, which fold to
// U+212A and U+017F too), else "".
func foldPrefix(expr string) string {
	re, err := syntax.Parse(expr, syntax.Perl)
	if err != nil {
		return ""
	}
	re = re.Simplify()
	for re.Op == syntax.OpConcat && len(re.Sub) > 0 || re.Op == syntax.OpCapture {
		re = re.Sub[0]
	}
	if re.Op != syntax.OpLiteral || re.Flags&syntax.FoldCase == 0 || len(re.Rune) < 3 {
		return ""
	}
	lit := make([]byte, 0, len(re.Rune))
	for _, c := range re.Rune {
		if c >= utf8.RuneSelf || c == 'k' || c == 'K' || c == 's' || c == 'S' {
			return ""
		}
		lit = append(lit, byte(unicode.ToLower(c)))
	}
	return string(lit)
}

// find calls add with every match of p in b; lower returns b lower-cased
// (ASCII only), made once per text.
func (p *pattern) find(b []byte, lower func() []byte, add func(start, end int)) {
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

// findAll calls add with every match of every log.redact pattern in b.
func (r *redactor) findAll(b []byte, add func(start, end int)) {
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

// span is a byte range [0], [1] of the text being redacted.
type span [2]int

// escapeScratch holds the buffers one round of unescaping needs, reused
// from one body to the next.
type escapeScratch struct {
	text [maxEscapeLevels][]byte
	pos  [maxEscapeLevels][]int32
}

var escapeScratchPool = sync.Pool{New: func() any { return new(escapeScratch) }}

// bytes returns b with every secret replaced by [REDACTED]: each match of
// a built-in shape or a log.redact pattern in b itself, each match found
// once %XX escapes are undone (a query string, a form, a URL in a body),
// and each match found once JSON string escapes (\uXXXX, \/, \\ and the
// rest) are undone, up to maxEscapeLevels deep. Such a match is replaced
// with the escaped bytes it came from, so JSON stays JSON. b is not
// modified; the result is b itself when there is nothing to redact. Empty
// b gives nil.
//
// The unescaped views are made only when they can hold a match that b
// does not show (see jsonTrigger, percentTrigger and scanShapes' esc), or
// when log.redact adds patterns, which are run on every view.
func (r *redactor) bytes(b []byte) []byte {
	if len(b) == 0 {
		return nil
	}
	spans := mergeSpans(r.find(b))
	if len(spans) == 0 {
		return b
	}
	out := make([]byte, 0, len(b))
	at := 0
	for _, s := range spans {
		out = append(append(out, b[at:s[0]]...), Redacted...)
		at = s[1]
	}
	return append(out, b[at:]...)
}

// find returns the spans of b that bytes replaces, in no order, possibly
// overlapping.
func (r *redactor) find(b []byte) []span {
	if len(r.pats) == 0 && len(b) <= 256 && !mayHoldShape(b) {
		return nil // most header values, paths and models
	}
	var spans []span
	esc := scanShapes(b, nil, &spans)
	r.findUser(b, nil, &spans)
	user := len(r.pats) > 0
	// Each view only when an escape of its kind may make or extend a
	// match there: the percent view undoes %XX only, the JSON views JSON
	// escapes only.
	if (user || esc&escPercent != 0 || percentTrigger(b)) && hasPercentEscape(b) {
		sc := escapeScratchPool.Get().(*escapeScratch)
		next, npos := unescapePercent(sc.text[0][:0], sc.pos[0][:0], b)
		scanShapes(next, npos, &spans)
		r.findUser(next, npos, &spans)
		sc.text[0], sc.pos[0] = next, npos
		if cap(next) <= 8<<20 {
			escapeScratchPool.Put(sc)
		}
	}
	if bytes.IndexByte(b, '\\') >= 0 && (user || esc&escJSON != 0 || jsonTrigger(b)) {
		sc := escapeScratchPool.Get().(*escapeScratch)
		text, pos := b, []int32(nil)
		for level := 0; level < maxEscapeLevels && bytes.IndexByte(text, '\\') >= 0; level++ {
			next, npos := unescapeJSON(sc.text[level][:0], sc.pos[level][:0], text, pos, len(b))
			sc.text[level], sc.pos[level] = next, npos
			if len(next) == len(text) {
				break // nothing was an escape
			}
			scanShapes(next, npos, &spans)
			r.findUser(next, npos, &spans)
			text, pos = next, npos
		}
		if cap(sc.text[0]) <= 8<<20 {
			escapeScratchPool.Put(sc)
		}
	}
	return spans
}

// mayHoldShape reports whether b holds what every match of a built-in
// shape, or every escape that may make one, needs: a b or B, "cf_",
// "sk-", a backslash or a percent sign. One pass, for short texts, where
// it costs less than scanShapes' calls.
func mayHoldShape(b []byte) bool {
	for i, c := range b {
		switch c {
		case 'b', 'B', '\\', '%':
			return true
		case '_':
			if i >= 2 && b[i-2] == 'c' && b[i-1] == 'f' {
				return true
			}
		case '-':
			if i >= 2 && b[i-2] == 's' && b[i-1] == 'k' {
				return true
			}
		}
	}
	return false
}

// mergeSpans sorts spans and joins those that overlap or touch: one
// [REDACTED] for each.
func mergeSpans(spans []span) []span {
	if len(spans) < 2 {
		return spans
	}
	slices.SortFunc(spans, func(a, b span) int { return a[0] - b[0] })
	out := spans[:1]
	for _, s := range spans[1:] {
		if last := &out[len(out)-1]; s[0] <= last[1] {
			last[1] = max(last[1], s[1])
		} else {
			out = append(out, s)
		}
	}
	return out
}

// findUser appends to spans every match of a log.redact pattern in t,
// mapped through pos as in scanShapes.
func (r *redactor) findUser(t []byte, pos []int32, spans *[]span) {
	if len(r.pats) == 0 {
		return
	}
	r.findAll(t, func(start, end int) {
		if pos != nil {
			start, end = int(pos[start]), int(pos[end])
		}
		*spans = append(*spans, span{start, end})
	})
}

// string is bytes for a short string (a path with its query, a header
// value, a model, a client, an error).
// Most hold no secret: s is then returned as it is, without a copy.
func (r *redactor) string(s string) string {
	if s == "" {
		return s
	}
	// find only reads the bytes: it reads s's own, not a copy.
	b := unsafe.Slice(unsafe.StringData(s), len(s))
	spans := mergeSpans(r.find(b))
	if len(spans) == 0 {
		return s
	}
	var out strings.Builder
	at := 0
	for _, sp := range spans {
		out.WriteString(s[at:sp[0]])
		out.WriteString(Redacted)
		at = sp[1]
	}
	out.WriteString(s[at:])
	return out.String()
}

// hasPercentEscape reports whether b holds a %XX escape.
func hasPercentEscape(b []byte) bool {
	for {
		i := bytes.IndexByte(b, '%')
		if i < 0 || i+2 >= len(b) {
			return false
		}
		if _, ok := hex4([]byte{'0', '0', b[i+1], b[i+2]}); ok {
			return true
		}
		b = b[i+1:]
	}
}

// unescapePercent appends to out b with its %XX escapes undone and, for
// each byte of the result, appends to pos the offset in b where the
// escape or byte it came from starts, plus a final len(b). The runs
// between escapes are copied whole.
func unescapePercent(out []byte, pos []int32, b []byte) ([]byte, []int32) {
	out, pos = slices.Grow(out, len(b)), slices.Grow(pos, len(b)+1)
	for j := 0; j < len(b); {
		n := bytes.IndexByte(b[j:], '%')
		if n < 0 {
			n = len(b) - j
		}
		base := len(out)
		out = append(out, b[j:j+n]...)
		pos = pos[:base+n]
		for k := range n {
			pos[base+k] = int32(j + k)
		}
		j += n
		if j >= len(b) {
			break
		}
		// b[j] is '%'.
		if j+2 < len(b) {
			if h, ok := hex4([]byte{'0', '0', b[j+1], b[j+2]}); ok {
				out, pos = append(out, byte(h)), append(pos, int32(j))
				j += 3
				continue
			}
		}
		out, pos = append(out, '%'), append(pos, int32(j))
		j++
	}
	return out, append(pos, int32(len(b)))
}

// header redacts h for a capture: credential headers replaced whole,
// secrets in the other values replaced.
func (r *redactor) header(h http.Header) map[string][]string {
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

// unescapeJSON appends to out text with its JSON string escapes undone,
// wherever they are (the text may be JSON, SSE, or JSON cut short), and
// to opos, for each byte appended, the offset in the original bytes where
// the escape or byte it came from starts, plus a final origLen. pos maps
// text's bytes to the original the same way; nil means text is the
// original. A backslash that starts no valid escape is kept as it is.
func unescapeJSON(out []byte, opos []int32, text []byte, pos []int32, origLen int) ([]byte, []int32) {
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
		// The bytes up to the next backslash, at once.
		k := bytes.IndexByte(text[j:], '\\')
		if k < 0 {
			k = len(text) - j
		}
		if k > 0 {
			out = append(out, text[j:j+k]...)
			if pos != nil {
				opos = append(opos, pos[j:j+k]...)
			} else {
				n := len(opos)
				opos = slices.Grow(opos, k)[:n+k]
				for x := range opos[n:] {
					opos[n+x] = int32(j + x)
				}
			}
			j += k
			continue
		}
		c := text[j]
		if j+1 == len(text) {
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

// hex4 reads four hex digits at the start of b.
func hex4(b []byte) (rune, bool) {
	if len(b) < 4 {
		return 0, false
	}
	var r rune
	for _, c := range b[:4] {
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c -= 'a' - 10
		case c >= 'A' && c <= 'F':
			c -= 'A' - 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	return r, true
}

// undecodableBody is stored instead of a body in a content coding the
// recorder cannot decode (br, zstd, compress, or a corrupt stream): its
// secrets could not be found, so it is not kept.
func undecodableBody(coding string) []byte {
	return []byte("[REDACTED: undecodable " + coding + " body]")
}

// decodeBody undoes the content codings of a captured body (the
// Content-Encoding header's values; a body sent with none but starting
// with gzip's magic bytes is decoded too), keeping at most limit decoded
// bytes; cut reports that there was more, or that the stream ended early
// (a body captured in part). gzip, x-gzip and deflate (zlib or raw) are
// decoded; for any other coding, or a stream that does not decode, bad
// names the coding and the body must not be stored. With no coding, out
// is b (at most limit bytes of it).
func decodeBody(codings []string, b []byte, limit int) (out []byte, cut bool, bad string) {
	var list []string
	for _, v := range codings {
		for c := range strings.SplitSeq(v, ",") {
			if c = strings.ToLower(strings.TrimSpace(c)); c != "" && c != "identity" {
				list = append(list, c)
			}
		}
	}
	if len(list) == 0 {
		switch {
		case len(b) >= 4 && string(b[:4]) == "\x28\xb5\x2f\xfd":
			return nil, false, "zstd"
		case len(b) > 2 && b[0] == 0x1f && b[1] == 0x8b:
			if d, c, bad := decodeOne("gzip", b, limit); bad == "" {
				return d, c, ""
			}
		}
		if len(b) > limit {
			return b[:limit], true, ""
		}
		return b, false, ""
	}
	out = b
	for i := len(list) - 1; i >= 0; i-- { // the last coding applied comes off first
		var c bool
		if out, c, bad = decodeOne(list[i], out, limit); bad != "" {
			return nil, false, bad
		}
		cut = cut || c
	}
	return out, cut, ""
}

func decodeOne(coding string, b []byte, limit int) (out []byte, cut bool, bad string) {
	var r io.Reader
	var err error
	switch coding {
	case "gzip", "x-gzip":
		r, err = gzip.NewReader(bytes.NewReader(b))
	case "deflate":
		if r, err = zlib.NewReader(bytes.NewReader(b)); err != nil {
			r, err = flate.NewReader(bytes.NewReader(b)), nil
		}
	default:
		return nil, false, coding
	}
	if err != nil {
		return nil, false, coding
	}
	var buf bytes.Buffer
	_, err = io.Copy(&buf, io.LimitReader(r, int64(limit)+1))
	out = buf.Bytes()
	switch {
	case len(out) > limit:
		return out[:limit], true, ""
	case err == nil:
		return out, false, ""
	case errors.Is(err, io.ErrUnexpectedEOF) && len(out) > 0:
		return out, true, "" // captured in part: keep what decodes
	}
	return nil, false, coding
}

// RedactFunc is the redaction the request log applies (the built-in
// secret shapes and the log.redact patterns extra), for text assembled
// after capture: `payload export` runs it over each line it writes, so a
// secret a stream sent in pieces (each piece redacted alone) is caught
// once response.message joins them.
func RedactFunc(extra []*regexp.Regexp) func([]byte) []byte {
	return newRedactor(extra).bytes
}
