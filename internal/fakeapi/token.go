package fakeapi

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Scope is the scope the token endpoint reports.
const Scope = "org:create_api_key user:profile user:inference"

// TokenFault makes the token endpoint answer the next Count requests
// (0 = 1) with Status, Headers and Body instead of doing its work. With an
// empty Body the answer is an OAuth error {"error","error_description"}
// matching Status. Reset drops the connection without an answer instead.
type TokenFault struct {
	Count   int
	Status  int
	Headers map[string]string
	Body    string
	Reset   bool
}

// FailTokenEndpoint makes the next n token requests answer status with an
// OAuth-shaped error body.
func (s *Server) FailTokenEndpoint(status, n int) {
	s.InjectTokenFault(TokenFault{Count: n, Status: status})
}

// BlockedPage is the HTML page BlockTokenEndpoint answers with, as a
// CDN's bot protection would.
const BlockedPage = "<!DOCTYPE html><html><head><title>Attention Required!</title></head>" +
	"<body><h1>Sorry, you have been blocked</h1><script>window.x=1</script></body></html>"

// BlockTokenEndpoint makes the next n token requests answer 403 with an
// HTML page (BlockedPage) instead of JSON.
func (s *Server) BlockTokenEndpoint(n int) {
	s.InjectTokenFault(TokenFault{Count: n, Status: http.StatusForbidden, Body: BlockedPage,
		Headers: map[string]string{"content-type": "text/html; charset=UTF-8"}})
}

// RateLimitTokenEndpoint makes the next n token requests answer 429 with
// an OAuth-shaped JSON error and, when retryAfter > 0, a retry-after
// header in whole seconds.
func (s *Server) RateLimitTokenEndpoint(n int, retryAfter time.Duration) {
	f := TokenFault{Count: n, Status: http.StatusTooManyRequests}
	if retryAfter > 0 {
		f.Headers = map[string]string{"retry-after": strconv.Itoa(int(retryAfter / time.Second))}
	}
	s.InjectTokenFault(f)
}

// ClearTokenFaults drops every queued token fault.
func (s *Server) ClearTokenFaults() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tokenFaults = nil
}

