package store

import (
	"context"
	"database/sql/driver"
	"encoding/json"
	"fmt"
)

// Request is one row of the request log.
type Request struct {
	Seq                      int64  `db:"seq"`
	ID                       string `db:"id"`
	TS                       int64  `db:"ts"`
	Method                   string `db:"method"`
	Path                     string `db:"path"`
	Model                    string `db:"model"`
	Account                  string `db:"account"`
	Status                   int    `db:"status"`
	Attempts                 int    `db:"attempts"`
	DurationMS               int64  `db:"duration_ms"`
	TTFBMS                   int64  `db:"ttfb_ms"`
	InputTokens              int64  `db:"input_tokens"`
	OutputTokens             int64  `db:"output_tokens"`
	CacheReadInputTokens     int64  `db:"cache_read_input_tokens"`
	CacheCreationInputTokens int64  `db:"cache_creation_input_tokens"`
	Streamed                 bool   `db:"streamed"`
	EndState                 string `db:"end_state"`
	Error                    string `db:"error"`
	Client                   string `db:"client"`
	// The cache writes by lifetime (usage.cache_creation), 0 when the
	// answer did not split them.
	CacheCreation5mInputTokens int64 `db:"cache_creation_5m_input_tokens"`
	CacheCreation1hInputTokens int64 `db:"cache_creation_1h_input_tokens"`
	// ServerToolUse is usage.server_tool_use as sent (JSON text, e.g.
	// {"web_search_requests":1}), nil when the answer had none.
	ServerToolUse *string `db:"server_tool_use"`
	// UpstreamRequestID is the upstream's request-id header.
	UpstreamRequestID string `db:"upstream_request_id"`
	// Session is a short hash of the request's affinity key, never the key.
	Session string `db:"session"`
	// AccountsTried names the accounts tried, in order; nil on rows
	// logged before the column existed.
	AccountsTried Names `db:"accounts_tried"`
	// CostUSD is the request's price in USD at the API's list prices
	// (pricing), nil when its model has no price.
	CostUSD *float64 `db:"cost_usd"`
}

// Names is a list of names stored as a JSON array. A nil list is written
// as [] (nothing tried) and NULL reads back as nil (not known).
type Names []string

// Value encodes the list as JSON text.
func (n Names) Value() (driver.Value, error) {
	if n == nil {
		return "[]", nil
	}
	b, err := json.Marshal([]string(n))
	if err != nil {
		return nil, err
	}
	return string(b), nil
}

// Scan decodes JSON text; NULL gives nil.
func (n *Names) Scan(src any) error {
	var b []byte
	switch v := src.(type) {
	case nil:
		*n = nil
		return nil
	case string:
		b = []byte(v)
	case []byte:
		b = v
	default:
		return fmt.Errorf("names: cannot scan %T", src)
	}
	out := Names{}
	if err := json.Unmarshal(b, (*[]string)(&out)); err != nil {
		return fmt.Errorf("names: %w", err)
	}
	*n = out
	return nil
}

// StatusClientClosed is the status of a request whose client went away
// before the answer ended (nginx's 499).
const StatusClientClosed = 499

// RequestColumns lists the request columns in a stable order, for SELECTs.
const RequestColumns = `seq, id, ts, method, path, model, account, status, attempts, duration_ms, ttfb_ms,
	input_tokens, output_tokens, cache_read_input_tokens, cache_creation_input_tokens,
	streamed, end_state, error, client,
	cache_creation_5m_input_tokens, cache_creation_1h_input_tokens, server_tool_use,
	upstream_request_id, session, accounts_tried, cost_usd`

// Payload is a request's sealed capture of headers and bodies.
type Payload struct {
	RequestID string
	TS        int64
	KeyID     int64
	Sealed    []byte
	Truncated bool
}

// InsertRequests writes a batch of requests and their payloads in one short
// transaction. Payloads whose request is not in the batch are ignored.
func InsertRequests(ctx context.Context, db *DB, reqs []Request, payloads []Payload) error {
	if len(reqs) == 0 {
		return nil
	}
	tx, err := db.W.BeginTxx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin request batch: %w", err)
	}
	defer tx.Rollback()
	insReq, err := tx.PreparexContext(ctx, `INSERT INTO requests
		(id, ts, method, path, model, account, status, attempts, duration_ms, ttfb_ms,
		 input_tokens, output_tokens, cache_read_input_tokens, cache_creation_input_tokens,
		 streamed, end_state, error, client,
		 cache_creation_5m_input_tokens, cache_creation_1h_input_tokens, server_tool_use,
		 upstream_request_id, session, accounts_tried, cost_usd)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`)
	if err != nil {
		return fmt.Errorf("prepare request insert: %w", err)
	}
	defer insReq.Close()
	seqs := make(map[string]int64, len(reqs))
	for _, r := range reqs {
		res, err := insReq.ExecContext(ctx, r.ID, r.TS, r.Method, r.Path, r.Model, r.Account, r.Status, r.Attempts,
			r.DurationMS, r.TTFBMS, r.InputTokens, r.OutputTokens, r.CacheReadInputTokens, r.CacheCreationInputTokens,
			r.Streamed, r.EndState, r.Error, r.Client,
			r.CacheCreation5mInputTokens, r.CacheCreation1hInputTokens, r.ServerToolUse,
			r.UpstreamRequestID, r.Session, r.AccountsTried, r.CostUSD)
		if err != nil {
			return fmt.Errorf("insert request: %w", err)
		}
		seq, err := res.LastInsertId()
		if err != nil {
			return fmt.Errorf("insert request: %w", err)
		}
		seqs[r.ID] = seq
	}
	if len(payloads) > 0 {
		insPay, err := tx.PreparexContext(ctx, `INSERT INTO payloads (request_seq, ts, key_id, sealed, truncated) VALUES (?, ?, ?, ?, ?)`)
		if err != nil {
			return fmt.Errorf("prepare payload insert: %w", err)
		}
		defer insPay.Close()
		for _, p := range payloads {
			seq, ok := seqs[p.RequestID]
			if !ok {
				continue
			}
			if _, err := insPay.ExecContext(ctx, seq, p.TS, p.KeyID, p.Sealed, p.Truncated); err != nil {
				return fmt.Errorf("insert payload: %w", err)
			}
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit request batch: %w", err)
	}
	return nil
}

// PayloadKeyIDs returns the distinct data-key ids that payloads refer to.
func PayloadKeyIDs(ctx context.Context, db *DB) ([]int64, error) {
	var ids []int64
	err := db.R.SelectContext(ctx, &ids, `SELECT DISTINCT key_id FROM payloads`)
	return ids, err
}
