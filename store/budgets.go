package store

import (
	"context"
	"fmt"
	"time"
)

// billedTokensSQL is a request row's billed tokens (Request.BilledTokens)
// in SQL.
const billedTokensSQL = `input_tokens + output_tokens + cache_read_input_tokens +
	max(cache_creation_input_tokens, cache_creation_5m_input_tokens + cache_creation_1h_input_tokens)`

// BilledTokens is every token the request is billed for: input, output,
// cache reads and cache writes (the total, or the sum of the 5-minute and
// 1-hour writes when only those were given). Client key budgets count it.
func (r Request) BilledTokens() int64 {
	return r.InputTokens + r.OutputTokens + r.CacheReadInputTokens +
		max(r.CacheCreationInputTokens, r.CacheCreation5mInputTokens+r.CacheCreation1hInputTokens)
}

// ClientUsage is what one client key used in a span of the request log.
type ClientUsage struct {
	Client string `db:"client"`
	// Tokens is the sum of BilledTokens.
	Tokens int64 `db:"tokens"`
	// CostUSD is the sum of cost_usd; requests without a price add 0.
	CostUSD float64 `db:"cost_usd"`
}

// ClientUsageBetween returns per client key what the requests that
// started in [from, until) used; client "" means every key (requests made
// without a key are left out).
func ClientUsageBetween(ctx context.Context, db *DB, from, until time.Time, client string) ([]ClientUsage, error) {
	q := `SELECT client, coalesce(sum(` + billedTokensSQL + `), 0) AS tokens, coalesce(sum(cost_usd), 0) AS cost_usd
		FROM requests WHERE ts >= ? AND ts < ? AND client != ''`
	args := []any{ToMS(from), ToMS(until)}
	if client != "" {
		q += ` AND client = ?`
		args = append(args, client)
	}
	q += ` GROUP BY client`
	var out []ClientUsage
	if err := db.R.SelectContext(ctx, &out, q, args...); err != nil {
		return nil, fmt.Errorf("read client key use: %w", err)
	}
	return out, nil
}
