package store

import (
	"context"
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
}

// StatusClientClosed is the status of a request whose client went away
// before the answer ended (nginx's 499).
const StatusClientClosed = 499

// RequestColumns lists the request columns in a stable order, for SELECTs.
const RequestColumns = `seq, id, ts, method, path, model, account, status, attempts, duration_ms, ttfb_ms,
	input_tokens, output_tokens, cache_read_input_tokens, cache_creation_input_tokens,
	streamed, end_state, error, client`

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
		 streamed, end_state, error, client)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`)
	if err != nil {
		return fmt.Errorf("prepare request insert: %w", err)
	}
	defer insReq.Close()
	seqs := make(map[string]int64, len(reqs))
	for _, r := range reqs {
		res, err := insReq.ExecContext(ctx, r.ID, r.TS, r.Method, r.Path, r.Model, r.Account, r.Status, r.Attempts,
			r.DurationMS, r.TTFBMS, r.InputTokens, r.OutputTokens, r.CacheReadInputTokens, r.CacheCreationInputTokens,
			r.Streamed, r.EndState, r.Error, r.Client)
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
