// Package fakeapi is an in-process fake of the Anthropic API for tests and
// benchmarks: the OAuth token endpoint with rotating refresh tokens, the
// create_api_key endpoint, /v1/messages as JSON and as server-sent events,
// unified rate-limit headers, a request recorder and fault injection.
//
// A Server is a real HTTP server on 127.0.0.1 (httptest). Every method is
// safe for concurrent use, including while requests are in flight.
//
//	s := fakeapi.New()
//	defer s.Close()
//	refresh := s.NewOAuthAccount("work")
//	// point the code under test at s.URL and s.TokenURL()
package fakeapi

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Paths served by the fake.
const (
	TokenPath        = "/v1/oauth/token"
	CreateAPIKeyPath = "/api/oauth/claude_cli/create_api_key"
	MessagesPath     = "/v1/messages"
	CountTokensPath  = "/v1/messages/count_tokens"
	ModelsPath       = "/v1/models"
)

// OAuthBeta is the anthropic-beta value an OAuth bearer request must carry.
const OAuthBeta = "oauth-2025-04-20"

// UnifiedPrefix starts the name of every unified rate-limit header.
const UnifiedPrefix = "anthropic-ratelimit-unified-"

// Defaults of a new Server.
const (
	DefaultExpiresIn   = 8 * time.Hour
	DefaultDeltas      = 3
	DefaultChunk       = 16
	DefaultMaxRecorded = 4096
	// MaxRequestBody caps the request body the fake reads (64 MiB).
	MaxRequestBody = 64 << 20
)

// DefaultUsage is the usage every message reports until SetUsage.
var DefaultUsage = Usage{
	InputTokens:              25,
	OutputTokens:             12,
	CacheReadInputTokens:     100,
	CacheCreationInputTokens: 50,
}

// Usage is the token usage reported by a message (JSON field names as
// Anthropic sends them).
type Usage struct {
	InputTokens              int `json:"input_tokens"`
	OutputTokens             int `json:"output_tokens"`
	CacheReadInputTokens     int `json:"cache_read_input_tokens"`
	CacheCreationInputTokens int `json:"cache_creation_input_tokens"`
	// CacheCreation and ServerToolUse are sent when set (usage_extra.go).
	CacheCreation *CacheCreation `json:"cache_creation,omitempty"`
	ServerToolUse *ServerToolUse `json:"server_tool_use,omitempty"`
}

// Recorded is one request the fake received.
type Recorded struct {
	Time     time.Time   // arrival, by the server clock
	Method   string      // e.g. "POST"
	Path     string      // URL path, e.g. "/v1/messages"
	RawQuery string      // e.g. "beta=true"
	Header   http.Header // a clone of the request headers
	Body     []byte      // the request body (up to MaxRequestBody)
	// Account is the fake account the credentials (bearer token, API key,
	// refresh token or authorization code) resolved to; "" if none did.
	Account string
	// Status is the response status; 0 while the request is in flight or
	// when the fake dropped the connection without answering.
	Status int
}

// Server is the fake Anthropic API. Create it with New.
type Server struct {
	// URL is the base URL, e.g. "http://127.0.0.1:41234".
	URL string

	// Now is the clock used for token expiry and rate-limit resets
	// (nil = time.Now). Assign it before sending requests, or use SetNow
	// to change it while requests are in flight.
	Now func() time.Time

	srv      *httptest.Server
	inFlight atomic.Int64

	mu            sync.Mutex
	start         time.Time
	accounts      map[string]*account
	refreshTokens map[string]*refreshToken
	accessTokens  map[string]*accessToken
	apiKeys       map[string]string // key -> account name
	codes         map[string]*authCode
	allTokens     []string

	expiresIn      time.Duration
	tokenDelay     time.Duration
	tokenFaults    []*TokenFault
	tokenGates     []*Gate
	streamGates    []*Gate
	gates          []*Gate // every gate handed out, released by Close
	tokenRequests  int
	totalRefreshes int

	usage       Usage
	deltas      int
	chunk       int
	eventDelay  time.Duration
	encoding    string
	faults      []*Fault
	records     []*Recorded
	maxRecorded int
	budgets     map[string]*budget // budget.go
	owned       map[string]string  // batches.go: batch or file id -> account
	usageCalls  map[string]int     // budget.go
}

