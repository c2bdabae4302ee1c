package store

import (
	"context"
	"fmt"

	"github.com/jmoiron/sqlx"
)

// AuditRow is one row of the audit log in vault.db (package audit keys
// and checks the chain).
type AuditRow struct {
	ID       int64  `db:"id"`
	TS       int64  `db:"ts"` // unix ms
	Actor    string `db:"actor"`
	Action   string `db:"action"`
	Detail   string `db:"detail"`
	PrevHash []byte `db:"prev_hash"`
	Hash     []byte `db:"hash"`
}

// AuditHead is the audit log's head record: the last row written and its
// hash.
type AuditHead struct {
	LastID int64  `db:"last_id"`
	Hash   []byte `db:"hash"`
}

const auditColumns = `id, ts, actor, action, detail, prev_hash, hash`

// GetAuditHead reads the head record; IsNotFound(err) when there is none.
func GetAuditHead(ctx context.Context, q sqlx.QueryerContext) (AuditHead, error) {
	var h AuditHead
	err := sqlx.GetContext(ctx, q, &h, `SELECT last_id, hash FROM audit_head WHERE id = 1`)
	return h, err
}

// LastAuditRow reads the row with the highest id; IsNotFound(err) when
// the log is empty.
func LastAuditRow(ctx context.Context, q sqlx.QueryerContext) (AuditRow, error) {
	var r AuditRow
	err := sqlx.GetContext(ctx, q, &r, `SELECT `+auditColumns+` FROM audit_log ORDER BY id DESC LIMIT 1`)
	return r, err
}

// LastAuditHash reads the hash of the row with the highest id;
// IsNotFound(err) when the log is empty.
func LastAuditHash(ctx context.Context, q sqlx.QueryerContext) ([]byte, error) {
	var h []byte
	err := sqlx.GetContext(ctx, q, &h, `SELECT hash FROM audit_log ORDER BY id DESC LIMIT 1`)
	return h, err
}

// InsertAuditRow adds r (its ID ignored) and returns the id SQLite gave
// it (AUTOINCREMENT: the id of a deleted row is never reused).
func InsertAuditRow(ctx context.Context, tx *sqlx.Tx, r AuditRow) (int64, error) {
	res, err := tx.ExecContext(ctx, `INSERT INTO audit_log (ts, actor, action, detail, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?)`,
		r.TS, r.Actor, r.Action, r.Detail, r.PrevHash, r.Hash)
	if err != nil {
		return 0, err
	}
	return res.LastInsertId()
}

// SetAuditHash sets the hash of row id.
func SetAuditHash(ctx context.Context, tx *sqlx.Tx, id int64, hash []byte) error {
	_, err := tx.ExecContext(ctx, `UPDATE audit_log SET hash = ? WHERE id = ?`, hash, id)
	return err
}

// PutAuditHead writes the head record.
func PutAuditHead(ctx context.Context, tx *sqlx.Tx, h AuditHead) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO audit_head (id, last_id, hash) VALUES (1, ?, ?)
		ON CONFLICT (id) DO UPDATE SET last_id = excluded.last_id, hash = excluded.hash`, h.LastID, h.Hash)
	return err
}

// EachAuditRow calls fn for every row, by id, reading row by row from
// the read pool. An error of fn is returned as it is.
func EachAuditRow(ctx context.Context, db *DB, fn func(AuditRow) error) error {
	return eachAuditRow(ctx, db, fn, `SELECT `+auditColumns+` FROM audit_log ORDER BY id`)
}

// EachAuditRowSince is EachAuditRow for the rows at or after since (unix
// ms).
func EachAuditRowSince(ctx context.Context, db *DB, since int64, fn func(AuditRow) error) error {
	return eachAuditRow(ctx, db, fn, `SELECT `+auditColumns+` FROM audit_log WHERE ts >= ? ORDER BY id`, since)
}

func eachAuditRow(ctx context.Context, db *DB, fn func(AuditRow) error, query string, args ...any) error {
	rows, err := db.R.QueryxContext(ctx, query, args...)
	if err != nil {
		return fmt.Errorf("read audit log: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var r AuditRow
		if err := rows.StructScan(&r); err != nil {
			return fmt.Errorf("read audit log: %w", err)
		}
		if err := fn(r); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read audit log: %w", err)
	}
	return nil
}

// HadAuditKey reports whether the vault's master record holds an audit
// key (or one being rotated in). It checks no MAC: vault.Vault.AuditKey
// does.
func HadAuditKey(ctx context.Context, db *DB) (bool, error) {
	var had bool
	err := db.W.GetContext(ctx, &had, `SELECT audit_key IS NOT NULL OR audit_key_next IS NOT NULL FROM master WHERE id = 1`)
	return had, err
}
