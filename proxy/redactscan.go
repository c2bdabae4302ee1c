package proxy

import "bytes"

// The built-in secret shapes, found without regular expressions: one
// linear scan per shape over the bytes, each skipping with
// bytes.IndexByte (vectorized) from one occurrence of its prefix's rarest
// byte to the next, so that a body without secrets costs a few passes at
// close to memory speed and no allocation. (bytes.Index is not used: it
// gives up on a needle whose first byte is common, such as the s of
// sk-ant-, and compares at every offset.) They match exactly what these
// expressions match (builtinRedact; FuzzRedactShapes checks it), at
// every place a prefix occurs:
//
//	sk-ant-[A-Za-z0-9_\-]{8,}
//	cf_[A-Za-z0-9_\-]{16,}
//	(?i)bearer\s+[A-Za-z0-9._~+/=\-]{8,}
//
// In Go's regexp, (?i) folds the class too: it also holds U+212A (K, the
// Kelvin sign) and U+017F (ſ, long s), which fold to k and s.

const (
	prefixAnt    = "sk-ant-"
	prefixClient = "cf_"
	prefixBearer = "bearer" // any case
	minAnt       = 8
	minClient    = 16
	minBearer    = 8
)

var (
	keyClass   = byteClass("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
	tokenClass = byteClass("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._~+/=-")
	spaceClass = byteClass("\t\n\f\r ") // RE2's \s
	// prefixChars are the characters the prefixes are made of, and the
	// backslash and u that make a \u escape one level down: an escape
	// that decodes to one of them may make a prefix that the raw bytes
	// do not show.
	prefixChars = byteClass("sk-antcf_bearBEAR\\u")
)

func byteClass(s string) (c [256]bool) {
	for i := range len(s) {
		c[s[i]] = true
	}
	return c
}

// scanShapes appends to out the span of every match of a built-in shape
// in t. With pos, the spans are mapped through it to the original bytes
// (t is then an unescaped view of them, pos as unescapeJSON makes it).
// esc reports that a prefix was followed, where its match ended or
// failed, by an escape that may continue the match in an unescaped view
// of t (see continues), which must then be scanned too: escJSON for a
// JSON escape (the JSON views), escPercent for a %XX (the percent view).
func scanShapes(t []byte, pos []int32, out *[]span) (esc escKind) {
	add := func(start, end int) {
		if pos != nil {
			start, end = int(pos[start]), int(pos[end])
		}
		*out = append(*out, span{start, end})
	}
	for _, k := range [...]struct {
		prefix string
		anchor int // the index in prefix of its rarest byte
		min    int
	}{{prefixAnt, 2, minAnt}, {prefixClient, 2, minClient}} {
		for i := 0; ; {
			n := indexPrefix(t[i:], k.prefix, k.anchor)
			if n < 0 {
				break
			}
			i += n
			j := i + len(k.prefix)
			for j < len(t) && keyClass[t[j]] {
				j++
			}
			esc |= continues(t, j, &keyClass, false)
			if j-i-len(k.prefix) >= k.min {
				add(i, j)
				i = j // a prefix inside the run ends where this match does
				continue
			}
			i++
		}
	}
	f := bearerFinder{t: t, lower: -1, upper: -1}
	for i := 0; ; {
		if i = f.next(i); i < 0 {
			break
		}
		end, stop, space := matchBearer(t, i)
		esc |= continues(t, stop, &tokenClass, space)
		if end > 0 {
			add(i, end)
		}
		i += len(prefixBearer) // "bearer" does not overlap itself; another may start in this one's token
	}
	return esc
}

// matchBearer returns the end of the match of the bearer shape whose
// prefix is at t[i:], or 0; stop is where the scan stopped, space
// whether white space could have gone on there (the token had not
// started).
func matchBearer(t []byte, i int) (end, stop int, space bool) {
	j := i + len(prefixBearer)
	k := j
	for k < len(t) && spaceClass[t[k]] {
		k++
	}
	if k == j {
		return 0, k, true
	}
	n, l := 0, k
	for l < len(t) {
		switch {
		case tokenClass[t[l]]:
			l++
		case t[l] == 0xe2 && l+2 < len(t) && t[l+1] == 0x84 && t[l+2] == 0xaa: // U+212A
			l += 3
		case t[l] == 0xc5 && l+1 < len(t) && t[l+1] == 0xbf: // U+017F
			l += 2
		default:
			if n >= minBearer {
				return l, l, false
			}
			return 0, l, n == 0
		}
		n++
	}
	if n >= minBearer {
		return l, l, false
	}
	return 0, l, n == 0
}

// escKind says which unescaped views an escape may continue a match in.
type escKind uint8

const (
	escJSON    escKind = 1 << iota // a JSON escape: the JSON views
	escPercent                     // a %XX escape: the percent view
)

// continues reports whether the escape at t[j], if one starts there, may
// decode in some unescaped view to a byte that continues a match, and
// which kind of escape it is: one of class, or white space too with
// space. \u and an escaped backslash may (a level down they may be
// anything); \/, \t, \n, \f, \r and %XX by what they decode to; \", \b
// and what is no escape never do.
func continues(t []byte, j int, class *[256]bool, space bool) escKind {
	if j+1 >= len(t) {
		return 0
	}
	var c byte
	kind := escJSON
	switch t[j] {
	case '\\':
		switch t[j+1] {
		case 'u', '\\':
			return escJSON
		case '/':
			c = '/'
		case 't':
			c = '\t'
		case 'n':
			c = '\n'
		case 'f':
			c = '\f'
		case 'r':
			c = '\r'
		default:
			return 0
		}
	case '%':
		if j+2 >= len(t) {
			return 0
		}
		r, ok := hex4([]byte{'0', '0', t[j+1], t[j+2]})
		if !ok {
			return 0
		}
		kind = escPercent
		if c = byte(r); c >= 0x80 {
			return escPercent // part of a U+212A or U+017F, perhaps
		}
	default:
		return 0
	}
	if class[c] || space && spaceClass[c] {
		return kind
	}
	return 0
}

// indexPrefix returns the index of the first prefix in t, or -1,
// skipping from one prefix[anchor] to the next.
func indexPrefix(t []byte, prefix string, anchor int) int {
	c := prefix[anchor]
	for i := anchor; i < len(t); i++ {
		n := bytes.IndexByte(t[i:], c)
		if n < 0 {
			return -1
		}
		i += n
		if s := i - anchor; s+len(prefix) <= len(t) && string(t[s:s+len(prefix)]) == prefix {
			return s
		}
	}
	return -1
}

// bearerFinder finds each "bearer", in any case, in t, skipping from one
// b or B to the next. It keeps where the next of each is from one call to
// the next, so that a text with many b and no B is not searched to its
// end for a B at each "bearer".
type bearerFinder struct {
	t            []byte
	lower, upper int // the next b and B at or after the last i, once looked for
}

// next returns the index of the first "bearer" at or after i, or -1.
func (f *bearerFinder) next(i int) int {
	for i+len(prefixBearer) <= len(f.t) {
		f.lower = nextByte(f.t, i, f.lower, 'b')
		f.upper = nextByte(f.t, i, f.upper, 'B')
		j := min(f.lower, f.upper)
		if isBearer(f.t[j:]) {
			return j
		}
		i = j + 1
	}
	return -1
}

// nextByte returns the index of the first c in t at or after i (len(t)
// if none), given at, the one found last time: still ahead, it is kept.
func nextByte(t []byte, i, at int, c byte) int {
	if at >= i {
		return at
	}
	if n := bytes.IndexByte(t[i:], c); n >= 0 {
		return i + n
	}
	return len(t)
}

// isBearer reports whether t starts with "bearer" in any case.
func isBearer(t []byte) bool {
	if len(t) < len(prefixBearer) {
		return false
	}
	for k := range len(prefixBearer) {
		if t[k]|0x20 != prefixBearer[k] {
			return false
		}
	}
	return true
}

// jsonTrigger reports whether a JSON string escape in b may make a
// secret's prefix once unescaped (one or two levels down): a \uXXXX that
// decodes to a prefix character (or to a backslash or u, which make a
// \u escape at the next level), or an escaped backslash followed by u (a
// \u escape at the next level). Without one, every match in an unescaped
// view has its prefix in the raw bytes, where scanShapes sees it.
func jsonTrigger(b []byte) bool {
	// Look from one u to the next (backslashes are far more common).
	for i := 1; i < len(b); i++ {
		n := bytes.IndexByte(b[i:], 'u')
		if n < 0 {
			return false
		}
		i += n
		run := 0 // the backslashes before this u
		for j := i - 1; j >= 0 && b[j] == '\\'; j-- {
			run++
		}
		switch {
		case run == 0:
		case run%2 == 0: // an escaped backslash, then u: a \u escape one level down
			return true
		default: // a \u escape
			if r, ok := hex4(b[i+1:]); ok && r < 0x80 && prefixChars[r] {
				return true
			}
		}
	}
	return false
}

// percentTrigger reports whether a %XX escape in b decodes to a prefix
// character (the percent view is one level deep).
func percentTrigger(b []byte) bool {
	for i := 0; ; i++ {
		n := bytes.IndexByte(b[i:], '%')
		if n < 0 {
			return false
		}
		i += n
		if i+2 >= len(b) {
			return false
		}
		if r, ok := hex4([]byte{'0', '0', b[i+1], b[i+2]}); ok && prefixChars[r] && r != '\\' && r != 'u' {
			return true
		}
	}
}