type account struct {
	name      string
	created   time.Time
	refresh   string // the refresh token issued last
	access    string // the access token issued last
	refreshes int
	unified   map[string]string

	// Lasting answers of the routing work (routing.go).
	modelLimits  map[string]time.Time // family -> unified reset
	overage      overage
	refusal      *refusal
	refuseAccess bool // every access token answers 401
	keysRevoked  bool // every API key answers 401
}

type refreshToken struct {
	account string
	live    bool
}

type accessToken struct {
	account string
	expires time.Time
	revoked bool
}

type authCode struct {
	account   string
	used      bool
	challenge string
}

// New starts a fake API on 127.0.0.1. Close it when done.
func New() *Server {
	s := &Server{
		accounts:      make(map[string]*account),
		refreshTokens: make(map[string]*refreshToken),
		accessTokens:  make(map[string]*accessToken),
		apiKeys:       make(map[string]string),
		codes:         make(map[string]*authCode),
		expiresIn:     DefaultExpiresIn,
		usage:         DefaultUsage,
		deltas:        DefaultDeltas,
		chunk:         DefaultChunk,
		maxRecorded:   DefaultMaxRecorded,
	}
	s.start = time.Now()
	s.srv = httptest.NewServer(http.HandlerFunc(s.serveHTTP))
	s.URL = s.srv.URL
	return s
}

// Close shuts the server down, closing any connection still open.
func (s *Server) Close() {
	s.releaseGates()
	s.srv.CloseClientConnections()
	s.srv.Close()
}

// TokenURL is the OAuth token endpoint, s.URL + TokenPath.
func (s *Server) TokenURL() string { return s.URL + TokenPath }

// Client returns an *http.Client suited to the server (no proxy, keep-alive).
func (s *Server) Client() *http.Client { return s.srv.Client() }

// InFlight is the number of requests being handled right now.
func (s *Server) InFlight() int { return int(s.inFlight.Load()) }

// SetNow replaces the clock; safe while requests are in flight.
func (s *Server) SetNow(now func() time.Time) {
	s.mu.Lock()
	s.Now = now
	s.mu.Unlock()
}

// nowLocked reads the clock; s.mu must be held.
func (s *Server) nowLocked() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

func (s *Server) now() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.nowLocked()
}

// accountLocked returns the named account, creating it if needed.
func (s *Server) accountLocked(name string) *account {
	a := s.accounts[name]
	if a == nil {
		a = &account{name: name, created: s.nowLocked()}
		s.accounts[name] = a
	}
	return a
}

// randomString returns n random base64url characters.
func randomString(n int) string {
	b := make([]byte, (n*6+7)/8+1)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)[:n]
}

