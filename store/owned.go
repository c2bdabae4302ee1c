package store

import (
	"context"
	"fmt"
	"time"
)

// OwnedID is a message batch or file id and the account it was created
// through (owned_ids): later calls naming the id go to that account.
type OwnedID struct {
	ID        string `db:"id"`
	AccountID int64  `db:"account_id"`
	CreatedAt int64  `db:"created_at"` // unix ms
}

// PutOwnedID records that id was created through accountID at now. An id
// seen again keeps its newest owner (the upstream made it once; a replay
// changes nothing).
func PutOwnedID(ctx context.Context, db *DB, id string, accountID int64, now time.Time) error {
	_, err := db.W.ExecContext(ctx, `INSERT INTO owned_ids (id, account_id, created_at) VALUES (?, ?, ?)
		ON CONFLICT(id) DO UPDATE SET account_id = excluded.account_id, created_at = excluded.created_at`,
		id, accountID, ToMS(now))
	if err != nil {
		return fmt.Errorf("record owned id: %w", err)
	}
	return nil
}

// DeleteOwnedID forgets id (deleted upstream).
func DeleteOwnedID(ctx context.Context, db *DB, id string) error {
	if _, err := db.W.ExecContext(ctx, `DELETE FROM owned_ids WHERE id = ?`, id); err != nil {
		return fmt.Errorf("forget owned id: %w", err)
	}
	return nil
}

// PruneOwnedIDs deletes the ids created before cutoff and returns how
// many went.
func PruneOwnedIDs(ctx context.Context, db *DB, cutoff time.Time) (int64, error) {
	res, err := db.W.ExecContext(ctx, `DELETE FROM owned_ids WHERE created_at < ?`, ToMS(cutoff))
	if err != nil {
		return 0, fmt.Errorf("prune owned ids: %w", err)
	}
	n, _ := res.RowsAffected()
	return n, nil
}

// ListOwnedIDs returns every recorded id created at or after since.
func ListOwnedIDs(ctx context.Context, db *DB, since time.Time) ([]OwnedID, error) {
	var out []OwnedID
	if err := db.R.SelectContext(ctx, &out, `SELECT id, account_id, created_at FROM owned_ids WHERE created_at >= ? ORDER BY created_at`, ToMS(since)); err != nil {
		return nil, fmt.Errorf("list owned ids: %w", err)
	}
	return out, nil
}
