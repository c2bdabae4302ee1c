package oauth

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// MaxResponse caps how much of an answer is read (1 MiB).
const MaxResponse = 1 << 20

// DefaultTimeout bounds a request when Client.HTTP is nil.
const DefaultTimeout = 30 * time.Second

var defaultHTTP = &http.Client{Timeout: DefaultTimeout}

// ErrInvalidGrant is matched (errors.Is) by the error of an endpoint
// answering "invalid_grant": the refresh token or code is dead and the
// account needs a new login.
var ErrInvalidGrant = errors.New("invalid_grant: the grant is no longer valid, log in again")

// ErrRefreshBlocked is matched (errors.Is) by the error of a token
// endpoint that refused the request as blocked: a 403 or a 429, whatever
// the body (JSON or an HTML page), unless it names invalid_grant. The
// grant was not used: the same refresh token stays good for a later try,
// after a backoff (Error.RetryAfter, when sent).
var ErrRefreshBlocked = errors.New("token endpoint refused the request as blocked (403 or 429)")

// Error is an error answer of the token or API endpoint, or a failure to
// reach it (Status 0). Description is sanitised: it never holds a token.
type Error struct {
	Op          string // what was attempted: "refresh token", "exchange code", "create api key"
	Status      int    // HTTP status; 0 when no answer was received
	Code        string // the endpoint's error code, e.g. "invalid_grant", "rate_limit_error"
	Description string // sanitised detail
	// RetryAfter is the endpoint's retry-after, if it sent one.
	RetryAfter time.Duration
	// Err is the underlying transport error when Status is 0.
	Err error
}

// Error describes the failure without any secret.
func (e *Error) Error() string {
	var b strings.Builder
	if e.Op != "" {
		b.WriteString(e.Op)
		b.WriteString(": ")
	}
	if e.Status == 0 {
		b.WriteString(e.Description)
		return b.String()
	}
	fmt.Fprintf(&b, "endpoint answered %d", e.Status)
	if e.Code != "" {
		b.WriteString(" ")
		b.WriteString(e.Code)
	}
	if e.Description != "" {
		b.WriteString(": ")
		b.WriteString(e.Description)
	}
	return b.String()
}

// Unwrap returns the transport error, if any.
func (e *Error) Unwrap() error { return e.Err }

// Is makes errors.Is(err, ErrInvalidGrant) true for an invalid_grant
// answer, and errors.Is(err, ErrRefreshBlocked) true for a blocked one.
func (e *Error) Is(target error) bool {
	switch target {
	case ErrInvalidGrant:
		return e.Code == "invalid_grant"
	case ErrRefreshBlocked:
		return e.blocked()
	}
	return false
}

// blocked reports whether the endpoint refused the request as blocked: a
// 403 or 429 answer (JSON or not) that does not name invalid_grant.
func (e *Error) blocked() bool {
	return (e.Status == http.StatusForbidden || e.Status == http.StatusTooManyRequests) && e.Code != "invalid_grant"
}

// Temporary reports whether trying again later may succeed: network
// failures and timeouts (not a cancelled context), 408, 429 and 5xx.
func (e *Error) Temporary() bool {
	switch {
	case e.Status == 0:
		return !errors.Is(e.Err, context.Canceled)
	case e.Status == http.StatusRequestTimeout, e.Status == http.StatusTooManyRequests:
		return true
	}
	return e.Status >= 500
}

// Token is what the token endpoint grants.
type Token struct {
	AccessToken  string
	RefreshToken string
	ExpiresAt    time.Time

	Scope            string // granted scopes, space separated, if reported
	AccountUUID      string // from a code exchange, if reported
	AccountEmail     string
	OrganizationUUID string
	OrganizationName string
}

// String describes the token without its secrets, so that printing one by
// mistake leaks nothing.
func (t Token) String() string {
	return fmt.Sprintf("oauth.Token{expires_at: %s}", t.ExpiresAt.UTC().Format(time.RFC3339))
}

// GoString is String, for %#v.
func (t Token) GoString() string { return t.String() }

// LogValue keeps the secrets out of slog output.
func (t Token) LogValue() slog.Value {
	return slog.GroupValue(slog.Time("expires_at", t.ExpiresAt))
}

// Client talks to the OAuth token endpoint and the API.
type Client struct {
	TokenURL  string       // "" = DefaultTokenURL
	ClientID  string       // "" = DefaultClientID
	APIBase   string       // upstream for CreateAPIKey; "" = DefaultAPIBase
	HTTP      *http.Client // nil = a client with DefaultTimeout
	Now       func() time.Time
	UserAgent string // "" = UserAgent("")
}

// ProjectURL is the project's home, named in the User-Agent.
const ProjectURL = "https://github.com/claudeflare/claudeflare"

