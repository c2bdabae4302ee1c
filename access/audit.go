package access

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"os/user"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/claudeflare/claudeflare/oauth"
	"github.com/claudeflare/claudeflare/store"
)

// Audit actions.
const (
	ActionAccountAdded      = "account.added"
	ActionAccountRemoved    = "account.removed"
	ActionAccountPaused     = "account.paused"
	ActionAccountResumed    = "account.resumed"
	ActionAccountNeedsLogin = "account.needs_login"
	ActionKeyRotated        = "key.rotated"
	ActionClientKeyCreated  = "client_key.created"
	ActionClientKeyRevoked  = "client_key.revoked"
	ActionClientKeyNewAddr  = "client_key.new_address"
	ActionAuthFailed        = "auth.failed"
	ActionConfigReloaded    = "config.reloaded"
)

// Actors that are not a person or a client key.
const (
	ActorDaemon = "daemon"
)

// CLIActor names the person running a command: "cli:<user>".
func CLIActor() string {
	if u, err := user.Current(); err == nil && u.Username != "" {
		return "cli:" + u.Username
	}
	return "cli"
}

// KeyActor names a client key acting through the admin API.
func KeyActor(name string) string { return "key:" + name }

// AddrActor names an unauthenticated client by its address.
func AddrActor(addr string) string { return "addr:" + addr }

// Entry is one row of the audit log.
type Entry struct {
	ID       int64  `db:"id"`
	TS       int64  `db:"ts"` // unix ms
	Actor    string `db:"actor"`
	Action   string `db:"action"`
	Detail   string `db:"detail"`
	PrevHash []byte `db:"prev_hash"`
	Hash     []byte `db:"hash"`
}

// Time is the entry's time in UTC.
func (e Entry) Time() time.Time { return store.FromMS(e.TS) }

// canonical is the byte form of a row that its hash covers: a JSON array
// of id, time, actor, action and detail.
func (e Entry) canonical() []byte {
	b, _ := json.Marshal([]any{e.ID, e.TS, e.Actor, e.Action, e.Detail})
	return b
}

func chainHash(prev []byte, e Entry) []byte {
	h := sha256.New()
	h.Write(prev)
	h.Write(e.canonical())
	return h.Sum(nil)
}

var genesis = make([]byte, sha256.Size)

// Audit appends an entry to the audit log in vault.db, chained to the one
// before it. Actor and detail are sanitised (no control characters,
// nothing that looks like a credential).
func Audit(ctx context.Context, db *store.DB, actor, action, detail string) error {
	return AuditAt(ctx, db, time.Now(), actor, action, detail)
}

// AuditAt is Audit with an explicit time.
func AuditAt(ctx context.Context, db *store.DB, now time.Time, actor, action, detail string) error {
	err := store.Tx(ctx, db, func(tx *sqlx.Tx) error {
		return appendAudit(ctx, tx, now, actor, action, detail)
	})
	if err != nil {
		return fmt.Errorf("write audit log: %w", err)
	}
	return nil
}

