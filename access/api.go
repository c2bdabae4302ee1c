package access

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/claudeflare/claudeflare/config"
	"github.com/claudeflare/claudeflare/requestlog"
	"github.com/claudeflare/claudeflare/store"
)

// The admin API: JSON for a dashboard or a script, each route behind its
// permission (checked by the guard before it gets here).
//
//	GET  /api/accounts                 dashboard.view
//	GET  /api/stats[?since=24h]        dashboard.view
//	GET  /api/requests[?limit=100&since=D&account=N]  logs.view
//	POST /api/accounts/{name}/pause    accounts.manage
//	POST /api/accounts/{name}/resume   accounts.manage

const (
	defaultRequestsLimit = 100
	maxRequestsLimit     = 1000
	defaultStatsSince    = 24 * time.Hour
)

func (g *Guard) apiRoutes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/api/accounts", method(http.MethodGet, g.apiAccounts))
	mux.HandleFunc("/api/stats", method(http.MethodGet, g.apiStats))
	mux.HandleFunc("/api/requests", method(http.MethodGet, g.apiRequests))
	mux.HandleFunc("/api/accounts/{name}/pause", method(http.MethodPost, func(w http.ResponseWriter, r *http.Request) { g.apiSetPaused(w, r, true) }))
	mux.HandleFunc("/api/accounts/{name}/resume", method(http.MethodPost, func(w http.ResponseWriter, r *http.Request) { g.apiSetPaused(w, r, false) }))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, errNotFound, "claudeflare: no such admin API endpoint", false, 0)
	})
	return mux
}

// method admits one method (GET also admits HEAD).
func method(m string, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Method != m && !(m == http.MethodGet && r.Method == http.MethodHead) {
			w.Header().Set("Allow", m)
			writeError(w, http.StatusMethodNotAllowed, errInvalidRequest, "claudeflare: method not allowed; use "+m, false, 0)
			return
		}
		h(w, r)
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		writeError(w, http.StatusInternalServerError, errAPI, "claudeflare: encode response", false, 0)
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
	writeError(w, http.StatusInternalServerError, errAPI, "claudeflare: "+what+" failed", true, 0)
}

func rfc3339(ms int64) *string {
	if ms == 0 {
		return nil
	}
	s := store.FromMS(ms).Format(time.RFC3339)
	return &s
}

// apiAccount is one account in /api/accounts: state only, never a secret.
// The fields are those of `accounts list --json`.
type apiAccount struct {
	Name             string   `json:"name"`
	Kind             string   `json:"kind"`
	Mode             string   `json:"mode"`
	Priority         int      `json:"priority"`
	Tier             int      `json:"tier"`
	Paused           bool     `json:"paused"`
	Status           string   `json:"status"`
	StatusReason     string   `json:"status_reason,omitempty"`
	RateLimitedUntil *string  `json:"rate_limited_until"`
	RateLimitStatus  string   `json:"rate_limit_status"`
	Utilization5h    *float64 `json:"utilization_5h"`
	Utilization7d    *float64 `json:"utilization_7d"`
	TokenExpiresAt   *string  `json:"token_expires_at"`
	Requests         int64    `json:"requests"`
	LastUsed         *string  `json:"last_used"`
}

func accountStatus(a store.Account, nowMS int64) string {
	switch {
	case a.Status == store.StatusNeedsLogin:
		return "needs_login"
	case a.Paused:
		return "paused"
	case a.RateLimitedUntil > nowMS:
		return "rate_limited"
	}
	return "ok"
}

func utilization(u float64) *float64 {
	if u < 0 {
		return nil
	}
	return &u
}

type accountUse struct {
	Account  string `db:"account"`
	Requests int64  `db:"requests"`
	LastUsed int64  `db:"last_used"`
}

