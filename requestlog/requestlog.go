// Package requestlog reads the request log: filtered listings streamed row
// by row, following new rows as they are written, payload export with the
// sealed captures opened, and per-account statistics. It never loads a
// whole table into memory.
package requestlog

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/claudeflare/claudeflare/store"
)

// Filter selects requests. Zero fields select everything.
type Filter struct {
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
	// Limit keeps only the newest Limit rows (0 = all).
	Limit int
}

// where renders f as a WHERE clause over the requests table aliased r.
func (f Filter) where() (string, []any) {
	var conds []string
	var args []any
	add := func(c string, a any) {
		conds = append(conds, c)
		args = append(args, a)
	}
	if !f.Since.IsZero() {
		add("r.ts >= ?", store.ToMS(f.Since))
	}
	if !f.Until.IsZero() {
		add("r.ts <= ?", store.ToMS(f.Until))
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
	if len(conds) == 0 {
		return "", nil
	}
	return " WHERE " + strings.Join(conds, " AND "), args
}

var requestColumnsR = prefixColumns("r.", store.RequestColumns)

func prefixColumns(p, cols string) string {
	parts := strings.Split(cols, ",")
	for i, c := range parts {
		parts[i] = p + strings.TrimSpace(c)
	}
	return strings.Join(parts, ", ")
}

// HighWater returns the newest sequence number in the log (0 when empty).
func HighWater(ctx context.Context, db *store.DB) (int64, error) {
	var seq int64
	if err := db.R.GetContext(ctx, &seq, `SELECT coalesce(max(seq), 0) FROM requests`); err != nil {
		return 0, fmt.Errorf("read request log: %w", err)
	}
	return seq, nil
}

// List calls fn with every request f selects, oldest first (by timestamp,
// then insertion order), one row at a time. With f.Limit, only the newest
// f.Limit rows are passed, still oldest first. The *store.Request is
// reused between calls. An error from fn stops the listing and is returned.
func List(ctx context.Context, db *store.DB, f Filter, fn func(*store.Request) error) error {
	where, args := f.where()
	q := `SELECT ` + requestColumnsR + ` FROM requests r` + where + ` ORDER BY r.ts, r.seq`
	if f.Limit > 0 {
		q = `SELECT * FROM (SELECT ` + requestColumnsR + ` FROM requests r` + where +
			` ORDER BY r.ts DESC, r.seq DESC LIMIT ?) ORDER BY ts, seq`
		args = append(args, f.Limit)
	}
	rows, err := db.R.QueryxContext(ctx, q, args...)
	if err != nil {
		return fmt.Errorf("query request log: %w", err)
	}
	defer rows.Close()
	var r store.Request
	for rows.Next() {
		if err := rows.StructScan(&r); err != nil {
			return fmt.Errorf("read request log: %w", err)
		}
		if err := fn(&r); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read request log: %w", err)
	}
	return nil
}

// Follow passes fn every request f selects that is written after the row
// with sequence after, oldest first, polling the log on
// each tick, until ctx is done (then it returns nil) or fn fails.
// f.Limit and f.UpToSeq are ignored.
func Follow(ctx context.Context, db *store.DB, f Filter, after int64, tick <-chan time.Time, fn func(*store.Request) error) error {
	f.Limit = 0
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick:
		}
		// Read the mark first and stop there: rows that do not match the
		// filter are not scanned again, and a row written during the
		// query is left for the next poll rather than skipped.
		hw, err := HighWater(ctx, db)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		if hw <= after {
			continue
		}
		f.AfterSeq, f.UpToSeq = after, hw
		err = List(ctx, db, f, fn)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		after = hw
	}
}
