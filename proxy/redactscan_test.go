package proxy

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// refRedactor is the redaction the fast path replaced: the built-in
// shapes as Go regular expressions, run on b and on every unescaped view
// of it, whatever b holds. With every, each expression is tried at every
// offset, so matches may overlap (what scanShapes promises); without, as
// the old code did, FindAll's leftmost matches only, which can miss a
// bearer token whose prefix sits inside another's token
// ("bearer xxxxxxxxbearer yyyyyyyy").
type refRedactor struct {
	res, anchored []*regexp.Regexp
	every         bool
}

func newRefRedactor(every bool) *refRedactor {
	r := &refRedactor{every: every}
	for _, p := range builtinRedact {
		r.res = append(r.res, regexp.MustCompile(p))
		r.anchored = append(r.anchored, regexp.MustCompile(`^(?:`+p+`)`))
	}
	return r
}

func (r *refRedactor) spans(b []byte) []span {
	var spans []span
	find := func(t []byte, pos []int32) {
		add := func(s, e int) {
			if pos != nil {
				s, e = int(pos[s]), int(pos[e])
			}
			spans = append(spans, span{s, e})
		}
		for k, re := range r.res {
			if !r.every {
				for _, m := range re.FindAllIndex(t, -1) {
					add(m[0], m[1])
				}
				continue
			}
			for i := range t {
				if m := r.anchored[k].FindIndex(t[i:]); m != nil {
					add(i, i+m[1])
				}
			}
		}
	}
	find(b, nil)
	if hasPercentEscape(b) {
		find(unescapePercent(nil, nil, b))
	}
	text, pos := b, []int32(nil)
	for level := 0; level < maxEscapeLevels && bytes.IndexByte(text, '\\') >= 0; level++ {
		next, npos := oldUnescapeJSON(nil, nil, text, pos, len(b))
		if len(next) == len(text) {
			break
		}
		find(next, npos)
		text, pos = next, npos
	}
	return mergeSpans(spans)
}

// covers reports whether every byte in want is in one of got's spans
// (both merged).
func covers(got, want []span) bool {
	for _, w := range want {
		i, _ := slices.BinarySearchFunc(got, w[0], func(s span, x int) int {
			if s[1] <= x {
				return -1
			}
			if s[0] > x {
				return 1
			}
			return 0
		})
		if i == len(got) || got[i][0] > w[0] || got[i][1] < w[1] {
			return false
		}
	}
	return true
}

// shapeTokens are the pieces generated documents are made of: the
// shapes' prefixes whole and in parts, characters of their classes,
// white space, and each of those characters escaped every way the
// redactor undoes (JSON once and twice, %XX), plus escapes that are not
// escapes and bytes no shape holds.
var shapeTokens = func() []string {
	toks := []string{
		"sk-ant-", "sk", "-ant-", "k-ant-", "ant", "cf_", "cf", "_", "bearer", "Bearer", "BEARER", "bEaReR", "bear", "er",
		"abcdefgh", "0123456789ABCDEF", "x", "Z9_-", ".~+/=", "QQQQQQQQQQQQQQQQ",
		" ", "  ", "\t", "\n", "\r", "\f", "\v",
		`\`, `\\`, `\\\`, `"`, `\"`, `\/`, `\\/`, `\n`, `\t`, `\\n`, `\\t`, `\b`, `\u`, `\u00`, `\x`, `\\u`,
		`\ud83d\ude00`, `\ud83d`, `\u005c`, `\u005C`, `\u0075`, `\\\u0075`, `\u212a`, `\u017f`,
		"%", "%2", "%zz", "%25", "%2D", "%5c", "%E2%84%AA", "%c5%bf", "%E2",
		"\u212a", "\u017f", "é", "\xff", "{", "}", ":", ",", "u", "0073", "002d",
	}
	for _, c := range "skantcf_-bBeErR aZ9/.=~+\t\\u" {
		toks = append(toks,
			fmt.Sprintf(`\u%04x`, c), fmt.Sprintf(`\u%04X`, c),
			fmt.Sprintf(`\\u%04x`, c), fmt.Sprintf(`\u005cu%04x`, c),
			fmt.Sprintf(`%%%02X`, c), fmt.Sprintf(`%%%02x`, c))
	}
	return toks
}()

