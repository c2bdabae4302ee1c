// Package oauth implements Anthropic's OAuth flow for Claude subscriptions
// as Claude Code uses it: PKCE authorize URLs, the pasted "code#state"
// callback, the code exchange, refresh with rotating refresh tokens, and
// the creation of an API key from an access token.
//
// No token, code or verifier ever appears in an error from this package;
// error text from the endpoint passes through Sanitize.
package oauth

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"net/url"
	"strings"
)

// Endpoints, redirect and scope of Claude Code's OAuth client.
const (
	DefaultTokenURL = "https://platform.claude.com/v1/oauth/token"
	RedirectURI     = "https://platform.claude.com/oauth/code/callback"
	Scope           = "org:create_api_key user:profile user:inference"

	// DefaultClientID is Claude Code's public OAuth client id.
	DefaultClientID = "9d1c250a-e61b-44d9-88ed-5944d1962f5e"
	// DefaultAPIBase is the upstream API that creates API keys.
	DefaultAPIBase = "https://api.anthropic.com"
	// CreateAPIKeyPath is the path, under the API base, that turns an
	// access token into an API key.
	CreateAPIKeyPath = "/api/oauth/claude_cli/create_api_key"
	// Beta is the anthropic-beta value that requests with an OAuth bearer
	// token must carry.
	Beta = "oauth-2025-04-20"
)

// Mode selects where the user authorizes.
type Mode string

// Modes.
const (
	// ModeMax authorizes a Claude Pro/Max subscription at claude.ai.
	ModeMax Mode = "max"
	// ModeConsole authorizes an Anthropic Console account.
	ModeConsole Mode = "console"
)

// ParseMode parses "max" or "console" (case-insensitive; "" = max).
func ParseMode(s string) (Mode, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "", string(ModeMax):
		return ModeMax, nil
	case string(ModeConsole):
		return ModeConsole, nil
	}
	return "", fmt.Errorf("unknown oauth mode %q (want max or console)", s)
}

// AuthorizeEndpoint is the page the user opens for the mode.
func (m Mode) AuthorizeEndpoint() string {
	if m == ModeConsole {
		return "https://console.anthropic.com/oauth/authorize"
	}
	return "https://claude.ai/oauth/authorize"
}

// PKCE holds the secrets of one authorization: the verifier, its S256
// challenge, and an independent random state.
type PKCE struct {
	Verifier  string
	Challenge string
	State     string
}

// NewPKCE makes a fresh verifier (32 random bytes, base64url), its S256
// challenge and an independent 32-byte random state.
func NewPKCE() (PKCE, error) {
	v, err := randomB64(32)
	if err != nil {
		return PKCE{}, fmt.Errorf("generate pkce verifier: %w", err)
	}
	st, err := randomB64(32)
	if err != nil {
		return PKCE{}, fmt.Errorf("generate oauth state: %w", err)
	}
	return PKCE{Verifier: v, Challenge: Challenge(v), State: st}, nil
}

// Challenge is the S256 code challenge of verifier:
// base64url(sha256(verifier)) without padding.
func Challenge(verifier string) string {
	sum := sha256.Sum256([]byte(verifier))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

func randomB64(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// AuthorizeURL is the URL the user opens to authorize clientID.
func AuthorizeURL(mode Mode, clientID string, p PKCE) string {
	q := url.Values{}
	q.Set("code", "true")
	q.Set("client_id", clientID)
	q.Set("response_type", "code")
	q.Set("redirect_uri", RedirectURI)
	q.Set("scope", Scope)
	q.Set("code_challenge", p.Challenge)
	q.Set("code_challenge_method", "S256")
	q.Set("state", p.State)
	return mode.AuthorizeEndpoint() + "?" + q.Encode()
}

// Errors of ParseCallback. Their text names no code or state.
var (
	ErrNoCode        = errors.New("pasted text has no authorization code")
	ErrNoState       = errors.New("pasted text has no state: paste the whole code#state")
	ErrStateMismatch = errors.New("state does not match this login: start again and paste the newest code")
)

// ParseCallback extracts the authorization code from what the user pasted:
// "code#state" as the callback page shows it, or the whole callback URL
// with ?code=...&state=... . The state must equal wantState.
func ParseCallback(pasted, wantState string) (code string, err error) {
	s := strings.TrimSpace(pasted)
	var state string
	if strings.HasPrefix(s, "https://") || strings.HasPrefix(s, "http://") {
		u, perr := url.Parse(s)
		if perr != nil {
			return "", errors.New("pasted callback url does not parse")
		}
		q := u.Query()
		code, state = q.Get("code"), q.Get("state")
		if state == "" && u.Fragment != "" {
			state = u.Fragment
		}
		if q.Get("error") != "" && code == "" {
			return "", fmt.Errorf("authorization refused: %s", Sanitize(q.Get("error")))
		}
	} else {
		var found bool
		code, state, found = strings.Cut(s, "#")
		if !found {
			state = ""
		}
	}
	code = strings.TrimSpace(code)
	state = strings.TrimSpace(state)
	switch {
	case code == "":
		return "", ErrNoCode
	case state == "":
		return "", ErrNoState
	case wantState == "" || subtle.ConstantTimeCompare([]byte(state), []byte(wantState)) != 1:
		return "", ErrStateMismatch
	}
	return code, nil
}