// InjectTokenFault queues f; faults apply in the order injected.
func (s *Server) InjectTokenFault(f TokenFault) {
	if f.Count <= 0 {
		f.Count = 1
	}
	if f.Status == 0 {
		f.Status = http.StatusInternalServerError
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tokenFaults = append(s.tokenFaults, &f)
}

func (s *Server) takeTokenFaultLocked() *TokenFault {
	if len(s.tokenFaults) == 0 {
		return nil
	}
	f := s.tokenFaults[0]
	f.Count--
	if f.Count <= 0 {
		s.tokenFaults = s.tokenFaults[1:]
	}
	return f
}

type tokenRequest struct {
	GrantType    string `json:"grant_type"`
	ClientID     string `json:"client_id"`
	Code         string `json:"code"`
	State        string `json:"state"`
	RedirectURI  string `json:"redirect_uri"`
	CodeVerifier string `json:"code_verifier"`
	RefreshToken string `json:"refresh_token"`
}

type tokenAnswer struct {
	status int
	body   any
}

func oauthError(status int, code, desc string) tokenAnswer {
	return tokenAnswer{status, map[string]string{"error": code, "error_description": desc}}
}

func oauthCodeFor(status int) string {
	switch {
	case status == http.StatusBadRequest:
		return "invalid_request"
	case status == http.StatusUnauthorized:
		return "invalid_client"
	case status == http.StatusTooManyRequests:
		return "rate_limit_exceeded"
	case status >= 500:
		return "server_error"
	}
	return "invalid_request"
}

func (s *Server) handleToken(w http.ResponseWriter, r *http.Request, body []byte, rec *Recorded) {
	s.mu.Lock()
	s.tokenRequests++
	f := s.takeTokenFaultLocked()
	delay := s.tokenDelay
	s.mu.Unlock()

	if f != nil {
		if !sleepCtx(r, delay) {
			return
		}
		if f.Reset {
			resetConn(w, false)
			return
		}
		if f.Body == "" {
			writeJSON(w, f.Status, map[string]string{
				"error":             oauthCodeFor(f.Status),
				"error_description": http.StatusText(f.Status),
			}, f.Headers)
			return
		}
		h := map[string]string{"content-type": "application/json"}
		applyHeaderMap(h, f.Headers)
		setHeaders(w.Header(), h)
		w.WriteHeader(f.Status)
		_, _ = w.Write([]byte(f.Body))
		return
	}

	ans := s.tokenAnswer(r, body, rec)
	if g := s.takeTokenGate(); g != nil && !g.wait(r) {
		return
	}
	if !sleepCtx(r, delay) {
		return
	}
	writeJSON(w, ans.status, ans.body, nil)
}

func (s *Server) tokenAnswer(r *http.Request, body []byte, rec *Recorded) tokenAnswer {
	if r.Method != http.MethodPost {
		return oauthError(http.StatusMethodNotAllowed, "invalid_request", "method not allowed")
	}
	if !strings.HasPrefix(r.Header.Get("Content-Type"), "application/json") {
		return oauthError(http.StatusBadRequest, "invalid_request", "content-type must be application/json")
	}
	var req tokenRequest
	if err := json.Unmarshal(body, &req); err != nil {
		return oauthError(http.StatusBadRequest, "invalid_request", "request body is not valid JSON")
	}
	if req.ClientID == "" {
		return oauthError(http.StatusBadRequest, "invalid_request", "client_id is required")
	}
	switch req.GrantType {
	case "refresh_token":
		return s.refreshGrant(req, rec)
	case "authorization_code":
		return s.codeGrant(req, rec)
	case "":
		return oauthError(http.StatusBadRequest, "invalid_request", "grant_type is required")
	}
	return oauthError(http.StatusBadRequest, "unsupported_grant_type", "unsupported grant_type")
}

func (s *Server) refreshGrant(req tokenRequest, rec *Recorded) tokenAnswer {
	if req.RefreshToken == "" {
		return oauthError(http.StatusBadRequest, "invalid_request", "refresh_token is required")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	rt := s.refreshTokens[req.RefreshToken]
	if rt != nil && rec != nil {
		rec.Account = rt.account
	}
	if rt == nil || !rt.live {
		return oauthError(http.StatusBadRequest, "invalid_grant", "Invalid refresh token")
	}
	rt.live = false
	a := s.accountLocked(rt.account)
	a.refreshes++
	s.totalRefreshes++
	return s.grantLocked(a, false)
}

func (s *Server) codeGrant(req tokenRequest, rec *Recorded) tokenAnswer {
	switch {
	case req.Code == "":
		return oauthError(http.StatusBadRequest, "invalid_request", "code is required")
	case req.CodeVerifier == "":
		return oauthError(http.StatusBadRequest, "invalid_request", "code_verifier is required")
	case req.RedirectURI == "":
		return oauthError(http.StatusBadRequest, "invalid_request", "redirect_uri is required")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.codes[req.Code]
	if c != nil && rec != nil {
		rec.Account = c.account
	}
	if c == nil || c.used {
		return oauthError(http.StatusBadRequest, "invalid_grant", "Invalid 'code' in request.")
	}
	if c.challenge != "" {
		sum := sha256.Sum256([]byte(req.CodeVerifier))
		got := base64.RawURLEncoding.EncodeToString(sum[:])
		if subtle.ConstantTimeCompare([]byte(got), []byte(c.challenge)) != 1 {
			return oauthError(http.StatusBadRequest, "invalid_grant", "Invalid code verifier")
		}
	}
	c.used = true
	return s.grantLocked(s.accountLocked(c.account), true)
}

// grantLocked issues a new access and refresh token pair.
func (s *Server) grantLocked(a *account, withAccount bool) tokenAnswer {
	body := map[string]any{
		"token_type":    "Bearer",
		"access_token":  s.issueAccessLocked(a),
		"refresh_token": s.issueRefreshLocked(a),
		"expires_in":    int64(s.expiresIn / time.Second),
		"scope":         Scope,
	}
	if withAccount {
		body["account"] = map[string]string{
			"uuid":          uuidFor(a.name),
			"email_address": a.name + "@example.com",
		}
		body["organization"] = map[string]string{
			"uuid": uuidFor("org-" + a.name),
			"name": a.name + "'s Organization",
		}
	}
	return tokenAnswer{http.StatusOK, body}
}

// uuidFor derives a stable UUID-shaped id from name.
func uuidFor(name string) string {
	sum := sha256.Sum256([]byte(name))
	b := sum[:16]
	const hexd = "0123456789abcdef"
	var out []byte
	for i, c := range b {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			out = append(out, '-')
		}
		out = append(out, hexd[c>>4], hexd[c&15])
	}
	return string(out)
}

func (s *Server) handleCreateAPIKey(w http.ResponseWriter, r *http.Request, rec *Recorded) {
	if r.Method != http.MethodPost {
		writeAPIError(w, http.StatusMethodNotAllowed, "invalid_request_error", "Method not allowed", nil)
		return
	}
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	s.mu.Lock()
	at := s.accessTokens[tok]
	var key string
	var msg string
	switch {
	case !ok || tok == "":
		msg = "Missing bearer token"
	case at == nil:
		msg = "Invalid bearer token"
	case at.revoked || !s.nowLocked().Before(at.expires):
		msg = "OAuth token has expired. Please obtain a new token or refresh your existing token."
		if rec != nil {
			rec.Account = at.account
		}
	default:
		if rec != nil {
			rec.Account = at.account
		}
		key = s.issueAPIKeyLocked(s.accountLocked(at.account))
	}
	s.mu.Unlock()
	if key == "" {
		writeAPIError(w, http.StatusUnauthorized, "authentication_error", msg, nil)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"raw_key": key}, nil)
}
