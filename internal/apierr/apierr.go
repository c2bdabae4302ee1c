// Package apierr writes the answers claudeflare makes itself, in
// Anthropic's error shape, and makes the request ids every answer carries.
// The guard (access) and the proxy both answer through Write, so an error
// looks the same whichever of them refused the request.
package apierr

import (
	"encoding/json"
	"math"
	"net/http"
	"strconv"
	"time"
)

// Anthropic's error types: claudeflare answers with them, and the proxy
// reads the upstream's in-stream errors by them.
const (
	InvalidRequest = "invalid_request_error"
	Authentication = "authentication_error"
	Permission     = "permission_error"
	NotFound       = "not_found_error"
	TooLarge       = "request_too_large"
	RateLimit      = "rate_limit_error"
	API            = "api_error"
	Overloaded     = "overloaded_error"
)

// RequestIDHeader carries the request id on every answer.
const RequestIDHeader = "X-Claudeflare-Request-Id"

// Body is Anthropic's error body:
// {"type":"error","error":{"type":"...","message":"..."},"request_id":"..."}.
// The request_id is the answer's x-claudeflare-request-id, as Anthropic's
// errors carry their own request id in the body.
type Body struct {
	Type      string `json:"type"` // always "error"
	Error     Detail `json:"error"`
	RequestID string `json:"request_id,omitempty"`
}

// Detail is the inner object of a Body.
type Detail struct {
	Type    string `json:"type"`
	Message string `json:"message"`
}

// Retry is what x-should-retry tells the client.
type Retry int

const (
	// RetryUnset sends no x-should-retry: the client's own rule for the
	// status applies (Anthropic's SDKs retry 408, 409, 429 and 5xx).
	RetryUnset Retry = iota
	// RetryNo sends x-should-retry: false, where retrying cannot help (a
	// bad client key, no usable account, a reset hours away): Claude Code
	// otherwise retries a 401 for minutes.
	RetryNo
	// RetryYes sends x-should-retry: true, where a retry soon succeeds.
	RetryYes
)

// Reply is one answer claudeflare makes itself.
type Reply struct {
	Status  int
	Type    string // one of the error types above
	Message string
	Retry   Retry
	// RetryAfter, when > 0, is sent as retry-after in whole seconds,
	// rounded up.
	RetryAfter time.Duration
}

// Write answers r in Anthropic's error shape with Content-Type,
// Content-Length, the security headers, x-should-retry as r.Retry says,
// retry-after, and a request id unless the header already holds one; the
// body's request_id is the header's.
func Write(w http.ResponseWriter, r Reply) {
	h := w.Header()
	if h.Get(RequestIDHeader) == "" {
		h.Set(RequestIDHeader, NewID())
	}
	body, _ := json.Marshal(Body{Type: "error", Error: Detail{Type: r.Type, Message: r.Message}, RequestID: h.Get(RequestIDHeader)})
	SecurityHeaders(h)
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	switch r.Retry {
	case RetryNo:
		h.Set("X-Should-Retry", "false")
	case RetryYes:
		h.Set("X-Should-Retry", "true")
	}
	if r.RetryAfter > 0 {
		h.Set("Retry-After", strconv.Itoa(Seconds(r.RetryAfter)))
	}
	w.WriteHeader(r.Status)
	w.Write(body)
}

// Seconds is d in whole seconds, rounded up.
func Seconds(d time.Duration) int {
	return int(math.Ceil(d.Seconds()))
}

// SecurityHeaders sets the headers every answer claudeflare makes itself
// carries. The guard sets them on every route but /v1/*, whose answers
// come from the upstream; Write sets them on every error.
func SecurityHeaders(h http.Header) {
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
}
