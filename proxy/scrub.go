package proxy

import (
	"bytes"
	"net/http"
	"strings"
)

// minScrubLen keeps short or empty strings out of the secret list: they
// are no credential, and replacing them would mangle answers.
const minScrubLen = 8

// scrubber replaces an account's own credentials (the access token or API
// key it sent, its refresh token) with [REDACTED] in an upstream error
// answer before it is relayed to the client: an upstream that quotes the
// credential back must not hand a client the account's token.
type scrubber struct {
	secrets [][]byte
	longest int
	hold    []byte // the tail that may be the start of a secret
}

func newScrubber(secrets []string) *scrubber {
	s := &scrubber{}
	for _, v := range secrets {
		if len(v) < minScrubLen {
			continue
		}
		s.secrets = append(s.secrets, []byte(v))
		s.longest = max(s.longest, len(v))
	}
	return s
}

func (s *scrubber) empty() bool { return s == nil || len(s.secrets) == 0 }

// bytes returns b with every secret replaced (b itself when none occurs).
func (s *scrubber) bytes(b []byte) []byte {
	for _, v := range s.secrets {
		if bytes.Contains(b, v) {
			b = bytes.ReplaceAll(b, v, []byte(Redacted))
		}
	}
	return b
}

// header returns a copy of h with every value holding a secret scrubbed,
// or h itself when none does.
func (s *scrubber) header(h http.Header) http.Header {
	if s.empty() {
		return h
	}
	var out http.Header
	for k, vs := range h {
		for i, v := range vs {
			w := v
			for _, sec := range s.secrets {
				if strings.Contains(w, string(sec)) {
					w = strings.ReplaceAll(w, string(sec), Redacted)
				}
			}
			if w == v {
				continue
			}
			if out == nil {
				out = h.Clone()
			}
			out[k][i] = w
		}
	}
	if out == nil {
		return h
	}
	return out
}

// next scrubs a chunk of a body that arrives in pieces: it returns what
// can be sent now and keeps back a tail that could be the start of a
// secret completed by the next chunk. end returns that tail.
func (s *scrubber) next(p []byte) []byte {
	buf := s.bytes(append(s.hold, p...))
	keep := min(s.longest-1, len(buf))
	out := buf[:len(buf)-keep]
	s.hold = append([]byte(nil), buf[len(buf)-keep:]...)
	return out
}

func (s *scrubber) end() []byte {
	out := s.bytes(s.hold)
	s.hold = nil
	return out
}
