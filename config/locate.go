package config

import (
	"slices"
	"strings"
)

// keyLine is a key of a TOML document and the line it is written on.
type keyLine struct {
	key  []string
	line int
}

// findLine returns the line of key in the TOML text: where it is assigned,
// or where its table starts, or failing those where its nearest parent is
// assigned. 0 when it cannot be found. It only needs to work on text the
// TOML parser accepted; on anything else it stops early without panicking.
func findLine(text string, key []string) int {
	if len(key) == 0 {
		return 0
	}
	kls := scanKeys(text)
	for _, kl := range kls {
		if slices.Equal(kl.key, key) {
			return kl.line
		}
	}
	for _, kl := range kls {
		if len(kl.key) > len(key) && slices.Equal(kl.key[:len(key)], key) {
			return kl.line
		}
	}
	best, bestLen := 0, 0
	for _, kl := range kls {
		if len(kl.key) < len(key) && len(kl.key) > bestLen && slices.Equal(key[:len(kl.key)], kl.key) {
			best, bestLen = kl.line, len(kl.key)
		}
	}
	return best
}

// scanKeys lists the keys of a TOML document with their lines: table
// headers, assignments (with the current table as prefix) and the keys of
// inline tables.
func scanKeys(text string) []keyLine {
	s := &keyScanner{s: text, line: 1}
	s.document()
	return s.out
}

type keyScanner struct {
	s     string
	i     int
	line  int
	depth int
	out   []keyLine
}

func (p *keyScanner) eof() bool { return p.i >= len(p.s) }

func (p *keyScanner) peek(c byte) bool { return p.i < len(p.s) && p.s[p.i] == c }

func (p *keyScanner) hasPrefix(x string) bool { return strings.HasPrefix(p.s[p.i:], x) }

// skipSpace skips blanks on the current line.
func (p *keyScanner) skipSpace() {
	for p.i < len(p.s) && (p.s[p.i] == ' ' || p.s[p.i] == '\t') {
		p.i++
	}
}

// skipComment skips a comment up to (not including) the newline.
func (p *keyScanner) skipComment() {
	if p.peek('#') {
		for p.i < len(p.s) && p.s[p.i] != '\n' {
			p.i++
		}
	}
}

// skipBlank skips blanks, newlines and comments.
func (p *keyScanner) skipBlank() {
	for p.i < len(p.s) {
		switch p.s[p.i] {
		case ' ', '\t', '\r':
			p.i++
		case '\n':
			p.i++
			p.line++
		case '#':
			p.skipComment()
		default:
			return
		}
	}
}

func (p *keyScanner) document() {
	var table []string
	for {
		p.skipBlank()
		if p.eof() {
			return
		}
		line := p.line
		if p.peek('[') {
			p.i++
			arr := p.peek('[')
			if arr {
				p.i++
			}
			p.skipSpace()
			k, ok := p.key()
			if !ok {
				return
			}
			p.skipSpace()
			if !p.peek(']') {
				return
			}
			p.i++
			if arr {
				if !p.peek(']') {
					return
				}
				p.i++
			}
			table = k
			p.out = append(p.out, keyLine{k, line})
		} else {
			k, ok := p.key()
			if !ok {
				return
			}
			full := append(append([]string(nil), table...), k...)
			p.skipSpace()
			if !p.peek('=') {
				return
			}
			p.i++
			p.out = append(p.out, keyLine{full, line})
			if !p.value(full) {
				return
			}
		}
		p.skipSpace()
		p.skipComment()
		if p.peek('\r') {
			p.i++
		}
		if !p.eof() && !p.peek('\n') {
			return
		}
	}
}

