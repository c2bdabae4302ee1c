package requestlog

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/claudeflare/claudeflare/internal/acctstate"
	"github.com/claudeflare/claudeflare/store"
)

// The JSON shapes below are shared by the CLI's --json output and the
// daemon's /api/ routes, so both say the same thing with the same keys.

// RFC3339 formats unix milliseconds as an RFC 3339 UTC time, nil for 0.
func RFC3339(ms int64) *string {
	if ms == 0 {
		return nil
	}
	s := time.UnixMilli(ms).UTC().Format(time.RFC3339)
	return &s
}

// msOf is t as unix milliseconds, 0 for the zero time.
func msOf(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

// Utilization is a 0..1 utilization, nil when unknown (negative).
func Utilization(u float64) *float64 {
	if u < 0 {
		return nil
	}
	return &u
}

// AccountStatus is one word for an account's state at nowMS (see
// internal/acctstate): ok, paused, needs_login, key_refused, quarantined,
// limited or limited_model.
func AccountStatus(a store.Account, nowMS int64) string {
	return acctstate.Of(a, time.UnixMilli(nowMS)).Word
}

// RequestLine is one request as `requests list --json` and GET
// /api/requests show it.
type RequestLine struct {
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
	// CostUSD is the request's cost at the price table (package pricing):
	// the API's list price, for a subscription (OAuth) account the
	// API-equivalent value; null when its model had no price.
	CostUSD *float64 `json:"cost_usd"`
	// The cache writes by lifetime; 0 on rows logged before they were kept.
	CacheCreation5mInputTokens int64 `json:"cache_creation_5m_input_tokens"`
	CacheCreation1hInputTokens int64 `json:"cache_creation_1h_input_tokens"`
	// ServerToolUse is the usage's server_tool_use object as the upstream
	// sent it (e.g. {"web_search_requests":1}), null when absent.
	ServerToolUse json.RawMessage `json:"server_tool_use"`
	// UpstreamRequestID is the upstream's request-id (null when none).
	UpstreamRequestID *string `json:"upstream_request_id"`
	// Session is a short hash of the session key, never the key (null
	// when none was logged).
	Session *string `json:"session"`
	// AccountsTried names the accounts tried, in order: [] when none was,
	// null on rows logged before the column existed.
	AccountsTried []string `json:"accounts_tried"`
}

// NewRequestLine is r as a RequestLine.
func NewRequestLine(r *store.Request) RequestLine {
	out := RequestLine{
		ID: r.ID, Timestamp: Timestamp(r.TS), Method: r.Method, Path: r.Path, Model: r.Model,
		Account: r.Account, Status: r.Status, Attempts: r.Attempts, DurationMS: r.DurationMS, TTFBMS: r.TTFBMS,
		InputTokens: r.InputTokens, OutputTokens: r.OutputTokens,
		CacheReadInputTokens: r.CacheReadInputTokens, CacheCreationInputTokens: r.CacheCreationInputTokens,
		Streamed: r.Streamed, EndState: r.EndState, Client: r.Client,
	}
	if r.CostUSD != nil {
		c := *r.CostUSD
		out.CostUSD = &c
	}
	if r.Error != "" {
		e := r.Error
		out.Error = &e
	}
	out.CacheCreation5mInputTokens, out.CacheCreation1hInputTokens = r.CacheCreation5mInputTokens, r.CacheCreation1hInputTokens
	if r.ServerToolUse != nil && json.Valid([]byte(*r.ServerToolUse)) {
		out.ServerToolUse = json.RawMessage(*r.ServerToolUse)
	}
	out.UpstreamRequestID, out.Session = nonEmpty(r.UpstreamRequestID), nonEmpty(r.Session)
	if r.AccountsTried != nil {
		out.AccountsTried = append([]string{}, r.AccountsTried...)
	}
	return out
}

// nonEmpty is &s, nil for "".
func nonEmpty(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// AccountLine is one account as `accounts list --json` and GET
// /api/accounts show it: state only, never a secret.
type AccountLine struct {
	Name         string `json:"name"`
	Kind         string `json:"kind"`
	Mode         string `json:"mode"`
	Priority     int    `json:"priority"`
	Tier         int    `json:"tier"`
	Paused       bool   `json:"paused"`
	Status       string `json:"status"`
	StatusReason string `json:"status_reason,omitempty"`
	// Window (limited: 5h, 7d, ...), Family (limited_model: opus, ...)
	// and Until (when the state ends) detail Status.
	Window           string   `json:"window"`
	Family           string   `json:"family"`
	Until            *string  `json:"until"`
	RateLimitedUntil *string  `json:"rate_limited_until"`
	RateLimitStatus  string   `json:"rate_limit_status"`
	Utilization5h    *float64 `json:"utilization_5h"`
	Utilization7d    *float64 `json:"utilization_7d"`
	TokenExpiresAt   *string  `json:"token_expires_at"`
	Requests         int64    `json:"requests"`
	LastUsed         *string  `json:"last_used"`
	// ModelLimits: the model-scoped limits in force, family -> until.
	ModelLimits map[string]string `json:"model_limits"`
	// Overage is the policy (avoid or allow); OverageUntil, when upstream
	// serves the account on extra usage until then.
	Overage      string  `json:"overage"`
	OverageUntil *string `json:"overage_until"`

	// The same times as unix ms (0 = none), for tables.
	UntilMS            int64 `json:"-"`
	RateLimitedUntilMS int64 `json:"-"`
	TokenExpiresAtMS   int64 `json:"-"`
	LastUsedMS         int64 `json:"-"`
}

// AccountLines lists the vault's accounts with their request counts and
// last use from the log (logDB may be nil), in priority order.
func AccountLines(ctx context.Context, vaultDB, logDB *store.DB, now time.Time) ([]AccountLine, error) {
	accts, err := store.ListAccounts(ctx, vaultDB)
	if err != nil {
		return nil, err
	}
	uses := map[string]store.AccountUse{}
	if logDB != nil {
		rows, err := logDB.AccountUses(ctx)
		if err != nil {
			return nil, fmt.Errorf("count requests per account: %w", err)
		}
		for _, u := range rows {
			uses[u.Account] = u
		}
	}
	nowMS := now.UnixMilli()
	out := make([]AccountLine, 0, len(accts))
	for _, a := range accts {
		rl := a.RateLimitedUntil
		if rl <= nowMS {
			rl = 0
		}
		u := uses[a.Name]
		st := acctstate.Of(a, now)
		models := map[string]string{}
		for fam, t := range st.Models {
			models[fam] = t.UTC().Format(time.RFC3339)
		}
		out = append(out, AccountLine{
			Name: a.Name, Kind: a.Kind, Mode: a.Mode, Priority: a.Priority, Tier: a.Tier, Paused: a.Paused,
			Status: st.Word, StatusReason: a.StatusReason,
			Window: st.Window, Family: st.Family, Until: RFC3339(msOf(st.Until)), UntilMS: msOf(st.Until),
			ModelLimits: models, Overage: a.Overage, OverageUntil: RFC3339(msOf(st.Overage)),
			RateLimitedUntil: RFC3339(rl), RateLimitStatus: a.RLStatus,
			Utilization5h: Utilization(a.Util5h), Utilization7d: Utilization(a.Util7d),
			TokenExpiresAt: RFC3339(a.TokenExpiresAt), Requests: u.Requests, LastUsed: RFC3339(u.LastUsed),
			RateLimitedUntilMS: rl, TokenExpiresAtMS: a.TokenExpiresAt, LastUsedMS: u.LastUsed,
		})
	}
	return out, nil
}

// StatsLine is one line of `stats --json` (an account's, or the pool's
// with scope "pool") and an entry of GET /api/stats.
type StatsLine struct {
	Scope                    string  `json:"scope"` // account | pool
	Account                  *string `json:"account"`
	Requests                 int64   `json:"requests"`
	Errors                   int64   `json:"errors"`
	InputTokens              int64   `json:"input_tokens"`
	OutputTokens             int64   `json:"output_tokens"`
	CacheReadInputTokens     int64   `json:"cache_read_input_tokens"`
	CacheCreationInputTokens int64   `json:"cache_creation_input_tokens"`
	MedianDurationMS         int64   `json:"median_duration_ms"`
	P95DurationMS            int64   `json:"p95_duration_ms"`
	LastUsed                 *string `json:"last_used"`
	// CostUSD sums the priced requests (API list prices: for a
	// subscription account the API-equivalent value); null when none has
	// a price. UnpricedRequests counts those whose model had none.
	CostUSD          *float64 `json:"cost_usd"`
	UnpricedRequests int64    `json:"unpriced_requests"`
	Status           string   `json:"status,omitempty"` // an acctstate word, or removed
	RateLimitedUntil *string  `json:"rate_limited_until,omitempty"`
	RateLimitStatus  string   `json:"rate_limit_status,omitempty"`
	Utilization5h    *float64 `json:"utilization_5h,omitempty"`
	Utilization7d    *float64 `json:"utilization_7d,omitempty"`
	Reset5h          *string  `json:"reset_5h,omitempty"`
	Reset7d          *string  `json:"reset_7d,omitempty"`
	Accounts         *int     `json:"accounts,omitempty"`  // pool: accounts in the vault
	Available        *int     `json:"available,omitempty"` // pool: of them, status ok
	Since            *string  `json:"since,omitempty"`
}

// Lines are the stats as StatsLines: one per account, then the pool's.
func (st *Stats) Lines() (accounts []StatsLine, pool StatsLine) {
	var since *string
	if !st.Since.IsZero() {
		since = RFC3339(st.Since.UnixMilli())
	}
	n, available := 0, 0
	for _, a := range st.Accounts {
		accounts = append(accounts, statsLine(a, since))
		if a.State != nil {
			n++
			if a.State.Status == store.StatusOK {
				available++
			}
		}
	}
	pool = statsLine(st.Pool, since)
	pool.Scope, pool.Account, pool.Status = "pool", nil, ""
	pool.Accounts, pool.Available = &n, &available
	return accounts, pool
}

func statsLine(a AccountStats, since *string) StatsLine {
	name := a.Account
	out := StatsLine{
		Scope: "account", Account: &name, Requests: a.Requests, Errors: a.Errors,
		InputTokens: a.InputTokens, OutputTokens: a.OutputTokens,
		CacheReadInputTokens: a.CacheReadInputTokens, CacheCreationInputTokens: a.CacheCreationInputTokens,
		MedianDurationMS: a.MedianDurationMS, P95DurationMS: a.P95DurationMS,
		LastUsed: RFC3339(a.LastUsed), Since: since, Status: "removed",
		CostUSD: a.CostUSD, UnpricedRequests: a.Unpriced,
	}
	if s := a.State; s != nil {
		out.Status, out.RateLimitedUntil, out.RateLimitStatus = s.Status, RFC3339(s.RateLimitedUntil), s.RateLimitStatus
		out.Utilization5h, out.Utilization7d = Utilization(s.Utilization5h), Utilization(s.Utilization7d)
		out.Reset5h, out.Reset7d = RFC3339(s.Reset5h), RFC3339(s.Reset7d)
	}
	return out
}
