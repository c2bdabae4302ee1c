package accounts

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode"

	"github.com/claudeflare/claudeflare/cloud"
	"github.com/claudeflare/claudeflare/oauth"
	"github.com/claudeflare/claudeflare/store"
	"github.com/claudeflare/claudeflare/vault"
)

// BadInput is the error of a value refused before anything changed (a
// malformed secret, a bad setting, no change): the caller's fault, a
// usage error on the command line and a 400 from the admin API.
type BadInput struct {
	Msg string
	err error // what it wraps, if anything
}

func (e *BadInput) Error() string { return e.Msg }
func (e *BadInput) Unwrap() error { return e.err }

func badInput(format string, args ...any) error {
	return &BadInput{Msg: fmt.Sprintf(format, args...)}
}

// IsBadInput reports whether err is a BadInput.
func IsBadInput(err error) bool {
	var b *BadInput
	return errors.As(err, &b)
}

// MaxSecretBytes bounds a secret given on stdin or to the admin API.
const MaxSecretBytes = 16 << 10

// CheckSecret checks one secret as given (what names it in the error:
// "refresh token"): non-empty once trimmed, one line of printable
// characters without spaces, at most MaxSecretBytes. It returns it
// trimmed; the error never holds it.
func CheckSecret(s, what string) (string, error) {
	if len(s) > MaxSecretBytes {
		return "", badInput("the %s is more than %d bytes", what, MaxSecretBytes)
	}
	s = strings.TrimSpace(s)
	if s == "" {
		return "", badInput("no %s given", what)
	}
	for _, r := range s {
		if unicode.IsSpace(r) || !unicode.IsPrint(r) {
			return "", badInput("the %s must be one line without spaces", what)
		}
	}
	return s, nil
}

// Credential is one new credential for an account; exactly one field is
// set.
type Credential struct {
	RefreshToken string // validated by one refresh before it is stored
	APIKey       string
	SetupToken   string // made by `claude setup-token`, never refreshed
}

// secret is the one credential set and its name, or a BadInput.
func (c Credential) secret() (value, what string, err error) {
	n := 0
	for _, f := range []struct{ v, what string }{
		{c.RefreshToken, "refresh token"}, {c.APIKey, "API key"}, {c.SetupToken, "setup token"},
	} {
		if f.v != "" {
			n++
			value, what = f.v, f.what
		}
	}
	if n != 1 {
		return "", "", badInput("give exactly one of a refresh token, an API key or a setup token")
	}
	value, err = CheckSecret(value, what)
	return value, what, err
}

// LoginWith gives the named account the credential c, as `accounts login
// NAME --...-stdin` and POST /api/accounts/{name}/login do: the
// credential is checked, a refresh token is refreshed once (the token
// endpoint validates it; the rotated tokens are what is stored), then
// Login replaces the account's credentials and records it. Nothing is
// stored on error: an unknown name is store.ErrNoAccount, a credential
// of the wrong kind ErrKindMismatch (before any token is spent), a
// refused refresh token wraps oauth.ErrInvalidGrant.
func LoginWith(ctx context.Context, v *vault.Vault, client *oauth.Client, auditKey []byte, by By, name string, c Credential, now time.Time) error {
	value, what, err := c.secret()
	if err != nil {
		return err
	}
	a, err := store.GetAccount(ctx, v.DB(), name)
	if err != nil {
		return err
	}
	if cloud.Is(a.Kind) {
		return fmt.Errorf("%w: %q is a %s account (give it --%s with its credentials on stdin)", ErrKindMismatch, name, a.Kind, a.Kind)
	}
	if (a.Kind == store.KindAPIKey) != (what == "API key") {
		use := map[bool]string{true: "an API key", false: "a refresh token or a setup token"}[a.Kind == store.KindAPIKey]
		return fmt.Errorf("%w: %q is an %s account (give it %s)", ErrKindMismatch, name,
			map[bool]string{true: "API-key", false: "OAuth"}[a.Kind == store.KindAPIKey], use)
	}
	var s vault.Secrets
	switch what {
	case "API key":
		s.APIKey = value
	case "setup token":
		s.AccessToken = value
	default:
		if client == nil {
			return errors.New("login: no token client")
		}
		if s, err = RefreshedSecrets(ctx, client, value); err != nil {
			return err
		}
	}
	return Login(context.WithoutCancel(ctx), v, auditKey, by, name, s, now)
}

// RefreshedSecrets refreshes rt once and returns the tokens to store.
// (A crash right after the refresh loses the rotated token; the account
// then still needs a login, as before.)
func RefreshedSecrets(ctx context.Context, client *oauth.Client, rt string) (vault.Secrets, error) {
	tok, err := client.Refresh(ctx, rt)
	if err != nil {
		return vault.Secrets{}, fmt.Errorf("validate refresh token: %w", err)
	}
	s := vault.Secrets{AccessToken: tok.AccessToken, RefreshToken: tok.RefreshToken, ExpiresAt: tok.ExpiresAt}
	if s.RefreshToken == "" {
		s.RefreshToken = rt
	}
	return s, nil
}