// appendAudit adds a row inside tx. The previous hash is the head's (the
// last row written), so that rows deleted from the end stay detectable
// after later appends.
func appendAudit(ctx context.Context, tx *sqlx.Tx, now time.Time, actor, action, detail string) error {
	prev := genesis
	var head struct {
		LastID int64  `db:"last_id"`
		Hash   []byte `db:"hash"`
	}
	err := tx.GetContext(ctx, &head, `SELECT last_id, hash FROM audit_head WHERE id = 1`)
	switch {
	case err == nil:
		prev = head.Hash
	case store.IsNotFound(err):
		// No head yet: chain to the last row, if any.
		var last []byte
		err := tx.GetContext(ctx, &last, `SELECT hash FROM audit_log ORDER BY id DESC LIMIT 1`)
		if err == nil {
			prev = last
		} else if !store.IsNotFound(err) {
			return fmt.Errorf("read audit head: %w", err)
		}
	default:
		return fmt.Errorf("read audit head: %w", err)
	}
	e := Entry{TS: store.ToMS(now), Actor: clean(actor), Action: action, Detail: clean(detail), PrevHash: prev}
	res, err := tx.ExecContext(ctx, `INSERT INTO audit_log (ts, actor, action, detail, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?)`,
		e.TS, e.Actor, e.Action, e.Detail, e.PrevHash, genesis)
	if err != nil {
		return fmt.Errorf("insert audit entry: %w", err)
	}
	if e.ID, err = res.LastInsertId(); err != nil {
		return fmt.Errorf("insert audit entry: %w", err)
	}
	e.Hash = chainHash(prev, e)
	if _, err := tx.ExecContext(ctx, `UPDATE audit_log SET hash = ? WHERE id = ?`, e.Hash, e.ID); err != nil {
		return fmt.Errorf("insert audit entry: %w", err)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO audit_head (id, last_id, hash) VALUES (1, ?, ?)
		ON CONFLICT (id) DO UPDATE SET last_id = excluded.last_id, hash = excluded.hash`, e.ID, e.Hash); err != nil {
		return fmt.Errorf("update audit head: %w", err)
	}
	return nil
}

// clean makes text safe to store: oauth.Sanitize without its length cap
// mattering for the short texts written here.
func clean(s string) string { return oauth.Sanitize(s) }

// ListAudit calls fn for each entry at or after since, oldest first,
// reading row by row.
func ListAudit(ctx context.Context, db *store.DB, since time.Time, fn func(Entry) error) error {
	rows, err := db.R.QueryxContext(ctx, `SELECT id, ts, actor, action, detail, prev_hash, hash FROM audit_log
		WHERE ts >= ? ORDER BY id`, store.ToMS(since))
	if err != nil {
		return fmt.Errorf("read audit log: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var e Entry
		if err := rows.StructScan(&e); err != nil {
			return fmt.Errorf("read audit log: %w", err)
		}
		if err := fn(e); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read audit log: %w", err)
	}
	return nil
}

// ErrTampered is wrapped by every ChainError.
var ErrTampered = errors.New("audit log tampered with")

// ChainError names the first audit row that fails verification.
type ChainError struct {
	ID     int64 // the row; 0 when the log's head is at fault
	Reason string
}

func (e *ChainError) Error() string {
	if e.ID == 0 {
		return fmt.Sprintf("audit log tampered with: %s", e.Reason)
	}
	return fmt.Sprintf("audit log tampered with at row %d: %s", e.ID, e.Reason)
}

// Unwrap makes errors.Is(err, ErrTampered) true.
func (e *ChainError) Unwrap() error { return ErrTampered }

// VerifyAudit checks the whole chain and returns how many rows it holds.
// An edited row, a deleted or inserted one, or rows cut from the end give
// a *ChainError naming the first bad row. (A chain of plain hashes cannot
// stop someone who rewrites every row after an edit and the head; it
// catches edits made with an SQL shell or a careless script.)
func VerifyAudit(ctx context.Context, db *store.DB) (int, error) {
	rows, err := db.R.QueryxContext(ctx, `SELECT id, ts, actor, action, detail, prev_hash, hash FROM audit_log ORDER BY id`)
	if err != nil {
		return 0, fmt.Errorf("read audit log: %w", err)
	}
	defer rows.Close()
	prev := genesis
	var n int
	var last Entry
	for rows.Next() {
		var e Entry
		if err := rows.StructScan(&e); err != nil {
			return n, fmt.Errorf("read audit log: %w", err)
		}
		if !bytes.Equal(e.PrevHash, prev) {
			if n == 0 {
				return n, &ChainError{ID: e.ID, Reason: "the first row does not start the chain: rows before it were deleted"}
			}
			return n, &ChainError{ID: e.ID, Reason: fmt.Sprintf("does not follow row %d: a row between them was deleted or row %d was changed", last.ID, last.ID)}
		}
		if !bytes.Equal(chainHash(prev, e), e.Hash) {
			return n, &ChainError{ID: e.ID, Reason: "its content does not match its hash: the row was edited"}
		}
		prev, last = e.Hash, e
		n++
	}
	if err := rows.Err(); err != nil {
		return n, fmt.Errorf("read audit log: %w", err)
	}
	rows.Close()

	var head struct {
		LastID int64  `db:"last_id"`
		Hash   []byte `db:"hash"`
	}
	err = db.R.GetContext(ctx, &head, `SELECT last_id, hash FROM audit_head WHERE id = 1`)
	switch {
	case store.IsNotFound(err):
		if n > 0 {
			return n, &ChainError{Reason: "the head record is missing"}
		}
		return 0, nil
	case err != nil:
		return n, fmt.Errorf("read audit head: %w", err)
	}
	if n == 0 {
		return 0, &ChainError{Reason: fmt.Sprintf("every row was deleted (the head names row %d)", head.LastID)}
	}
	if head.LastID != last.ID || !bytes.Equal(head.Hash, last.Hash) {
		if head.LastID > last.ID {
			return n, &ChainError{ID: head.LastID, Reason: fmt.Sprintf("rows after row %d were deleted", last.ID)}
		}
		return n, &ChainError{ID: last.ID, Reason: "the last row does not match the head record"}
	}
	return n, nil
}
