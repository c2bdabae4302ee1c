// Package target decides a request's target once: the canonical path
// that the access guard authorizes, the muxes route and the proxy
// forwards. Both access and proxy import it; it imports neither.
package target

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strings"
)

// The request target, decided once.
//
// The access guard authorizes a request by its path, the muxes route it
// by its path, and forward sends a path upstream. All three must see the
// same string, or a path that one layer reads as /health and another as
// /v1/... lets a client without a key use an account. So a request is
// served only when its target is already canonical, and the canonical
// path is the one string everyone uses:
//
//   - origin form only: no CONNECT, no absolute form (GET http://x/...),
//     no asterisk form;
//   - the path (before '?') contains only RFC 3986 path characters;
//   - no empty segment (//) but a trailing slash, no . or .. segment;
//   - a percent escape is upper-case hex and never stands for a
//     character that has a plain spelling or that changes the path's
//     structure: no %2F (/), %5C (\), %2E (.), %25 (%), no escaped letter,
//     digit or -_~, no control character;
//   - what net/url decoded from it (r.URL.Path, r.URL.EscapedPath())
//     agrees with it exactly.
//
// The query string is not part of the path and passes through untouched.

// ErrNotCanonical is matched (errors.Is) by every refusal of Path and
// Authorized.
var ErrNotCanonical = errors.New("request target is not canonical")

type targetError struct{ msg string }

func (e *targetError) Error() string        { return e.msg }
func (e *targetError) Is(target error) bool { return target == ErrNotCanonical }

func badTarget(msg string) error { return &targetError{msg: msg} }

// Path returns the path of r's request target in its escaped form (what
// is classified, routed and forwarded), or an error saying why the target
// is refused.
func Path(r *http.Request) (string, error) {
	if r.Method == http.MethodConnect {
		return "", badTarget("claudeflare: CONNECT is not supported; claudeflare is not a forward proxy")
	}
	target := r.RequestURI
	if target == "" && r.URL != nil {
		// A request built in-process rather than read from a connection.
		target = r.URL.RequestURI()
	}
	if !strings.HasPrefix(target, "/") {
		return "", badTarget("claudeflare: the request target must be a path (origin form), not " + targetForm(target))
	}
	raw, _, _ := strings.Cut(target, "?")
	if err := checkPath(raw); err != nil {
		return "", err
	}
	if r.URL == nil || r.URL.Opaque != "" || r.URL.EscapedPath() != raw {
		return "", badTarget("claudeflare: the request path is not in canonical form")
	}
	if dec, err := url.PathUnescape(raw); err != nil || dec != r.URL.Path {
		return "", badTarget("claudeflare: the request path is not in canonical form")
	}
	return raw, nil
}

func targetForm(t string) string {
	switch {
	case t == "*":
		return "*"
	case strings.Contains(t, "://"):
		return "an absolute URL"
	}
	return "an authority"
}

// checkPath applies the byte and segment rules to an escaped path that
// starts with '/'.
func checkPath(p string) error {
	for i := 0; i < len(p); i++ {
		c := p[i]
		switch {
		case c == '%':
			if i+2 >= len(p) || !upperHex(p[i+1]) || !upperHex(p[i+2]) {
				return badTarget("claudeflare: the request path has a malformed or lower-case percent escape")
			}
			d := unhex(p[i+1])<<4 | unhex(p[i+2])
			switch {
			case d == '/' || d == '\\':
				return badTarget("claudeflare: the request path has an escaped slash or backslash (%2F, %5C)")
			case d == '.' || d == '%':
				return badTarget("claudeflare: the request path has an escaped dot or percent sign (%2E, %25)")
			case unreserved(d):
				return badTarget("claudeflare: the request path escapes a character that needs no escape")
			case d < 0x20 || d == 0x7f:
				return badTarget("claudeflare: the request path has an escaped control character")
			}
			i += 2
		case c == '\\':
			return badTarget("claudeflare: the request path has a backslash")
		case !pathChar(c):
			return badTarget("claudeflare: the request path has a character that must be escaped")
		}
	}
	for rest := p[1:]; ; {
		seg, tail, more := strings.Cut(rest, "/")
		switch {
		case seg == "" && more:
			return badTarget("claudeflare: the request path has an empty segment (//)")
		case seg == "." || seg == "..":
			return badTarget("claudeflare: the request path has a dot segment (. or ..)")
		}
		if !more {
			return nil
		}
		rest = tail
	}
}

func upperHex(c byte) bool { return c >= '0' && c <= '9' || c >= 'A' && c <= 'F' }

func unhex(c byte) byte {
	if c <= '9' {
		return c - '0'
	}
	return c - 'A' + 10
}

func unreserved(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~'
}

// pathChar reports whether c may stand unescaped in a path: pchar of
// RFC 3986 and '/'.
func pathChar(c byte) bool {
	if unreserved(c) {
		return true
	}
	switch c {
	case '/', ':', '@', '!', '$', '&', '\'', '(', ')', '*', '+', ',', ';', '=':
		return true
	}
	return false
}

type ctxKey struct{}

// WithAuthorized records in ctx the canonical path a guard in front of
// the proxy authorized; the proxy refuses to serve a request whose own
// canonical path differs from it.
func WithAuthorized(ctx context.Context, path string) context.Context {
	return context.WithValue(ctx, ctxKey{}, path)
}

// AuthorizedFrom returns the path recorded by WithAuthorized.
func AuthorizedFrom(ctx context.Context) (string, bool) {
	p, ok := ctx.Value(ctxKey{}).(string)
	return p, ok
}

// Authorized is Path, refused also when a guard recorded
// (WithAuthorized) a different path for r.
func Authorized(r *http.Request) (string, error) {
	p, err := Path(r)
	if err != nil {
		return "", err
	}
	if authorized, ok := AuthorizedFrom(r.Context()); ok && authorized != p {
		return "", badTarget("claudeflare: the request path changed after it was authorized")
	}
	return p, nil
}
