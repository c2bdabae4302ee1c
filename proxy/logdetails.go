package proxy

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net"
	"net/http"
	"strings"
)

// The log's session column names the session a request belongs to by a
// short hash of its affinity key (issue 15), never the key itself. The key
// is built here (affinityKey), and the selector routes by it too.

// logSessionHeader is the header Claude Code stamps on every request.
const logSessionHeader = "X-Claude-Code-Session-Id"

// logSessionKeyMax bounds the part of a key taken from the client.
const logSessionKeyMax = 128

// affinityKey is the session key of r: "s:" and Claude Code's session
// (its header, else the session in the body's metadata.user_id), else "c:"
// and the client (the log's client column: key name or address), else "a:"
// and the remote address; each part cut to logSessionKeyMax bytes.
func affinityKey(r *http.Request, body []byte, client string) string {
	clip := func(s string) string {
		if len(s) > logSessionKeyMax {
			return s[:logSessionKeyMax]
		}
		return s
	}
	if v := strings.TrimSpace(r.Header.Get(logSessionHeader)); v != "" {
		return "s:" + clip(v)
	}
	if v := metadataSession(body); v != "" {
		return "s:" + clip(v)
	}
	if client != "" {
		return "c:" + clip(client)
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	return "a:" + clip(host)
}

// metadataSession is the session id in the top-level metadata.user_id of
// a JSON body (see userIDSession), "" when none.
// Only the top level is read, every other value skipped undecoded; it
// runs only when the session header is missing.
func metadataSession(body []byte) string {
	body = bytes.TrimSpace(body)
	if len(body) == 0 || body[0] != '{' {
		return ""
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	if _, err := dec.Token(); err != nil {
		return ""
	}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return ""
		}
		if key, _ := tok.(string); key == "metadata" {
			var m struct {
				UserID string `json:"user_id"`
			}
			if dec.Decode(&m) != nil {
				return ""
			}
			return userIDSession(m.UserID)
		}
		var skip json.RawMessage
		if dec.Decode(&skip) != nil {
			return ""
		}
	}
	return ""
}

// sessionHashLen is the hex digits of a session's hash the log keeps: 48
// bits, enough to tell a day's sessions apart, too few to stand for the key.
const sessionHashLen = 12

// sessionHash is the log's name for a session key (affinityKey): the first
// 12 hex digits of its SHA-256 (domain-separated), "" for no key. It is
// stable across restarts so that a log can be replayed by session, and
// never the key itself.
func sessionHash(key string) string {
	if key == "" {
		return ""
	}
	h := sha256.New()
	h.Write([]byte("claudeflare session\x00"))
	h.Write([]byte(key))
	return hex.EncodeToString(h.Sum(nil))[:sessionHashLen]
}

// logDetails fills the row's columns that are known only at the end: the
// session, and the requested model when the answer named none (a failed
// request is logged with the model it asked for).
func (x *exchange) logDetails() {
	key := x.rt.key // the key the selector routed by, when it got that far
	if key == "" {
		key = affinityKey(x.r, x.body, x.row.Client)
	}
	x.row.Session = sessionHash(key)
	if x.row.Model == "" {
		x.row.Model = x.model // read by serve; "" when the body was not read
	}
	x.row.CostUSD = x.s.costs.of(&x.row) // before the observer and OnRecord see the row
}

// maxUpstreamRequestID bounds the request-id header kept.
const maxUpstreamRequestID = 128

// upstreamRequestID is the upstream's request-id header of resp ("" when
// there is no response): the id Anthropic's support asks for.
func upstreamRequestID(resp *http.Response) string {
	if resp == nil {
		return ""
	}
	id := strings.TrimSpace(resp.Header.Get("Request-Id"))
	if len(id) > maxUpstreamRequestID {
		id = id[:maxUpstreamRequestID]
	}
	return id
}

// userIDSession is the session named in a metadata.user_id: Claude Code
// writes "user_<hash>_account_<uuid>_session_<uuid>", newer versions a
// JSON object with "session_id". "" when it names none.
func userIDSession(uid string) string {
	uid = strings.TrimSpace(uid)
	if strings.HasPrefix(uid, "{") {
		var v struct {
			SessionID string `json:"session_id"`
		}
		if json.Unmarshal([]byte(uid), &v) != nil {
			return ""
		}
		return strings.TrimSpace(v.SessionID)
	}
	if j := strings.LastIndex(uid, "_session_"); j >= 0 {
		return strings.TrimSpace(uid[j+len("_session_"):])
	}
	return ""
}