// shapeDoc builds a document from sel, one token per byte.
func shapeDoc(sel []byte) []byte {
	var b []byte
	for _, s := range sel {
		b = append(b, shapeTokens[int(s)%len(shapeTokens)]...)
	}
	return b
}

// checkShapes compares the fast path with the regular expressions on b:
// the same spans as every match of them, and all of FindAll's.
func checkShapes(t *testing.T, r *redactor, every, leftmost *refRedactor, b []byte) {
	t.Helper()
	got := mergeSpans(r.find(b))
	if want := every.spans(b); !slices.Equal(got, want) {
		t.Fatalf("%q:\nfast path %v\n   regexp %v\nfast %q\n ref %q", b, got, want, redactSpans(b, got), redactSpans(b, want))
	}
	if old := leftmost.spans(b); !covers(got, old) {
		t.Fatalf("%q: the fast path %v misses some of the old code's %v", b, got, old)
	}
}

func redactSpans(b []byte, spans []span) []byte {
	var out []byte
	at := 0
	for _, s := range spans {
		out = append(append(out, b[at:s[0]]...), Redacted...)
		at = s[1]
	}
	return append(out, b[at:]...)
}

// TestRedactShapesMatchRegexp runs the fast path and the regular
// expressions over documents built at random from shapeTokens.
func TestRedactShapesMatchRegexp(t *testing.T) {
	r, every, leftmost := newRedactor(nil), newRefRedactor(true), newRefRedactor(false)
	rng := rand.New(rand.NewPCG(16, 2))
	n := 4000
	if testing.Short() {
		n = 1000
	}
	sel := make([]byte, 0, 48)
	for range n {
		sel = sel[:0]
		for range 1 + rng.IntN(40) {
			sel = append(sel, byte(rng.IntN(len(shapeTokens))))
		}
		checkShapes(t, r, every, leftmost, shapeDoc(sel))
	}
}

// FuzzRedactShapes: the same as TestRedactShapesMatchRegexp, each input
// byte choosing a token.
//
//	go test -run '^$' -fuzz FuzzRedactShapes -fuzztime 2m ./proxy
func FuzzRedactShapes(f *testing.F) {
	tok := func(s string) byte { return byte(slices.Index(shapeTokens, s)) }
	f.Add([]byte{tok("sk-ant-"), tok("abcdefgh")})
	f.Add([]byte{tok("sk"), tok(`\u002d`), tok("ant"), tok("-ant-"), tok("abcdefgh")})
	f.Add([]byte{tok("Bearer"), tok(`\t`), tok(".~+/="), tok(`\\/`), tok("abcdefgh")})
	f.Add([]byte{tok("bearer"), tok(" "), tok("abcdefgh"), tok("bearer"), tok(" "), tok("abcdefgh")})
	f.Add([]byte{tok("cf_"), tok("abcdefgh"), tok("%2D"), tok("abcdefgh")})
	f.Add([]byte{tok(`\\u0073`), tok("k-ant-"), tok("abcdefgh")})
	f.Add([]byte{tok(`\\\u0075`), tok("0073"), tok("k-ant-"), tok("abcdefgh")})
	r, every, leftmost := newRedactor(nil), newRefRedactor(true), newRefRedactor(false)
	f.Fuzz(func(t *testing.T, sel []byte) {
		if len(sel) > 200 {
			sel = sel[:200]
		}
		checkShapes(t, r, every, leftmost, shapeDoc(sel))
	})
}