func (g *Guard) apiAccounts(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	accts, err := store.ListAccounts(ctx, g.vaultDB)
	if err != nil {
		g.internalError(w, r, "list accounts", err)
		return
	}
	use := map[string]accountUse{}
	if g.logDB != nil {
		var rows []accountUse
		err := g.logDB.R.SelectContext(ctx, &rows, `SELECT account, count(*) AS requests, max(ts) AS last_used
			FROM requests WHERE account != '' GROUP BY account`)
		if err != nil {
			g.internalError(w, r, "count requests", err)
			return
		}
		for _, u := range rows {
			use[u.Account] = u
		}
	}
	nowMS := g.now().UnixMilli()
	out := make([]apiAccount, 0, len(accts))
	for _, a := range accts {
		rl := a.RateLimitedUntil
		if rl <= nowMS {
			rl = 0
		}
		u := use[a.Name]
		out = append(out, apiAccount{
			Name: a.Name, Kind: a.Kind, Mode: a.Mode, Priority: a.Priority, Tier: a.Tier, Paused: a.Paused,
			Status: accountStatus(a, nowMS), StatusReason: a.StatusReason,
			RateLimitedUntil: rfc3339(rl), RateLimitStatus: a.RLStatus,
			Utilization5h: utilization(a.Util5h), Utilization7d: utilization(a.Util7d),
			TokenExpiresAt: rfc3339(a.TokenExpiresAt), Requests: u.Requests, LastUsed: rfc3339(u.LastUsed),
		})
	}
	writeJSON(w, http.StatusOK, map[string]any{"accounts": out})
}

// apiStat is one account's line (or the pool's) in /api/stats, with the
// fields of `stats --json`.
type apiStat struct {
	Account                  *string  `json:"account"`
	Requests                 int64    `json:"requests"`
	Errors                   int64    `json:"errors"`
	InputTokens              int64    `json:"input_tokens"`
	OutputTokens             int64    `json:"output_tokens"`
	CacheReadInputTokens     int64    `json:"cache_read_input_tokens"`
	CacheCreationInputTokens int64    `json:"cache_creation_input_tokens"`
	MedianDurationMS         int64    `json:"median_duration_ms"`
	P95DurationMS            int64    `json:"p95_duration_ms"`
	LastUsed                 *string  `json:"last_used"`
	Status                   string   `json:"status,omitempty"`
	RateLimitedUntil         *string  `json:"rate_limited_until,omitempty"`
	RateLimitStatus          string   `json:"rate_limit_status,omitempty"`
	Utilization5h            *float64 `json:"utilization_5h,omitempty"`
	Utilization7d            *float64 `json:"utilization_7d,omitempty"`
}

func statOut(a requestlog.AccountStats, pool bool) apiStat {
	out := apiStat{
		Requests: a.Requests, Errors: a.Errors, InputTokens: a.InputTokens, OutputTokens: a.OutputTokens,
		CacheReadInputTokens: a.CacheReadInputTokens, CacheCreationInputTokens: a.CacheCreationInputTokens,
		MedianDurationMS: a.MedianDurationMS, P95DurationMS: a.P95DurationMS, LastUsed: rfc3339(a.LastUsed),
	}
	if pool {
		return out
	}
	name := a.Account
	out.Account = &name
	if st := a.State; st != nil {
		out.Status, out.RateLimitStatus = st.Status, st.RateLimitStatus
		out.RateLimitedUntil = rfc3339(st.RateLimitedUntil)
		out.Utilization5h, out.Utilization7d = utilization(st.Utilization5h), utilization(st.Utilization7d)
	} else {
		out.Status = "removed"
	}
	return out
}

func (g *Guard) apiStats(w http.ResponseWriter, r *http.Request) {
	if g.logDB == nil {
		writeError(w, http.StatusServiceUnavailable, errAPI, "claudeflare: the request log is not available", false, 0)
		return
	}
	since := defaultStatsSince
	if s := r.URL.Query().Get("since"); s != "" {
		d, err := config.ParseDuration(s)
		if err != nil {
			writeError(w, http.StatusBadRequest, errInvalidRequest, "claudeflare: since: "+err.Error(), false, 0)
			return
		}
		since = d
	}
	from := g.now().Add(-since)
	st, err := requestlog.ComputeStats(r.Context(), g.logDB, requestlog.StatsOptions{Since: from, Vault: g.vaultDB, Now: g.now})
	if err != nil {
		g.internalError(w, r, "read stats", err)
		return
	}
	accts := make([]apiStat, 0, len(st.Accounts))
	for _, a := range st.Accounts {
		accts = append(accts, statOut(a, false))
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"since":    from.UTC().Format(time.RFC3339),
		"accounts": accts,
		"pool":     statOut(st.Pool, true),
	})
}

