package proxy

import (
	"encoding/json"
	"net/http"
	"strconv"
)

// Anthropic error types used by the proxy's own answers.
const (
	errInvalidRequest = "invalid_request_error"
	errAuthentication = "authentication_error"
	errPermission     = "permission_error"
	errNotFound       = "not_found_error"
	errTooLarge       = "request_too_large"
	errRateLimit      = "rate_limit_error"
	errAPI            = "api_error"
	errOverloaded     = "overloaded_error"
)

// APIError is Anthropic's error body.
type APIError struct {
	Type  string       `json:"type"` // always "error"
	Error APIErrorBody `json:"error"`
}

// APIErrorBody is the inner object of an APIError.
type APIErrorBody struct {
	Type    string `json:"type"`
	Message string `json:"message"`
}

// apiReply is one answer the proxy makes itself.
type apiReply struct {
	Status     int
	Type       string
	Message    string
	NoRetry    bool // x-should-retry: false
	Retry      bool // x-should-retry: true
	RetryAfter int  // seconds; 0 = no header
}

// writeAPIError answers in Anthropic's error shape.
func writeAPIError(w http.ResponseWriter, r apiReply) {
	body, _ := json.Marshal(APIError{Type: "error", Error: APIErrorBody{Type: r.Type, Message: r.Message}})
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	switch {
	case r.NoRetry:
		h.Set("X-Should-Retry", "false")
	case r.Retry:
		h.Set("X-Should-Retry", "true")
	}
	if r.RetryAfter > 0 {
		h.Set("Retry-After", strconv.Itoa(r.RetryAfter))
	}
	w.WriteHeader(r.Status)
	w.Write(body)
}
