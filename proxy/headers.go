package proxy

import (
	"net/http"
	"net/textproto"
	"strings"
)

// OAuthBeta is the anthropic-beta flag an OAuth bearer token needs.
const OAuthBeta = "oauth-2025-04-20"

// Redacted replaces a credential in captured headers.
const Redacted = "[REDACTED]"

// hopHeaders are the hop-by-hop headers of RFC 9110 7.6.1 plus the ones
// proxies conventionally drop.
var hopHeaders = []string{
	"Connection",
	"Proxy-Connection",
	"Keep-Alive",
	"Proxy-Authenticate",
	"Proxy-Authorization",
	"Te",
	"Trailer",
	"Transfer-Encoding",
	"Upgrade",
}

// credentialHeaders never leave this process in a capture or a log: their
// values are stored as [REDACTED] whatever they hold.
var credentialHeaders = map[string]bool{
	"Authorization":       true,
	"X-Api-Key":           true,
	"X-Claudeflare-Key":   true,
	"Proxy-Authorization": true,
	"Cookie":              true,
	"Set-Cookie":          true,
}

// removeHopHeaders drops hop-by-hop headers, including those the Connection
// header names.
func removeHopHeaders(h http.Header) {
	for _, v := range h["Connection"] {
		for f := range strings.SplitSeq(v, ",") {
			if f = textproto.TrimString(f); f != "" {
				h.Del(f)
			}
		}
	}
	for _, k := range hopHeaders {
		h.Del(k)
	}
}

// outboundHeader builds the upstream request's headers from the client's:
// hop-by-hop headers, the client's credentials, Host and Accept-Encoding
// dropped. Accept-Encoding is dropped on purpose: Go's transport then asks
// for gzip itself and decompresses transparently, so the client always gets
// a body it can decode (whatever it asked for) and the usage tap sees plain
// bytes. Content-Length is set from the replayable body by the caller.
//
// What identifies the client or its browser stays here too: Cookie, the
// client key header, and the forwarding headers (X-Forwarded-*,
// Forwarded, X-Real-Ip, Via): the upstream is told about the account, not
// about who uses it, and a client cannot plant an address claim the
// upstream might trust.
func outboundHeader(in http.Header) http.Header {
	out := make(http.Header, len(in)+2)
	for k, v := range in {
		switch k {
		case "Authorization", "X-Api-Key", "Host", "Accept-Encoding", "Content-Length",
			"Cookie", "X-Claudeflare-Key", "Forwarded", "X-Forwarded-For", "X-Forwarded-Host",
			"X-Forwarded-Proto", "X-Forwarded-Port", "X-Forwarded-Server", "X-Real-Ip", "Via":
			continue
		}
		out[k] = v // values are not modified in place; sharing is safe
	}
	removeHopHeaders(out)
	return out
}

// setCredentials adds an account's credentials to an outbound header.
func setCredentials(h http.Header, kind, secret string) {
	if kind == "apikey" {
		h["X-Api-Key"] = []string{secret}
		return
	}
	h["Authorization"] = []string{"Bearer " + secret}
	h["Anthropic-Beta"] = []string{mergeBeta(h["Anthropic-Beta"], OAuthBeta)}
}

// mergeBeta is the anthropic-beta value an OAuth request carries: the
// client's one value byte for byte, with flag appended when it is not
// among the value's flags already (the gateway protocol's one exception
// to forwarding anthropic-beta unchanged). Several values (header lines),
// or a value that names flag more than once, are joined into one comma
// list that holds each flag once, in the client's order.
func mergeBeta(vals []string, flag string) string {
	if len(vals) == 1 {
		v := vals[0]
		switch n := countFlag(v, flag); {
		case strings.TrimSpace(v) == "":
			return flag
		case n == 1:
			return v
		case n == 0:
			return v + "," + flag
		}
	}
	var parts []string
	seen := map[string]bool{}
	for _, v := range vals {
		for f := range strings.SplitSeq(v, ",") {
			f = strings.TrimSpace(f)
			if f == "" || seen[f] {
				continue
			}
			seen[f] = true
			parts = append(parts, f)
		}
	}
	if !seen[flag] {
		parts = append(parts, flag)
	}
	return strings.Join(parts, ",")
}

// countFlag counts flag among the comma-separated flags of v.
func countFlag(v, flag string) int {
	n := 0
	for f := range strings.SplitSeq(v, ",") {
		if strings.TrimSpace(f) == flag {
			n++
		}
	}
	return n
}

// copyResponseHeader copies an upstream response's headers to the client,
// less hop-by-hop ones.
func copyResponseHeader(dst, src http.Header) {
	conn := src["Connection"]
	for k, v := range src {
		switch k {
		case "Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
			"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade":
			continue
		}
		if len(conn) > 0 && namedIn(conn, k) {
			continue
		}
		dst[k] = v
	}
}

func namedIn(conn []string, key string) bool {
	for _, v := range conn {
		for f := range strings.SplitSeq(v, ",") {
			if textproto.CanonicalMIMEHeaderKey(textproto.TrimString(f)) == key {
				return true
			}
		}
	}
	return false
}

// redactHeader returns a copy of h fit for a payload capture: credentials
// replaced by [REDACTED], everything else as it was.
func redactHeader(h http.Header) map[string][]string {
	out := make(map[string][]string, len(h))
	for k, v := range h {
		if credentialHeaders[k] {
			r := make([]string, len(v))
			for i := range r {
				r[i] = Redacted
			}
			out[k] = r
			continue
		}
		out[k] = append([]string(nil), v...)
	}
	return out
}