// TestUnescapeJSONAsBefore: unescapeJSON, which copies the bytes between
// escapes at once, gives what it gave one byte at a time, the text and
// each byte's origin, one and two levels down.
func TestUnescapeJSONAsBefore(t *testing.T) {
	rng := rand.New(rand.NewPCG(16, 3))
	for range 3000 {
		sel := make([]byte, 1+rng.IntN(60))
		for i := range sel {
			sel[i] = byte(rng.IntN(len(shapeTokens)))
		}
		b := shapeDoc(sel)
		text, pos := b, []int32(nil)
		for range maxEscapeLevels {
			got, gotPos := unescapeJSON(nil, nil, text, pos, len(b))
			want, wantPos := oldUnescapeJSON(nil, nil, text, pos, len(b))
			if !bytes.Equal(got, want) || !slices.Equal(gotPos, wantPos) {
				t.Fatalf("unescape %q:\n got %q %v\nwant %q %v", text, got, gotPos, want, wantPos)
			}
			text, pos = got, gotPos
		}
	}
}

// TestRedactShapesAtEdges puts each shape at the start and at the end of
// the text, at its shortest and one character shorter, plain and escaped:
// the scan must neither read past the end nor stop a character early.
func TestRedactShapesAtEdges(t *testing.T) {
	r := newRedactor(nil)
	for _, c := range []struct {
		secret string // the shortest match
		short  string // one character too short
	}{
		{"sk-ant-" + "12345678", "sk-ant-" + "1234567"},
		{"cf_" + "0123456789abcdef", "cf_" + "0123456789abcde"},
		{"Bearer " + "a.b~c+/=", "Bearer " + "a.b~c+/"},
		{"bEaReR\t\n" + "xxxxxxxx", "bEaReR\t\n" + "xxxxxxx"},
		{"bearer " + "abcdefg\u212a", "bearer " + "abcdef\u212a"},
		{`sk\u002dant-` + "12345678", `sk\u002dant-` + "1234567"},
		{`\u0063f_` + "0123456789abcdef", `\u0063f_` + "0123456789abcde"},
		{`bearer\t` + "abcdefgh", `bearer\t` + "abcdefg"},
		{`bearer\\t` + "abcdefgh", `bearer\\t` + "abcdefg"},
		{`sk-ant-1234567\u0038`, `sk-ant-123456\u0037`},
		{`sk%2Dant-` + "12345678", `sk%2Dant-` + "1234567"},
		{`cf_0123456789abcde%66`, `cf_0123456789abcd%65`},
		{`Bearer abc\/defgh`, `Bearer ab\/defg`},
		{`bearer abcdefg%E2%84%AA`, `bearer abcdef%E2%84%AA`},
		{`bearer\n\u0020abcdefgh`, `bearer\n\u0020abcdefg`},
	} {
		for _, around := range [][2]string{{"", ""}, {"x ", ""}, {"", " x"}, {`"`, `"`}, {`\n`, `\n`}} {
			in := around[0] + c.secret + around[1]
			if got, want := string(r.bytes([]byte(in))), around[0]+Redacted+around[1]; got != want {
				t.Errorf("redact %q = %q, want %q", in, got, want)
			}
			in = around[0] + c.short + around[1]
			if got := string(r.bytes([]byte(in))); got != in {
				t.Errorf("redact %q = %q, want it kept", in, got)
			}
		}
	}
	// A bearer token whose prefix sits in another's token: FindAll, as
	// the old code used it, went on after the first match and missed it.
	if got := string(r.bytes([]byte("bearer xxxxxxxxbearer yyyyyyyy z"))); got != Redacted+" z" {
		t.Errorf("two bearer tokens: %q", got)
	}
	// A prefix cut by the end of the text, and one byte of each.
	for _, in := range []string{"sk-ant", "cf", "beare", `sk\u002`, `\u00`, `\\u007`, "%2", "%", `\`, "s", "b", "B", "c"} {
		if got := string(r.bytes([]byte(in))); got != in {
			t.Errorf("redact %q = %q", in, got)
		}
	}
	// The bearer scan reads eight bytes at a time: a prefix at each
	// offset of a long text, and one straddling the last word.
	for n := range 24 {
		in := strings.Repeat("z", n) + "BEARER abcdefgh" + strings.Repeat("z", 23-n)
		want := strings.Repeat("z", n) + Redacted
		if got := string(r.bytes([]byte(in))); got != want {
			t.Errorf("redact %q = %q, want %q", in, got, want)
		}
	}
}