func randomID(prefix string) string {
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

func (s *Server) issueRefreshLocked(a *account) string {
	tok := "sk-ant-ort01-" + randomString(86) + "AA"
	s.refreshTokens[tok] = &refreshToken{account: a.name, live: true}
	s.allTokens = append(s.allTokens, tok)
	a.refresh = tok
	return tok
}

func (s *Server) issueAccessLocked(a *account) string {
	tok := "sk-ant-oat01-" + randomString(86) + "AA"
	s.accessTokens[tok] = &accessToken{account: a.name, expires: s.nowLocked().Add(s.expiresIn)}
	s.allTokens = append(s.allTokens, tok)
	a.access = tok
	return tok
}

func (s *Server) issueAPIKeyLocked(a *account) string {
	key := "sk-ant-api03-" + randomString(93) + "AA"
	s.apiKeys[key] = a.name
	s.allTokens = append(s.allTokens, key)
	return key
}

// NewOAuthAccount creates the named OAuth account if needed and issues a
// live refresh token for it. Tokens issued earlier stay live.
func (s *Server) NewOAuthAccount(name string) (refresh string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.issueRefreshLocked(s.accountLocked(name))
}

// NewAccessToken issues a live access token for the named account directly,
// without a refresh (it expires after the SetExpiresIn duration).
func (s *Server) NewAccessToken(name string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.issueAccessLocked(s.accountLocked(name))
}

// NewAPIKey issues an API key (sent as x-api-key) for the named account.
func (s *Server) NewAPIKey(name string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.issueAPIKeyLocked(s.accountLocked(name))
}

// NewAuthCode issues a single-use authorization code for the named account,
// as the user would paste it (without "#state").
func (s *Server) NewAuthCode(name string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	a := s.accountLocked(name)
	code := randomString(64)
	s.codes[code] = &authCode{account: a.name}
	s.allTokens = append(s.allTokens, code)
	return code
}

// ExpectChallenge makes the exchange of code require a code_verifier whose
// base64url(sha256) equals challenge.
func (s *Server) ExpectChallenge(code, challenge string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c := s.codes[code]; c != nil {
		c.challenge = challenge
	}
}

// CurrentRefreshToken is the refresh token issued last for the account ("" if none).
func (s *Server) CurrentRefreshToken(name string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if a := s.accounts[name]; a != nil {
		return a.refresh
	}
	return ""
}

// CurrentAccessToken is the access token issued last for the account ("" if none).
func (s *Server) CurrentAccessToken(name string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if a := s.accounts[name]; a != nil {
		return a.access
	}
	return ""
}

// RefreshLive reports whether the refresh token would be accepted now.
func (s *Server) RefreshLive(token string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	rt := s.refreshTokens[token]
	return rt != nil && rt.live
}

// ExpireAccessTokens revokes every access token of the account, so the next
// request with one gets 401 and needs a refresh; refresh tokens stay live.
func (s *Server) ExpireAccessTokens(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, at := range s.accessTokens {
		if at.account == name {
			at.revoked = true
		}
	}
}

// RevokeAccount kills every access and refresh token of the account: the
// next refresh gets invalid_grant (the account needs a new login).
func (s *Server) RevokeAccount(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, at := range s.accessTokens {
		if at.account == name {
			at.revoked = true
		}
	}
	for _, rt := range s.refreshTokens {
		if rt.account == name {
			rt.live = false
		}
	}
}

// RefreshCount is the number of successful refresh_token grants of the account.
func (s *Server) RefreshCount(name string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if a := s.accounts[name]; a != nil {
		return a.refreshes
	}
	return 0
}

// TotalRefreshes is the number of successful refresh_token grants of all accounts.
func (s *Server) TotalRefreshes() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.totalRefreshes
}

// TokenRequests is the number of requests the token endpoint received,
// whatever their outcome.
func (s *Server) TokenRequests() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.tokenRequests
}

// AllTokens lists every secret the fake ever issued: refresh and access
// tokens, API keys and authorization codes, for "appears nowhere" checks.
func (s *Server) AllTokens() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.allTokens...)
}

// SetExpiresIn sets the lifetime of access tokens issued from now on, as
// sent in expires_in (whole seconds; zero or negative values are sent as
// they are, to test validation).
func (s *Server) SetExpiresIn(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.expiresIn = d
}

// SetTokenDelay makes the token endpoint wait d before answering. A
// refresh token is rotated when the request arrives, before the wait, so
// two concurrent refreshes of one token get one success and one
// invalid_grant, as with the real endpoint.
func (s *Server) SetTokenDelay(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tokenDelay = d
}

// SetUsage sets the usage reported by every message from now on.
func (s *Server) SetUsage(u Usage) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.usage = u
}

// SetStreamShape sets the number of content_block_delta events and the
// size in bytes of the text of each. The non-streamed message text is the
// same text (ResponseText).
func (s *Server) SetStreamShape(deltas, chunk int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.deltas = max(deltas, 0)
	s.chunk = max(chunk, 0)
}