// key reads a dotted key: bare, "basic" or 'literal' parts.
func (p *keyScanner) key() ([]string, bool) {
	var parts []string
	for {
		p.skipSpace()
		if p.eof() {
			return nil, false
		}
		switch c := p.s[p.i]; {
		case c == '"':
			p.i++
			var b strings.Builder
			for {
				if p.eof() || p.peek('\n') {
					return nil, false
				}
				c := p.s[p.i]
				if c == '"' {
					p.i++
					break
				}
				if c == '\\' && p.i+1 < len(p.s) {
					p.i++
					c = p.s[p.i]
				}
				b.WriteByte(c)
				p.i++
			}
			parts = append(parts, b.String())
		case c == '\'':
			end := strings.IndexAny(p.s[p.i+1:], "'\n")
			if end < 0 || p.s[p.i+1+end] != '\'' {
				return nil, false
			}
			parts = append(parts, p.s[p.i+1:p.i+1+end])
			p.i += end + 2
		default:
			j := p.i
			for j < len(p.s) && isBareKeyChar(p.s[j]) {
				j++
			}
			if j == p.i {
				return nil, false
			}
			parts = append(parts, p.s[p.i:j])
			p.i = j
		}
		p.skipSpace()
		if !p.peek('.') {
			return parts, true
		}
		p.i++
	}
}

func isBareKeyChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-'
}

// value skips one value, recording the keys of inline tables under prefix.
func (p *keyScanner) value(prefix []string) bool {
	p.depth++
	defer func() { p.depth-- }()
	if p.depth > 100 {
		return false
	}
	p.skipSpace()
	if p.eof() {
		return false
	}
	switch {
	case p.hasPrefix(`"""`):
		return p.multiline(`"""`, true)
	case p.hasPrefix(`'''`):
		return p.multiline(`'''`, false)
	case p.peek('"'):
		return p.basicString()
	case p.peek('\''):
		end := strings.IndexAny(p.s[p.i+1:], "'\n")
		if end < 0 || p.s[p.i+1+end] != '\'' {
			return false
		}
		p.i += end + 2
		return true
	case p.peek('['):
		return p.array(prefix)
	case p.peek('{'):
		return p.inlineTable(prefix)
	default:
		j := p.i
		for j < len(p.s) && !strings.ContainsRune(",]}#\r\n", rune(p.s[j])) {
			j++
		}
		if j == p.i {
			return false
		}
		p.i = j
		return true
	}
}

// basicString skips a one-line "..." string at p.i.
func (p *keyScanner) basicString() bool {
	p.i++
	for !p.eof() {
		switch p.s[p.i] {
		case '\\':
			p.i += 2
		case '"':
			p.i++
			return true
		case '\n':
			return false
		default:
			p.i++
		}
	}
	return false
}

// array skips an array at p.i; the keys of inline tables in it are under
// prefix.
func (p *keyScanner) array(prefix []string) bool {
	p.i++
	for {
		p.skipBlank()
		if p.eof() {
			return false
		}
		if p.peek(']') {
			p.i++
			return true
		}
		if !p.value(prefix) {
			return false
		}
		p.skipBlank()
		if p.peek(',') {
			p.i++
		} else if !p.peek(']') {
			return false
		}
	}
}

// inlineTable skips an inline table at p.i, recording its keys (under
// prefix) with their lines.
func (p *keyScanner) inlineTable(prefix []string) bool {
	p.i++
	for {
		p.skipBlank()
		if p.eof() {
			return false
		}
		if p.peek('}') {
			p.i++
			return true
		}
		line := p.line
		k, ok := p.key()
		if !ok {
			return false
		}
		full := append(append([]string(nil), prefix...), k...)
		p.skipSpace()
		if !p.peek('=') {
			return false
		}
		p.i++
		p.out = append(p.out, keyLine{full, line})
		if !p.value(full) {
			return false
		}
		p.skipBlank()
		if p.peek(',') {
			p.i++
		} else if !p.peek('}') {
			return false
		}
	}
}

// multiline skips a multi-line string opened by delim at p.i.
func (p *keyScanner) multiline(delim string, escapes bool) bool {
	p.i += len(delim)
	for !p.eof() {
		switch {
		case escapes && p.peek('\\'):
			p.i++
			if p.peek('\n') {
				p.line++
			}
			p.i++
		case p.hasPrefix(delim):
			p.i += len(delim)
			// Up to two quotes may stand right before the closing delimiter.
			for n := 0; n < 2 && p.peek(delim[0]); n++ {
				p.i++
			}
			return true
		default:
			if p.peek('\n') {
				p.line++
			}
			p.i++
		}
	}
	return false
}