// UserAgent is the User-Agent claudeflare's own calls to the token
// endpoint carry: it names claudeflare and its version, and never
// imitates Claude Code's. "claudeflare/v1.2.0 (+https://...)"; with no
// version, "claudeflare (+https://...)".
func UserAgent(version string) string {
	name := "claudeflare"
	if v := strings.TrimSpace(version); v != "" && len(v) <= 64 && !strings.ContainsFunc(v, badUARune) {
		name += "/" + v
	}
	return name + " (+" + ProjectURL + ")"
}

// badUARune rejects what a header value or a product token cannot hold.
func badUARune(r rune) bool {
	return r <= ' ' || r >= 0x7f || strings.ContainsRune("()<>@,;:\\\"/[]?={}", r)
}

func (c *Client) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}

func (c *Client) httpClient() *http.Client {
	if c.HTTP != nil {
		return c.HTTP
	}
	return defaultHTTP
}

func (c *Client) tokenURL() string {
	if c.TokenURL != "" {
		return c.TokenURL
	}
	return DefaultTokenURL
}

func (c *Client) clientID() string {
	if c.ClientID != "" {
		return c.ClientID
	}
	return DefaultClientID
}

func (c *Client) apiBase() string {
	if c.APIBase != "" {
		return strings.TrimRight(c.APIBase, "/")
	}
	return DefaultAPIBase
}

type tokenResponse struct {
	AccessToken  string  `json:"access_token"`
	RefreshToken string  `json:"refresh_token"`
	ExpiresIn    float64 `json:"expires_in"`
	Scope        string  `json:"scope"`
	Account      struct {
		UUID         string `json:"uuid"`
		EmailAddress string `json:"email_address"`
	} `json:"account"`
	Organization struct {
		UUID string `json:"uuid"`
		Name string `json:"name"`
	} `json:"organization"`
}

// Exchange trades an authorization code (from ParseCallback) for tokens.
func (c *Client) Exchange(ctx context.Context, code string, p PKCE) (Token, error) {
	const op = "exchange code"
	if code == "" {
		return Token{}, &Error{Op: op, Description: "empty authorization code"}
	}
	body := map[string]string{
		"grant_type":    "authorization_code",
		"client_id":     c.clientID(),
		"code":          code,
		"state":         p.State,
		"redirect_uri":  RedirectURI,
		"code_verifier": p.Verifier,
	}
	return c.token(ctx, op, body, "", code, p.Verifier, p.State)
}

// Refresh trades a refresh token for a new access token. The endpoint
// rotates refresh tokens: the answer's refresh token replaces the old one,
// which is dead from then on; when the answer has none, the old one stays
// in Token.RefreshToken. A dead refresh token gives ErrInvalidGrant.
func (c *Client) Refresh(ctx context.Context, refreshToken string) (Token, error) {
	const op = "refresh token"
	if refreshToken == "" {
		return Token{}, &Error{Op: op, Description: "empty refresh token"}
	}
	body := map[string]string{
		"grant_type":    "refresh_token",
		"client_id":     c.clientID(),
		"refresh_token": refreshToken,
	}
	return c.token(ctx, op, body, refreshToken, refreshToken)
}

func (c *Client) token(ctx context.Context, op string, body map[string]string, oldRefresh string, secrets ...string) (Token, error) {
	payload, err := json.Marshal(body)
	if err != nil {
		return Token{}, &Error{Op: op, Description: "encode request"}
	}
	start := c.now()
	var tr tokenResponse
	// The answer's tokens are secrets too, should an error quote them.
	err = c.post(ctx, op, c.tokenURL(), "", payload, &tr, secrets, func() []string {
		return []string{tr.AccessToken, tr.RefreshToken}
	})
	if err != nil {
		return Token{}, err
	}
	if tr.AccessToken == "" {
		return Token{}, &Error{Op: op, Status: http.StatusOK, Code: "invalid_response", Description: "answer has no access_token"}
	}
	if !(tr.ExpiresIn > 0) || math.IsInf(tr.ExpiresIn, 0) || tr.ExpiresIn > 10*365*24*3600 {
		return Token{}, &Error{Op: op, Status: http.StatusOK, Code: "invalid_response", Description: "answer has no valid expires_in"}
	}
	t := Token{
		AccessToken:      tr.AccessToken,
		RefreshToken:     tr.RefreshToken,
		ExpiresAt:        start.Add(time.Duration(tr.ExpiresIn * float64(time.Second))),
		Scope:            tr.Scope,
		AccountUUID:      tr.Account.UUID,
		AccountEmail:     tr.Account.EmailAddress,
		OrganizationUUID: tr.Organization.UUID,
		OrganizationName: tr.Organization.Name,
	}
	if t.RefreshToken == "" {
		t.RefreshToken = oldRefresh
	}
	return t, nil
}

