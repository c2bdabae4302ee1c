package requestlog

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"strconv"

	"github.com/claudeflare/claudeflare/store"
)

// captureDecoder decodes an opened payload, reusing its buffers from one
// payload to the next. A compressed capture (store.SplitCapture) is
// decompressed into one buffer its bodies point into, without a copy. The
// JSON (the whole capture in the old format, the capture without its
// bodies in the compressed one) is read without reflection: the decoder
// knows exactly the shape store writes; anything else (an unknown key, an
// unexpected type) makes it fall back to store.UnmarshalCapture, so it is
// never wrong, only sometimes not faster.
type captureDecoder struct {
	c        store.Capture
	req, res []byte // bodies decoded from base64 (old format)
	plain    []byte // a decompressed capture
}

// decode returns the capture in b. The result and its bodies are valid
// until the next call.
func (d *captureDecoder) decode(b []byte) (*store.Capture, error) {
	meta, req, resp, buf, framed, err := store.SplitCapture(b, d.plain)
	d.plain = buf
	if err != nil {
		return nil, err
	}
	if !framed {
		meta = b
	}
	if !d.fast(meta) {
		return store.UnmarshalCapture(b)
	}
	if framed {
		d.c.Request.Body, d.c.Response.Body = req, resp
	}
	return &d.c, nil
}

func (d *captureDecoder) fast(b []byte) bool {
	s := scanner{b: b}
	d.c = store.Capture{}
	ok := s.object(func(key []byte) bool {
		switch string(key) {
		case "request":
			return d.message(&s, &d.c.Request, &d.req)
		case "response":
			return d.message(&s, &d.c.Response, &d.res)
		}
		return false
	})
	s.ws()
	return ok && s.i == len(s.b)
}

func (d *captureDecoder) message(s *scanner, m *store.CapturedMessage, body *[]byte) bool {
	return s.object(func(key []byte) bool {
		var ok bool
		switch string(key) {
		case "method":
			m.Method, ok = s.str()
		case "path":
			m.Path, ok = s.str()
		case "status":
			var n int64
			n, ok = s.int()
			m.Status = int(n)
		case "headers":
			if s.null() {
				return true
			}
			m.Headers = map[string][]string{}
			ok = s.object(func(name []byte) bool {
				k := string(name)
				if bytes.IndexByte(name, '\\') >= 0 {
					q := make([]byte, 0, len(name)+2)
					q = append(append(append(q, '"'), name...), '"')
					if json.Unmarshal(q, &k) != nil {
						return false
					}
				}
				var vs []string
				if !s.array(func() bool {
					v, ok := s.str()
					vs = append(vs, v)
					return ok
				}) {
					return false
				}
				m.Headers[k] = vs
				return true
			})
		case "body":
			if s.null() {
				return true
			}
			var raw []byte
			if raw, ok = s.rawStr(); !ok {
				return false
			}
			n := base64.StdEncoding.DecodedLen(len(raw))
			if cap(*body) < n {
				*body = make([]byte, n)
			}
			n, err := base64.StdEncoding.Decode((*body)[:n], raw)
			if err != nil {
				return false
			}
			m.Body = (*body)[:n]
		case "body_omitted":
			m.BodyOmitted, ok = s.boolean()
		case "truncated":
			m.Truncated, ok = s.boolean()
		}
		return ok
	})
}

// scanner reads the JSON subset captures use.
type scanner struct {
	b []byte
	i int
}

func (s *scanner) ws() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

func (s *scanner) eat(c byte) bool {
	s.ws()
	if s.i < len(s.b) && s.b[s.i] == c {
		s.i++
		return true
	}
	return false
}

func (s *scanner) null() bool {
	s.ws()
	if bytes.HasPrefix(s.b[s.i:], []byte("null")) {
		s.i += 4
		return true
	}
	return false
}

// object reads {"key": value, ...}, calling field with each raw key (escapes
// not undone) to read its value.
func (s *scanner) object(field func(key []byte) bool) bool {
	if !s.eat('{') {
		return false
	}
	if s.eat('}') {
		return true
	}
	for {
		key, ok := s.rawStr()
		if !ok || !s.eat(':') || !field(key) {
			return false
		}
		if s.eat(',') {
			continue
		}
		return s.eat('}')
	}
}

func (s *scanner) array(elem func() bool) bool {
	if !s.eat('[') {
		return false
	}
	if s.eat(']') {
		return true
	}
	for {
		if !elem() {
			return false
		}
		if s.eat(',') {
			continue
		}
		return s.eat(']')
	}
}

// rawStr returns the bytes between the quotes of a string, escapes and all.
func (s *scanner) rawStr() ([]byte, bool) {
	if !s.eat('"') {
		return nil, false
	}
	start := s.i
	for s.i < len(s.b) {
		switch c := s.b[s.i]; {
		case c == '"':
			s.i++
			return s.b[start : s.i-1], true
		case c == '\\':
			s.i += 2
		case c < 0x20:
			return nil, false
		default:
			s.i++
		}
	}
	return nil, false
}

// str reads a string; escaped ones are unquoted by encoding/json.
func (s *scanner) str() (string, bool) {
	start := s.i
	raw, ok := s.rawStr()
	if !ok {
		return "", false
	}
	if bytes.IndexByte(raw, '\\') < 0 {
		return string(raw), true
	}
	var out string
	if err := json.Unmarshal(s.b[start:s.i], &out); err != nil {
		return "", false
	}
	return out, true
}

func (s *scanner) int() (int64, bool) {
	s.ws()
	start := s.i
	for s.i < len(s.b) && (s.b[s.i] == '-' || s.b[s.i] >= '0' && s.b[s.i] <= '9') {
		s.i++
	}
	n, err := strconv.ParseInt(string(s.b[start:s.i]), 10, 64)
	return n, err == nil
}

func (s *scanner) boolean() (bool, bool) {
	s.ws()
	switch {
	case bytes.HasPrefix(s.b[s.i:], []byte("true")):
		s.i += 4
		return true, true
	case bytes.HasPrefix(s.b[s.i:], []byte("false")):
		s.i += 5
		return false, true
	}
	return false, false
}
