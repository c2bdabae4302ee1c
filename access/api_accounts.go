package access

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/claudeflare/claudeflare/accounts"
	"github.com/claudeflare/claudeflare/internal/acctstate"
	"github.com/claudeflare/claudeflare/internal/apierr"
	"github.com/claudeflare/claudeflare/oauth"
	"github.com/claudeflare/claudeflare/store"
	"github.com/claudeflare/claudeflare/vault"
)

// AccountTools are what the account routes that touch credentials need;
// the daemon builds them as `accounts login` and `accounts check` do.
type AccountTools struct {
	Vault *vault.Vault
	OAuth *oauth.Client  // validates a refresh token; refreshes before a probe
	Probe accounts.Probe // one cheap request with a credential (proxy.Probe)
}

// maxAccountBody bounds the JSON body of an account route.
const maxAccountBody = accounts.MaxSecretBytes + 4<<10

func (g *Guard) accountRoutes(mux routeMux) {
	mux.HandleFunc("/api/accounts/{name}", method(http.MethodPatch, g.apiEdit))
	mux.HandleFunc("/api/accounts/{name}/unblock", method(http.MethodPost, g.apiUnblock))
	mux.HandleFunc("/api/accounts/{name}/check", method(http.MethodPost, g.apiCheck))
	mux.HandleFunc("/api/accounts/{name}/login", method(http.MethodPost, g.apiLogin))
}

func (g *Guard) apiBy(r *http.Request) accounts.By {
	return accounts.By{Actor: apiActor(r.Context()), Via: "the admin API"}
}

// accountError answers the error of an account change: 404 for an
// unknown name, 400 for bad input, 409 for a taken name, else 500.
func (g *Guard) accountError(w http.ResponseWriter, r *http.Request, name string, err error) {
	switch {
	case errors.Is(err, store.ErrNoAccount):
		reject(w, http.StatusNotFound, apierr.NotFound, fmt.Sprintf("claudeflare: no account named %q", name))
	case accounts.IsBadInput(err), errors.Is(err, accounts.ErrKindMismatch):
		reject(w, http.StatusBadRequest, apierr.InvalidRequest, "claudeflare: "+err.Error())
	case errors.Is(err, store.ErrAccountExists):
		reject(w, http.StatusConflict, apierr.InvalidRequest, "claudeflare: "+err.Error())
	case accounts.IsAuditError(err):
		g.internalError(w, r, "write audit log", err)
	default:
		g.internalError(w, r, "update account", err)
	}
}