// CreateAPIKey creates an Anthropic API key for the account of accessToken
// (a Console login) and returns it.
func (c *Client) CreateAPIKey(ctx context.Context, accessToken string) (string, error) {
	const op = "create api key"
	if accessToken == "" {
		return "", &Error{Op: op, Description: "empty access token"}
	}
	var out struct {
		RawKey string `json:"raw_key"`
	}
	err := c.post(ctx, op, c.apiBase()+CreateAPIKeyPath, accessToken, nil, &out, []string{accessToken}, func() []string {
		return []string{out.RawKey}
	})
	if err != nil {
		return "", err
	}
	if out.RawKey == "" {
		return "", &Error{Op: op, Status: http.StatusOK, Code: "invalid_response", Description: "answer has no raw_key"}
	}
	return out.RawKey, nil
}

// post sends a POST with a JSON body (or none) and decodes a 2xx JSON
// answer into out. Every error is an *Error whose text is sanitised with
// secrets and, once decoded, answerSecrets().
func (c *Client) post(ctx context.Context, op, url, bearer string, payload []byte, out any, secrets []string, answerSecrets func() []string) error {
	var rd io.Reader
	if payload != nil {
		rd = bytes.NewReader(payload)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, rd)
	if err != nil {
		return &Error{Op: op, Description: "build request: " + Sanitize(err.Error(), secrets...)}
	}
	if payload != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	ua := c.UserAgent
	if ua == "" {
		ua = UserAgent("")
	}
	req.Header.Set("User-Agent", ua)
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}

	// Never follow a redirect: it would carry the body (a token) elsewhere.
	hc := *c.httpClient()
	hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	resp, err := hc.Do(req)
	if err != nil {
		return &Error{Op: op, Description: "send request: " + Sanitize(err.Error(), secrets...), Err: err}
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, MaxResponse+1))
	if err != nil {
		return &Error{Op: op, Description: "read answer: " + Sanitize(err.Error(), secrets...), Err: err}
	}
	e := &Error{Op: op, Status: resp.StatusCode, RetryAfter: retryAfter(resp.Header.Get("Retry-After"), c.now())}
	if len(raw) > MaxResponse {
		e.Code = "invalid_response"
		e.Description = "answer is larger than 1 MiB"
		return e
	}
	ct, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	isJSON := json.Valid(raw) && len(bytes.TrimSpace(raw)) > 0 && bytes.TrimSpace(raw)[0] == '{'

	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		if isJSON {
			e.Code, e.Description = parseErrorBody(raw)
			e.Code = Sanitize(e.Code, secrets...)
			if len(e.Code) > 64 {
				e.Code = e.Code[:64]
			}
			e.Description = Sanitize(e.Description, secrets...)
		} else {
			e.Description = nonJSON(ct, len(raw))
		}
		return e
	}
	if !isJSON {
		e.Code = "invalid_response"
		e.Description = nonJSON(ct, len(raw))
		return e
	}
	if err := json.Unmarshal(raw, out); err != nil {
		e.Code = "invalid_response"
		e.Description = "answer does not decode: " + Sanitize(err.Error(), append(secrets, answerSecrets()...)...)
		return e
	}
	return nil
}

func nonJSON(contentType string, n int) string {
	if n == 0 {
		return "answer is empty, not JSON"
	}
	if contentType == "" {
		contentType = "no content-type"
	}
	return fmt.Sprintf("answer is not JSON (%s, %d bytes)", Sanitize(contentType), n)
}

// parseErrorBody reads an OAuth error {"error":"code","error_description":"..."}
// or an Anthropic one {"type":"error","error":{"type":"...","message":"..."}}.
func parseErrorBody(raw []byte) (code, desc string) {
	var body struct {
		Error            json.RawMessage `json:"error"`
		ErrorDescription string          `json:"error_description"`
		Message          string          `json:"message"`
	}
	if json.Unmarshal(raw, &body) != nil {
		return "", ""
	}
	desc = body.ErrorDescription
	if desc == "" {
		desc = body.Message
	}
	var s string
	if json.Unmarshal(body.Error, &s) == nil {
		return s, desc
	}
	var obj struct {
		Type    string `json:"type"`
		Message string `json:"message"`
	}
	if json.Unmarshal(body.Error, &obj) == nil {
		if obj.Message != "" {
			desc = obj.Message
		}
		return obj.Type, desc
	}
	return "", desc
}

// retryAfter parses a Retry-After header: seconds or an HTTP date.
func retryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if n, err := strconv.ParseFloat(v, 64); err == nil && n >= 0 && n < 1e7 {
		return time.Duration(n * float64(time.Second))
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}