// apiRequest is one request in /api/requests, with the fields of
// `requests list --json`.
type apiRequest struct {
	ID                       string  `json:"id"`
	Timestamp                string  `json:"timestamp"`
	Method                   string  `json:"method"`
	Path                     string  `json:"path"`
	Model                    string  `json:"model"`
	Account                  string  `json:"account"`
	Status                   int     `json:"status"`
	Attempts                 int     `json:"attempts"`
	DurationMS               int64   `json:"duration_ms"`
	TTFBMS                   int64   `json:"ttfb_ms"`
	InputTokens              int64   `json:"input_tokens"`
	OutputTokens             int64   `json:"output_tokens"`
	CacheReadInputTokens     int64   `json:"cache_read_input_tokens"`
	CacheCreationInputTokens int64   `json:"cache_creation_input_tokens"`
	Streamed                 bool    `json:"streamed"`
	EndState                 string  `json:"end_state"`
	Error                    *string `json:"error"`
	Client                   string  `json:"client"`
}

// apiRequests lists the newest requests, newest last:
// ?limit=N (default 100, at most 1000), ?since=D, ?account=NAME.
func (g *Guard) apiRequests(w http.ResponseWriter, r *http.Request) {
	if g.logDB == nil {
		writeError(w, http.StatusServiceUnavailable, errAPI, "claudeflare: the request log is not available", false, 0)
		return
	}
	q := r.URL.Query()
	f := requestlog.Filter{Limit: defaultRequestsLimit, Account: q.Get("account")}
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			writeError(w, http.StatusBadRequest, errInvalidRequest, "claudeflare: limit must be a positive integer", false, 0)
			return
		}
		f.Limit = min(n, maxRequestsLimit)
	}
	if s := q.Get("since"); s != "" {
		d, err := config.ParseDuration(s)
		if err != nil {
			writeError(w, http.StatusBadRequest, errInvalidRequest, "claudeflare: since: "+err.Error(), false, 0)
			return
		}
		f.Since = g.now().Add(-d)
	}
	out := make([]apiRequest, 0, f.Limit)
	err := requestlog.List(r.Context(), g.logDB, f, func(q *store.Request) error {
		var errText *string
		if q.Error != "" {
			e := q.Error
			errText = &e
		}
		out = append(out, apiRequest{
			ID: q.ID, Timestamp: requestlog.Timestamp(q.TS), Method: q.Method, Path: q.Path,
			Model: q.Model, Account: q.Account, Status: q.Status, Attempts: q.Attempts,
			DurationMS: q.DurationMS, TTFBMS: q.TTFBMS, InputTokens: q.InputTokens, OutputTokens: q.OutputTokens,
			CacheReadInputTokens: q.CacheReadInputTokens, CacheCreationInputTokens: q.CacheCreationInputTokens,
			Streamed: q.Streamed, EndState: q.EndState, Error: errText, Client: q.Client,
		})
		return nil
	})
	if err != nil {
		g.internalError(w, r, "read request log", err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"requests": out})
}

func (g *Guard) apiSetPaused(w http.ResponseWriter, r *http.Request, paused bool) {
	name := r.PathValue("name")
	ctx := r.Context()
	now := g.now()
	if err := store.SetPaused(ctx, g.vaultDB, name, paused, now); err != nil {
		if errors.Is(err, store.ErrNoAccount) {
			writeError(w, http.StatusNotFound, errNotFound, fmt.Sprintf("claudeflare: no account named %q", name), false, 0)
			return
		}
		g.internalError(w, r, "update account", err)
		return
	}
	action, verb := ActionAccountResumed, "resumed"
	if paused {
		action, verb = ActionAccountPaused, "paused"
	}
	if err := AuditAt(context.WithoutCancel(ctx), g.vaultDB, now, apiActor(ctx), action,
		fmt.Sprintf("account %q %s through the admin API", name, verb)); err != nil {
		g.internalError(w, r, "write audit log", err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"name": name, "paused": paused})
}

// apiActor names who called the admin API.
func apiActor(ctx context.Context) string {
	c, _ := ClientFrom(ctx)
	if c.Key != "" {
		return KeyActor(c.Key)
	}
	return AddrActor(c.Addr)
}
