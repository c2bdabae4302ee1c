// Package requestlog reads the request log: filtered listings streamed row
// by row, following new rows as they are written, payload export with the
// sealed captures opened, and per-account statistics. It never loads a
// whole table into memory.
package requestlog

import (
	"context"
	"fmt"
	"time"

	"github.com/claudeflare/claudeflare/store"
)

// Filter selects requests (store.RequestFilter: since, until, account,
// status range, id, sequence bounds, limit). Zero fields select everything.
type Filter = store.RequestFilter

// HighWater returns the newest sequence number in the log (0 when empty).
func HighWater(ctx context.Context, db *store.DB) (int64, error) {
	seq, err := db.RequestHighWater(ctx)
	if err != nil {
		return 0, fmt.Errorf("read request log: %w", err)
	}
	return seq, nil
}

// List calls fn with every request f selects, oldest first (by timestamp,
// then insertion order), one row at a time. With f.Limit, only the newest
// f.Limit rows are passed, still oldest first. The *store.Request is
// reused between calls. An error from fn stops the listing and is returned.
func List(ctx context.Context, db *store.DB, f Filter, fn func(*store.Request) error) error {
	rows, err := db.QueryRequests(ctx, f)
	if err != nil {
		return fmt.Errorf("query request log: %w", err)
	}
	defer rows.Close()
	var r store.Request
	for rows.Next() {
		if err := rows.Scan(&r); err != nil {
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
