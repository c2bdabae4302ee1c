package store

// Request log maintenance, for retention: counting and deleting old rows
// in batches, the write-ahead log's checkpoints and incremental vacuum.
// Rows are selected by bounds: ts < cut (unix ms) and seq <= maxSeq.

import (
	"context"
	"fmt"

	"github.com/jmoiron/sqlx"
)

// MaxRequestSeq reads the highest request seq in the log (0 when empty),
// on the writer.
func (db *DB) MaxRequestSeq(ctx context.Context) (int64, error) {
	var seq int64
	err := db.W.GetContext(ctx, &seq, `SELECT coalesce(max(seq), 0) FROM requests`)
	return seq, err
}

// CountOldRequests counts the requests the bounds select and their payloads.
func (db *DB) CountOldRequests(ctx context.Context, cut, maxSeq int64) (reqs, pays int64, err error) {
	err = db.R.QueryRowxContext(ctx, `SELECT
		(SELECT count(*) FROM requests WHERE ts < ?1 AND seq <= ?2),
		(SELECT count(*) FROM payloads p JOIN requests r ON r.seq = p.request_seq WHERE r.ts < ?1 AND r.seq <= ?2)`,
		cut, maxSeq).Scan(&reqs, &pays)
	return reqs, pays, err
}

// CountOldPayloads counts the payloads the bounds select (by the
// payload's own ts).
func (db *DB) CountOldPayloads(ctx context.Context, cut, maxSeq int64) (int64, error) {
	var pays int64
	err := db.R.GetContext(ctx, &pays, `SELECT count(*) FROM payloads WHERE ts < ?1 AND request_seq <= ?2`, cut, maxSeq)
	return pays, err
}

// CountOldAll counts the requests the bounds select, and the payloads
// selected by their own ts or their request's.
func (db *DB) CountOldAll(ctx context.Context, cut, maxSeq int64) (reqs, pays int64, err error) {
	err = db.R.QueryRowxContext(ctx, `SELECT
		(SELECT count(*) FROM requests WHERE ts < ?1 AND seq <= ?2),
		(SELECT count(*) FROM payloads p JOIN requests r ON r.seq = p.request_seq
		  WHERE p.request_seq <= ?2 AND (p.ts < ?1 OR r.ts < ?1))`,
		cut, maxSeq).Scan(&reqs, &pays)
	return reqs, pays, err
}

// DeleteOldRequests deletes, in tx, up to limit of the oldest requests
// the bounds select and their payloads. The payloads are deleted first
// and explicitly, so that they can be counted (cascaded deletes are not).
func DeleteOldRequests(ctx context.Context, tx *sqlx.Tx, cut, maxSeq int64, limit int) (reqs, pays int64, err error) {
	const pick = `SELECT seq FROM requests WHERE ts < ?1 AND seq <= ?2 ORDER BY ts, seq LIMIT ?3`
	r, err := tx.ExecContext(ctx, `DELETE FROM payloads WHERE request_seq IN (`+pick+`)`, cut, maxSeq, limit)
	if err != nil {
		return 0, 0, fmt.Errorf("delete payloads: %w", err)
	}
	pays, _ = r.RowsAffected()
	r, err = tx.ExecContext(ctx, `DELETE FROM requests WHERE seq IN (`+pick+`)`, cut, maxSeq, limit)
	if err != nil {
		return 0, pays, fmt.Errorf("delete requests: %w", err)
	}
	reqs, _ = r.RowsAffected()
	return reqs, pays, nil
}

// DeleteOldPayloads deletes, in tx, up to limit of the oldest payloads
// the bounds select (by the payload's own ts).
func DeleteOldPayloads(ctx context.Context, tx *sqlx.Tx, cut, maxSeq int64, limit int) (int64, error) {
	r, err := tx.ExecContext(ctx, `DELETE FROM payloads WHERE request_seq IN
		(SELECT request_seq FROM payloads WHERE ts < ?1 AND request_seq <= ?2 ORDER BY ts LIMIT ?3)`,
		cut, maxSeq, limit)
	if err != nil {
		return 0, fmt.Errorf("delete payloads: %w", err)
	}
	pays, _ := r.RowsAffected()
	return pays, nil
}

// AutoCheckpoint reads the writer's wal_autocheckpoint (pages; 0 is off).
func (db *DB) AutoCheckpoint(ctx context.Context) (int64, error) {
	var n int64
	err := db.W.GetContext(ctx, &n, `PRAGMA wal_autocheckpoint`)
	return n, err
}

// SetAutoCheckpoint sets the writer's wal_autocheckpoint (0 turns it off).
func (db *DB) SetAutoCheckpoint(ctx context.Context, pages int64) error {
	_, err := db.W.ExecContext(ctx, fmt.Sprintf(`PRAGMA wal_autocheckpoint = %d`, pages))
	return err
}

// CheckpointPassive runs a passive checkpoint, which never holds the
// write lock.
func (db *DB) CheckpointPassive(ctx context.Context) error {
	_, err := db.W.ExecContext(ctx, `PRAGMA wal_checkpoint(PASSIVE)`)
	return err
}

// PageSize reads the database's page size in bytes.
func (db *DB) PageSize(ctx context.Context) (int64, error) {
	var n int64
	err := db.W.GetContext(ctx, &n, `PRAGMA page_size`)
	return n, err
}

// FreePages reads the number of free pages in the database file.
func (db *DB) FreePages(ctx context.Context) (int64, error) {
	var n int64
	err := db.W.GetContext(ctx, &n, `PRAGMA freelist_count`)
	return n, err
}

// IncrementalVacuum frees up to n pages. The pragma frees one page per
// step of its statement, so the rows are drained rather than Exec'd once.
func (db *DB) IncrementalVacuum(ctx context.Context, n int) error {
	rows, err := db.W.QueryContext(ctx, fmt.Sprintf(`PRAGMA incremental_vacuum(%d)`, n))
	if err != nil {
		return err
	}
	for rows.Next() {
	}
	if err := rows.Err(); err != nil {
		rows.Close()
		return err
	}
	return rows.Close()
}

// CheckpointTruncateWithin copies the write-ahead log into the database and
// truncates it, waiting at most timeoutMS for readers and writers instead
// of the connection's long busy timeout. It reports whether readers kept
// the log from being truncated (busy).
func (db *DB) CheckpointTruncateWithin(ctx context.Context, timeoutMS int64) (busy bool, err error) {
	conn, err := db.W.Connx(ctx)
	if err != nil {
		return false, err
	}
	defer conn.Close()
	var prev int64
	if err := conn.GetContext(ctx, &prev, `PRAGMA busy_timeout`); err != nil {
		return false, err
	}
	if _, err := conn.ExecContext(ctx, fmt.Sprintf(`PRAGMA busy_timeout = %d`, timeoutMS)); err != nil {
		return false, err
	}
	defer conn.ExecContext(context.WithoutCancel(ctx), fmt.Sprintf(`PRAGMA busy_timeout = %d`, prev))
	var b, logPages, done int64
	if err := conn.QueryRowxContext(ctx, `PRAGMA wal_checkpoint(TRUNCATE)`).Scan(&b, &logPages, &done); err != nil {
		return false, err
	}
	return b != 0, nil
}