// SetEventDelay makes a stream wait d before each event after the first.
func (s *Server) SetEventDelay(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.eventDelay = d
}

// SetContentEncoding makes /v1 responses compressed with enc ("gzip" or
// "deflate") when the request's Accept-Encoding allows it; "" turns it off.
func (s *Server) SetContentEncoding(enc string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.encoding = enc
}

// ResponseText is the assistant text every message currently carries.
func (s *Server) ResponseText() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Repeat(chunkText(s.chunk), s.deltas)
}

const textPattern = "The quick brown fox jumps over the lazy dog. "

func chunkText(n int) string {
	var b strings.Builder
	b.Grow(n)
	for b.Len() < n {
		b.WriteString(textPattern[:min(len(textPattern), n-b.Len())])
	}
	return b.String()
}

// SetUnified overrides unified rate-limit headers for the account. Keys are
// full header names (see UnifiedPrefix and RateLimitHeaders); values merge
// over the defaults and earlier overrides, and an empty value removes the
// header from the account's responses.
func (s *Server) SetUnified(name string, headers map[string]string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	a := s.accountLocked(name)
	if a.unified == nil {
		a.unified = make(map[string]string)
	}
	for k, v := range headers {
		a.unified[strings.ToLower(k)] = v
	}
}

// RateLimitHeaders builds unified rate-limit headers for status ("allowed",
// "allowed_warning" or "rejected") resetting at reset, for SetUnified and
// Fault.Headers. It sets no retry-after: add one when the test wants it.
func RateLimitHeaders(status string, reset time.Time) map[string]string {
	r := strconv.FormatInt(reset.Unix(), 10)
	h := map[string]string{
		UnifiedPrefix + "status":               status,
		UnifiedPrefix + "reset":                r,
		UnifiedPrefix + "5h-status":            status,
		UnifiedPrefix + "5h-reset":             r,
		UnifiedPrefix + "representative-claim": "five_hour",
	}
	switch status {
	case "rejected":
		h[UnifiedPrefix+"5h-utilization"] = "1.0"
	case "allowed_warning":
		h[UnifiedPrefix+"5h-utilization"] = "0.9"
	}
	return h
}

// nextReset is the first instant after now of the windows of length w that
// started at start.
func nextReset(start, now time.Time, w time.Duration) time.Time {
	if now.Before(start) {
		return start.Add(w)
	}
	n := now.Sub(start)/w + 1
	return start.Add(n * w)
}

// unifiedLocked computes the rate-limit headers for the named account ("" =
// no account).
func (s *Server) unifiedLocked(name string) map[string]string {
	now := s.nowLocked()
	start := s.start
	a := s.accounts[name]
	if a != nil {
		start = a.created
	}
	r5 := strconv.FormatInt(nextReset(start, now, 5*time.Hour).Unix(), 10)
	r7 := strconv.FormatInt(nextReset(start, now, 7*24*time.Hour).Unix(), 10)
	h := map[string]string{
		UnifiedPrefix + "status":               "allowed",
		UnifiedPrefix + "reset":                r5,
		UnifiedPrefix + "5h-status":            "allowed",
		UnifiedPrefix + "5h-reset":             r5,
		UnifiedPrefix + "5h-utilization":       "0.02",
		UnifiedPrefix + "7d-status":            "allowed",
		UnifiedPrefix + "7d-reset":             r7,
		UnifiedPrefix + "7d-utilization":       "0.01",
		UnifiedPrefix + "representative-claim": "five_hour",
		UnifiedPrefix + "fallback-percentage":  "0.5",
	}
	if a != nil {
		applyHeaderMap(h, a.unified)
	}
	return h
}

// applyHeaderMap merges src into dst; an empty value deletes.
func applyHeaderMap(dst, src map[string]string) {
	for k, v := range src {
		k = strings.ToLower(k)
		if v == "" {
			delete(dst, k)
		} else {
			dst[k] = v
		}
	}
}

func setHeaders(h http.Header, m map[string]string) {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		h.Set(k, m[k])
	}
}