// readBody decodes the route's JSON body into v: unknown fields, a
// second value or more than maxAccountBody bytes are a 400.
func readBody(w http.ResponseWriter, r *http.Request, v any) bool {
	b, err := io.ReadAll(io.LimitReader(r.Body, maxAccountBody+1))
	if err != nil {
		reject(w, http.StatusBadRequest, apierr.InvalidRequest, "claudeflare: could not read the request body")
		return false
	}
	if len(b) > maxAccountBody {
		reject(w, http.StatusRequestEntityTooLarge, apierr.InvalidRequest, "claudeflare: the request body is too large")
		return false
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil || dec.More() {
		// The decoder's error may quote the body (a secret): never relay it.
		reject(w, http.StatusBadRequest, apierr.InvalidRequest, "claudeflare: the body must be one JSON object with only the documented fields")
		return false
	}
	return true
}

// apiUnblock clears the account's blocks (as `accounts unblock`).
func (g *Guard) apiUnblock(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	now := g.now()
	before, err := accounts.Unblock(r.Context(), g.vaultDB, g.auditKey, g.apiBy(r), name, now)
	if err != nil {
		g.accountError(w, r, name, err)
		return
	}
	after, err := store.GetAccount(r.Context(), g.vaultDB, name)
	if err != nil {
		g.internalError(w, r, "read account", err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"name": name, "was": accounts.Blocks(before, now), "status": acctstate.Of(after, now).Word,
	})
}

// apiCheck probes the account now (as `accounts check NAME`) and answers
// its CheckResult.
func (g *Guard) apiCheck(w http.ResponseWriter, r *http.Request) {
	if g.tools.Vault == nil || g.tools.Probe == nil {
		reject(w, http.StatusServiceUnavailable, apierr.API, "claudeflare: account checks are not available here")
		return
	}
	name := r.PathValue("name")
	c := &accounts.Checker{Vault: g.tools.Vault, OAuth: g.tools.OAuth, Probe: g.tools.Probe,
		AuditKey: g.auditKey, By: g.apiBy(r), Now: g.now}
	res, err := c.Check(r.Context(), name)
	if err != nil {
		g.accountError(w, r, name, err)
		return
	}
	writeJSON(w, http.StatusOK, res)
}

// loginBody is POST /api/accounts/{name}/login's body: exactly one
// credential.
type loginBody struct {
	RefreshToken string `json:"refresh_token"`
	APIKey       string `json:"api_key"`
	SetupToken   string `json:"setup_token"`
}

// apiLogin gives the account new credentials (as `accounts login NAME
// --...-stdin`); the answer never holds the secret.
func (g *Guard) apiLogin(w http.ResponseWriter, r *http.Request) {
	if g.tools.Vault == nil {
		reject(w, http.StatusServiceUnavailable, apierr.API, "claudeflare: logins are not available here")
		return
	}
	var b loginBody
	if !readBody(w, r, &b) {
		return
	}
	name := r.PathValue("name")
	cred := accounts.Credential{RefreshToken: b.RefreshToken, APIKey: b.APIKey, SetupToken: b.SetupToken}
	if !g.keyAccepted(w, r, name, cred) {
		return
	}
	err := accounts.LoginWith(r.Context(), g.tools.Vault, g.tools.OAuth, g.auditKey, g.apiBy(r), name, cred, g.now())
	switch {
	case errors.Is(err, oauth.ErrInvalidGrant):
		reject(w, http.StatusBadRequest, apierr.InvalidRequest, "claudeflare: the refresh token is expired or already used")
		return
	case errors.Is(err, oauth.ErrRefreshBlocked):
		reject(w, http.StatusBadGateway, apierr.API, "claudeflare: the token endpoint refused the refresh as blocked; try again later")
		return
	case isOAuthError(err):
		reject(w, http.StatusBadGateway, apierr.API, "claudeflare: validate refresh token: the token endpoint failed")
		return
	case err != nil:
		g.accountError(w, r, name, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"name": name, "logged_in": true})
}

// keyAccepted probes a new API key for an existing API-key account once
// before it is stored, as `accounts login --api-key-stdin` does: a key
// upstream refuses is a 400 and changes nothing. Any other credential,
// or a probe without an answer, goes on.
func (g *Guard) keyAccepted(w http.ResponseWriter, r *http.Request, name string, c accounts.Credential) bool {
	if c.APIKey == "" || c.RefreshToken != "" || c.SetupToken != "" || g.tools.Probe == nil {
		return true
	}
	key, err := accounts.CheckSecret(c.APIKey, "API key")
	if err != nil {
		return true // LoginWith refuses it
	}
	if a, err := store.GetAccount(r.Context(), g.vaultDB, name); err != nil || a.Kind != store.KindAPIKey {
		return true // LoginWith refuses it
	}
	p, err := g.tools.Probe(r.Context(), store.KindAPIKey, key, g.now())
	if err == nil && p.State.Word == acctstate.KeyRefused {
		reject(w, http.StatusBadRequest, apierr.InvalidRequest, fmt.Sprintf("claudeflare: upstream refused the API key (%d); nothing changed", p.Status))
		return false
	}
	return true
}

func isOAuthError(err error) bool {
	var oe *oauth.Error
	return errors.As(err, &oe)
}

// editBody is PATCH /api/accounts/{name}'s body; an absent field is kept.
type editBody struct {
	Priority *int    `json:"priority"`
	Tier     *int    `json:"tier"`
	Name     *string `json:"name"`
	Overage  *string `json:"overage"`
}

// apiEdit changes the account's settings (as `accounts edit`).
func (g *Guard) apiEdit(w http.ResponseWriter, r *http.Request) {
	var b editBody
	if !readBody(w, r, &b) {
		return
	}
	name := r.PathValue("name")
	ed := accounts.Edit{Priority: b.Priority, Tier: b.Tier, Rename: b.Name, Overage: b.Overage}
	if err := accounts.EditAccount(r.Context(), g.vaultDB, g.auditKey, g.apiBy(r), name, ed, g.now()); err != nil {
		g.accountError(w, r, name, err)
		return
	}
	newName := name
	if b.Name != nil {
		newName = *b.Name
	}
	a, err := store.GetAccount(r.Context(), g.vaultDB, newName)
	if err != nil {
		g.internalError(w, r, "read account", err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"name": a.Name, "priority": a.Priority, "tier": a.Tier, "overage": a.Overage,
	})
}
