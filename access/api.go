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
	"github.com/claudeflare/claudeflare/store"
)

// The admin API: JSON for a dashboard or a script, each route behind its
// permission (checked by the guard before it gets here).
//
//	GET  /api/accounts                 dashboard.view
//	GET  /api/stats[?since=24h]        dashboard.view
//	GET  /api/requests[?limit=100]     logs.view
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

// apiStat is one account's line in /api/stats.
type apiStat struct {
	Account                  string  `json:"account" db:"account"`
	Requests                 int64   `json:"requests" db:"requests"`
	Errors                   int64   `json:"errors" db:"errors"`
	RateLimited              int64   `json:"rate_limited_responses" db:"rate_limited"`
	InputTokens              int64   `json:"input_tokens" db:"input_tokens"`
	OutputTokens             int64   `json:"output_tokens" db:"output_tokens"`
	CacheReadInputTokens     int64   `json:"cache_read_input_tokens" db:"cache_read_input_tokens"`
	CacheCreationInputTokens int64   `json:"cache_creation_input_tokens" db:"cache_creation_input_tokens"`
	LastMS                   int64   `json:"-" db:"last_used"`
	LastUsed                 *string `json:"last_used" db:"-"`
	Status                   string  `json:"status,omitempty" db:"-"`
	RateLimitedUntil         *string `json:"rate_limited_until,omitempty" db:"-"`
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
	ctx := r.Context()
	now := g.now()
	from := now.Add(-since)
	var rows []apiStat
	err := g.logDB.R.SelectContext(ctx, &rows, `SELECT account, count(*) AS requests,
		coalesce(sum(CASE WHEN status >= 400 OR status = 0 THEN 1 ELSE 0 END), 0) AS errors,
		coalesce(sum(CASE WHEN status = 429 THEN 1 ELSE 0 END), 0) AS rate_limited,
		coalesce(sum(input_tokens), 0) AS input_tokens, coalesce(sum(output_tokens), 0) AS output_tokens,
		coalesce(sum(cache_read_input_tokens), 0) AS cache_read_input_tokens,
		coalesce(sum(cache_creation_input_tokens), 0) AS cache_creation_input_tokens,
		coalesce(max(ts), 0) AS last_used
		FROM requests WHERE ts >= ? GROUP BY account ORDER BY account`, store.ToMS(from))
	if err != nil {
		g.internalError(w, r, "read stats", err)
		return
	}
	accts, err := store.ListAccounts(ctx, g.vaultDB)
	if err != nil {
		g.internalError(w, r, "list accounts", err)
		return
	}
	byName := make(map[string]store.Account, len(accts))
	for _, a := range accts {
		byName[a.Name] = a
	}
	var total apiStat
	total.Account = ""
	for i := range rows {
		s := &rows[i]
		s.LastUsed = rfc3339(s.LastMS)
		if a, ok := byName[s.Account]; ok {
			s.Status = accountStatus(a, now.UnixMilli())
			if a.RateLimitedUntil > now.UnixMilli() {
				s.RateLimitedUntil = rfc3339(a.RateLimitedUntil)
			}
		}
		total.Requests += s.Requests
		total.Errors += s.Errors
		total.RateLimited += s.RateLimited
		total.InputTokens += s.InputTokens
		total.OutputTokens += s.OutputTokens
		total.CacheReadInputTokens += s.CacheReadInputTokens
		total.CacheCreationInputTokens += s.CacheCreationInputTokens
		total.LastMS = max(total.LastMS, s.LastMS)
	}
	total.LastUsed = rfc3339(total.LastMS)
	if rows == nil {
		rows = []apiStat{}
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"since":    from.UTC().Format(time.RFC3339),
		"accounts": rows,
		"total":    total,
	})
}

// apiRequest is one request in /api/requests, with the fields of
// `requests list --json`.
type apiRequest struct {
	ID                       string `json:"id"`
	Timestamp                string `json:"timestamp"`
	Method                   string `json:"method"`
	Path                     string `json:"path"`
	Model                    string `json:"model"`
	Account                  string `json:"account"`
	Status                   int    `json:"status"`
	Attempts                 int    `json:"attempts"`
	DurationMS               int64  `json:"duration_ms"`
	TTFBMS                   int64  `json:"ttfb_ms"`
	InputTokens              int64  `json:"input_tokens"`
	OutputTokens             int64  `json:"output_tokens"`
	CacheReadInputTokens     int64  `json:"cache_read_input_tokens"`
	CacheCreationInputTokens int64  `json:"cache_creation_input_tokens"`
	Streamed                 bool   `json:"streamed"`
	EndState                 string `json:"end_state"`
	Error                    string `json:"error"`
	Client                   string `json:"client"`
}

func (g *Guard) apiRequests(w http.ResponseWriter, r *http.Request) {
	if g.logDB == nil {
		writeError(w, http.StatusServiceUnavailable, errAPI, "claudeflare: the request log is not available", false, 0)
		return
	}
	limit := defaultRequestsLimit
	if s := r.URL.Query().Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			writeError(w, http.StatusBadRequest, errInvalidRequest, "claudeflare: limit must be a positive integer", false, 0)
			return
		}
		limit = min(n, maxRequestsLimit)
	}
	var rows []store.Request
	err := g.logDB.R.SelectContext(r.Context(), &rows, `SELECT `+store.RequestColumns+` FROM
		(SELECT `+store.RequestColumns+` FROM requests ORDER BY seq DESC LIMIT ?) ORDER BY seq`, limit)
	if err != nil {
		g.internalError(w, r, "read request log", err)
		return
	}
	out := make([]apiRequest, len(rows))
	for i, q := range rows {
		out[i] = apiRequest{
			ID: q.ID, Timestamp: store.FromMS(q.TS).Format(time.RFC3339Nano), Method: q.Method, Path: q.Path,
			Model: q.Model, Account: q.Account, Status: q.Status, Attempts: q.Attempts,
			DurationMS: q.DurationMS, TTFBMS: q.TTFBMS, InputTokens: q.InputTokens, OutputTokens: q.OutputTokens,
			CacheReadInputTokens: q.CacheReadInputTokens, CacheCreationInputTokens: q.CacheCreationInputTokens,
			Streamed: q.Streamed, EndState: q.EndState, Error: q.Error, Client: q.Client,
		}
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
