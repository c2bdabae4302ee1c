package store

// Reading the request log, for package requestlog: filtered listings and
// payloads streamed row by row, per-account sums and duration groups.
// requestlog decides what to show and how; the SQL is here. Every query
// runs on the read-only pool.

import (
	"context"
	"strings"
	"time"

	"github.com/jmoiron/sqlx"
)

// RequestFilter selects requests. Zero fields select everything.
type RequestFilter struct {
	Since time.Time // ts >= Since
	Until time.Time // ts <= Until
	// Account is an account name.
	Account string
	// StatusMin and StatusMax bound the status code, inclusive (0 = open).
	StatusMin, StatusMax int
	// ID is one request id.
	ID string
	// AfterSeq and UpToSeq bound the insertion sequence: seq > AfterSeq
	// and, when set, seq <= UpToSeq.
	AfterSeq, UpToSeq int64
	// BeforeTS and BeforeSeq, when BeforeSeq is set, keep the rows before
	// the row (BeforeTS, BeforeSeq) in listing order (by ts, then seq): a
	// cursor that walks back through the log page by page, unmoved by rows
	// written meanwhile.
	BeforeTS, BeforeSeq int64
	// Limit keeps only the newest Limit rows (0 = all).
	Limit int
}

// where renders f as a WHERE clause over the requests table aliased r.
func (f RequestFilter) where() (string, []any) {
	var conds []string
	var args []any
	add := func(c string, a any) {
		conds = append(conds, c)
		args = append(args, a)
	}
	if !f.Since.IsZero() {
		add("r.ts >= ?", ToMS(f.Since))
	}
	if !f.Until.IsZero() {
		add("r.ts <= ?", ToMS(f.Until))
	}
	if f.Account != "" {
		add("r.account = ?", f.Account)
	}
	if f.StatusMin > 0 {
		add("r.status >= ?", f.StatusMin)
	}
	if f.StatusMax > 0 {
		add("r.status <= ?", f.StatusMax)
	}
	if f.ID != "" {
		add("r.id = ?", f.ID)
	}
	if f.AfterSeq > 0 {
		add("r.seq > ?", f.AfterSeq)
	}
	if f.UpToSeq > 0 {
		add("r.seq <= ?", f.UpToSeq)
	}
	if f.BeforeSeq > 0 {
		conds = append(conds, "(r.ts < ? OR (r.ts = ? AND r.seq < ?))")
		args = append(args, f.BeforeTS, f.BeforeTS, f.BeforeSeq)
	}
	if len(conds) == 0 {
		return "", nil
	}
	return " WHERE " + strings.Join(conds, " AND "), args
}

// requestColumnsR is RequestColumns over the requests table aliased r.
var requestColumnsR = prefixColumns("r.", RequestColumns)

func prefixColumns(p, cols string) string {
	parts := strings.Split(cols, ",")
	for i, c := range parts {
		parts[i] = p + strings.TrimSpace(c)
	}
	return strings.Join(parts, ", ")
}

// RequestHighWater reads the newest request seq in the log (0 when
// empty), on the read-only pool.
func (db *DB) RequestHighWater(ctx context.Context) (int64, error) {
	var seq int64
	err := db.R.GetContext(ctx, &seq, `SELECT coalesce(max(seq), 0) FROM requests`)
	return seq, err
}

// Requests is a stream of request rows, read one at a time.
type Requests struct{ rows *sqlx.Rows }

// QueryRequests selects the requests f selects, oldest first (by ts, then
// seq). With f.Limit, only the newest f.Limit of them, still oldest first.
// The caller closes the stream.
func (db *DB) QueryRequests(ctx context.Context, f RequestFilter) (*Requests, error) {
	where, args := f.where()
	q := `SELECT ` + requestColumnsR + ` FROM requests r` + where + ` ORDER BY r.ts, r.seq`
	if f.Limit > 0 {
		q = `SELECT * FROM (SELECT ` + requestColumnsR + ` FROM requests r` + where +
			` ORDER BY r.ts DESC, r.seq DESC LIMIT ?) ORDER BY ts, seq`
		args = append(args, f.Limit)
	}
	rows, err := db.R.QueryxContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	return &Requests{rows: rows}, nil
}

// Next advances to the next row; false at the end or on an error (Err).
func (s *Requests) Next() bool { return s.rows.Next() }

// Scan reads the current row into dst.
func (s *Requests) Scan(dst *Request) error { return s.rows.StructScan(dst) }

// Err is the error that ended the stream, if any.
func (s *Requests) Err() error { return s.rows.Err() }

