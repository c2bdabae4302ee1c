package access

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/claudeflare/claudeflare/accounts"
	"github.com/claudeflare/claudeflare/audit"
	"github.com/claudeflare/claudeflare/internal/apierr"
	"github.com/claudeflare/claudeflare/requestlog"
	"github.com/claudeflare/claudeflare/store"
	"github.com/claudeflare/claudeflare/ui"
)

// The admin API: JSON for a dashboard or a script, each route behind its
// permission (checked by the guard before it gets here).
//
//	GET  /api/openapi.json             any client key  this API as an OpenAPI 3.1 document
//	GET  /api/accounts                 dashboard.view
//	GET  /api/stats[?since=24h]        dashboard.view
//	GET  /api/keys                     any client key  live keys with budgets and use (api_keys.go);
//	                                   an api key sees only itself
//	GET  /api/series[?since=24h&step=30m] dashboard.view  the log as time buckets (api_series.go)
//	GET  /api/requests/{id}/payload    payloads.view   one request's payload, redacted as
//	                                   `payload export` (api_payload.go)
//	GET  /ui/                          no key          the dashboard's static files (package ui);
//	                                   its fetches of the routes above send the key
//	GET  /api/requests                 logs.view  ?since=D|T&until=D|T&account=N&status=429|4xx
//	                                   &limit=100(max 1000)&cursor=C (see api_requests.go):
//	                                   {"requests":[...oldest first],"next_cursor":C|null}
//	POST /api/accounts/{name}/pause    accounts.manage
//	POST /api/accounts/{name}/resume   accounts.manage
//	POST /api/accounts/{name}/unblock  accounts.manage  clear its blocks (as `accounts unblock`):
//	                                   {"name","was","status"}
//	POST /api/accounts/{name}/check    accounts.manage  probe it now (as `accounts check NAME`):
//	                                   {"name","status","window","family","until","reason","http_status","detail"}
//	POST /api/accounts/{name}/login    accounts.manage  new credentials, body exactly one of
//	                                   {"refresh_token"|"api_key"|"setup_token": "..."} (as `accounts login
//	                                   NAME --...-stdin`; a refresh token is refreshed once first,
//	                                   an API key probed once: refused, nothing changes);
//	                                   answers {"name","logged_in":true}, never the secret
//	PATCH /api/accounts/{name}         accounts.manage  body any of {"priority","tier","name","overage"}
//	                                   (as `accounts edit`); answers the new settings
//	GET  /api/status[?session=HASH]    dashboard.view  as `status --json` (api_status.go): accounts'
//	                                   utilization, resets, state, sessions; the pool's time to exhaustion
//
// Bad input (a malformed body, an unknown field, a bad value, an edit
// that changes nothing, a credential of the wrong kind) is a 400 in
// Anthropic's error shape and changes nothing; an unknown account is a
// 404, a taken name a 409. Every change writes an audit row whose actor
// is the client key.

const (
	defaultRequestsLimit = 100
	maxRequestsLimit     = 1000
	defaultStatsSince    = 24 * time.Hour
)

// routeMux is where the admin routes are registered: an *http.ServeMux,
// or a recorder that lists them (the test that holds openapi.json to the
// routes).
type routeMux interface {
	HandleFunc(pattern string, handler func(http.ResponseWriter, *http.Request))
}

func (g *Guard) apiRoutes() http.Handler {
	mux := http.NewServeMux()
	g.registerAPI(mux)
	mux.Handle(ui.Prefix, ui.Handler())
	mux.Handle("/ui", ui.Handler())
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		reject(w, http.StatusNotFound, apierr.NotFound, "claudeflare: no such admin API endpoint")
	})
	return mux
}

// registerAPI registers every admin route, each wrapped in method; each
// must be in openapi.json with its method and permission.
func (g *Guard) registerAPI(mux routeMux) {
	mux.HandleFunc("/api/openapi.json", method(http.MethodGet, serveOpenAPI))
	mux.HandleFunc("/api/accounts", method(http.MethodGet, g.apiAccounts))
	mux.HandleFunc("/api/stats", method(http.MethodGet, g.apiStats))
	mux.HandleFunc("/api/keys", method(http.MethodGet, g.apiKeys))
	mux.HandleFunc("/api/requests", method(http.MethodGet, g.apiRequests))
	mux.HandleFunc("/api/series", method(http.MethodGet, g.apiSeries))
	mux.HandleFunc("/api/requests/{id}/payload", method(http.MethodGet, g.apiPayload))
	mux.HandleFunc("/api/accounts/{name}/pause", method(http.MethodPost, func(w http.ResponseWriter, r *http.Request) { g.apiSetPaused(w, r, true) }))
	mux.HandleFunc("/api/accounts/{name}/resume", method(http.MethodPost, func(w http.ResponseWriter, r *http.Request) { g.apiSetPaused(w, r, false) }))
	g.accountRoutes(mux)
	mux.HandleFunc("/api/status", method(http.MethodGet, g.apiStatus))
}

// method admits one method (GET also admits HEAD).
func method(m string, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Method != m && !(m == http.MethodGet && r.Method == http.MethodHead) {
			w.Header().Set("Allow", m)
			reject(w, http.StatusMethodNotAllowed, apierr.InvalidRequest, "claudeflare: method not allowed; use "+m)
			return
		}
		h(w, r)
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		reject(w, http.StatusInternalServerError, apierr.API, "claudeflare: encode response")
		return
	}
	body = append(body, '\n')
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	w.Write(body)
}

func (g *Guard) internalError(w http.ResponseWriter, r *http.Request, what string, err error) {
	g.log.Error("admin api", "path", r.URL.Path, "what", what, "err", err)
	apierr.Write(w, apierr.Reply{Status: http.StatusInternalServerError, Type: apierr.API, Message: "claudeflare: " + what + " failed", Retry: apierr.RetryYes})
}

func (g *Guard) apiAccounts(w http.ResponseWriter, r *http.Request) {
	accts, err := requestlog.AccountLines(r.Context(), g.vaultDB, g.logDB, g.now())
	if err != nil {
		g.internalError(w, r, "list accounts", err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"accounts": accts})
}

func (g *Guard) apiSetPaused(w http.ResponseWriter, r *http.Request, paused bool) {
	name := r.PathValue("name")
	ctx := r.Context()
	err := accounts.SetPaused(ctx, g.vaultDB, g.auditKey, accounts.By{Actor: apiActor(ctx), Via: "the admin API"}, name, paused, g.now())
	switch {
	case errors.Is(err, store.ErrNoAccount):
		reject(w, http.StatusNotFound, apierr.NotFound, fmt.Sprintf("claudeflare: no account named %q", name))
		return
	case accounts.IsAuditError(err):
		g.internalError(w, r, "write audit log", err)
		return
	case err != nil:
		g.internalError(w, r, "update account", err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"name": name, "paused": paused})
}

// apiActor names who called the admin API.
func apiActor(ctx context.Context) string {
	c, _ := ClientFrom(ctx)
	if c.Key != "" {
		return audit.KeyActor(c.Key)
	}
	return audit.AddrActor(c.Addr)
}
