package store

import (
	"context"
	"fmt"
)

// CountClientKeys returns how many client API keys are live (not revoked).
func CountClientKeys(ctx context.Context, db *DB) (int, error) {
	var n int
	if err := db.R.GetContext(ctx, &n, `SELECT count(*) FROM client_keys WHERE revoked_at = 0`); err != nil {
		return 0, fmt.Errorf("count client keys: %w", err)
	}
	return n, nil
}