// Close ends the stream.
func (s *Requests) Close() error { return s.rows.Close() }

// RequestPayload is a request joined with its sealed payload.
type RequestPayload struct {
	Request
	KeyID  int64  `db:"key_id"`
	Sealed []byte `db:"sealed"`
	// PayTruncated is the payload's own truncated flag.
	PayTruncated bool `db:"pay_truncated"`
}

// RequestPayloads is a stream of requests with their payloads, read one
// at a time.
type RequestPayloads struct{ rows *sqlx.Rows }

// QueryRequestPayloads selects the requests f selects that have a
// payload, with it, oldest first (by ts, then seq). f.Limit is ignored.
// The caller closes the stream.
func (db *DB) QueryRequestPayloads(ctx context.Context, f RequestFilter) (*RequestPayloads, error) {
	f.Limit = 0
	where, args := f.where()
	rows, err := db.R.QueryxContext(ctx, `SELECT `+requestColumnsR+`, p.key_id, p.sealed, p.truncated AS pay_truncated
		FROM requests r JOIN payloads p ON p.request_seq = r.seq`+where+` ORDER BY r.ts, r.seq`, args...)
	if err != nil {
		return nil, err
	}
	return &RequestPayloads{rows: rows}, nil
}

// Next advances to the next row; false at the end or on an error (Err).
func (s *RequestPayloads) Next() bool { return s.rows.Next() }

// Scan reads the current row into dst, reusing dst.Sealed's storage.
func (s *RequestPayloads) Scan(dst *RequestPayload) error {
	dst.Sealed = dst.Sealed[:0]
	return s.rows.StructScan(dst)
}

// Err is the error that ended the stream, if any.
func (s *RequestPayloads) Err() error { return s.rows.Err() }

// Close ends the stream.
func (s *RequestPayloads) Close() error { return s.rows.Close() }

// AccountSums are one account's request totals over a period.
type AccountSums struct {
	Account string `db:"account"`
	// Requests counts the requests, Errors those with a status >= 400, no
	// status, or an error recorded.
	Requests      int64 `db:"requests"`
	Errors        int64 `db:"errors"`
	Input         int64 `db:"input"`
	Output        int64 `db:"output"`
	CacheRead     int64 `db:"cache_read"`
	CacheCreation int64 `db:"cache_creation"`
	LastUsed      int64 `db:"last_used"` // unix ms
}

// SumRequests sums the requests at or after sinceMS (unix ms) per account
// name: one row per account in the log, not per request.
func (db *DB) SumRequests(ctx context.Context, sinceMS int64) ([]AccountSums, error) {
	var sums []AccountSums
	err := db.R.SelectContext(ctx, &sums, `SELECT account, count(*) AS requests,
		sum(status >= 400 OR status = 0 OR error != '') AS errors,
		sum(input_tokens) AS input, sum(output_tokens) AS output,
		sum(cache_read_input_tokens) AS cache_read, sum(cache_creation_input_tokens) AS cache_creation,
		max(ts) AS last_used
		FROM requests WHERE ts >= ? GROUP BY account`, sinceMS)
	return sums, err
}

// EachDuration calls fn with every (account, duration, count) group of
// the requests at or after sinceMS, ordered by account, then duration,
// one group at a time. An error from fn stops the reading and is returned.
func (db *DB) EachDuration(ctx context.Context, sinceMS int64, fn func(account string, durationMS, count int64) error) error {
	rows, err := db.R.QueryxContext(ctx, `SELECT account, duration_ms, count(*) FROM requests
		WHERE ts >= ? GROUP BY account, duration_ms ORDER BY account, duration_ms`, sinceMS)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var acct string
		var d, c int64
		if err := rows.Scan(&acct, &d, &c); err != nil {
			return err
		}
		if err := fn(acct, d, c); err != nil {
			return err
		}
	}
	return rows.Err()
}

// AccountUse is how much an account was used: its request count and last
// request (unix ms).
type AccountUse struct {
	Account  string `db:"account"`
	Requests int64  `db:"requests"`
	LastUsed int64  `db:"last_used"`
}

// AccountUses reads every named account's use over the whole log: one row
// per account in the log, not per request.
func (db *DB) AccountUses(ctx context.Context) ([]AccountUse, error) {
	var uses []AccountUse
	err := db.R.SelectContext(ctx, &uses, `SELECT account, count(*) AS requests, max(ts) AS last_used
		FROM requests WHERE account != '' GROUP BY account`)
	return uses, err
}
