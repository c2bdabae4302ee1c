package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jmoiron/sqlx"
)

// ErrNoClientKey is returned when no live client key has the given name.
var ErrNoClientKey = errors.New("no such client key")

// ErrClientKeyExists is returned when a live client key already has the name.
var ErrClientKeyExists = errors.New("a client key with this name already exists")

// ClientKey is a client API key's row: its hash and metadata, never the key.
type ClientKey struct {
	ID         int64  `db:"id"`
	Name       string `db:"name"`
	Prefix     string `db:"prefix"`
	Hash       []byte `db:"hash"`
	Role       string `db:"role"`
	CreatedAt  int64  `db:"created_at"`
	LastUsedAt int64  `db:"last_used_at"`
	RevokedAt  int64  `db:"revoked_at"`
	// MAC authenticates the row (vault.ClientKeyMAC); nil for a row made
	// by an earlier release and not sealed yet.
	MAC []byte `db:"mac"`
	// Budgets is the key's budgets as JSON text (access.Budget), nil
	// when it has none (vault migration 0009).
	Budgets *string `db:"budgets"`
	// Relay marks a relay key: its requests go upstream with the
	// client's own credentials (vault migration 0011).
	Relay bool `db:"relay"`
	// Models is the key's model allowlist as JSON text (a list of
	// names), nil when any model is allowed (vault migration 0011).
	Models *string `db:"models"`
}

const clientKeyColumns = `id, name, prefix, hash, role, created_at, last_used_at, revoked_at, mac, budgets, relay, models`

// CountClientKeys returns how many client API keys are live (not revoked).
func CountClientKeys(ctx context.Context, db *DB) (int, error) {
	var n int
	if err := db.R.GetContext(ctx, &n, `SELECT count(*) FROM client_keys WHERE revoked_at = 0`); err != nil {
		return 0, fmt.Errorf("count client keys: %w", err)
	}
	return n, nil
}

// InsertClientKey stores a new client key inside tx. A live key with the
// same name gives ErrClientKeyExists.
func InsertClientKey(ctx context.Context, tx *sqlx.Tx, k ClientKey) (int64, error) {
	res, err := tx.ExecContext(ctx, `INSERT INTO client_keys (name, prefix, hash, role, created_at, budgets, relay, models)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?)`, k.Name, k.Prefix, k.Hash, k.Role, k.CreatedAt, k.Budgets, k.Relay, k.Models)
	if IsUnique(err) {
		return 0, fmt.Errorf("%w: %q", ErrClientKeyExists, k.Name)
	}
	if err != nil {
		return 0, fmt.Errorf("insert client key: %w", err)
	}
	return res.LastInsertId()
}

// SetClientKeyMAC stores the MAC of the row id inside tx.
func SetClientKeyMAC(ctx context.Context, tx *sqlx.Tx, id int64, mac []byte) error {
	if _, err := tx.ExecContext(ctx, `UPDATE client_keys SET mac = ? WHERE id = ?`, mac, id); err != nil {
		return fmt.Errorf("authenticate client key: %w", err)
	}
	return nil
}

// ListClientKeysTx is ListClientKeys inside tx.
func ListClientKeysTx(ctx context.Context, tx *sqlx.Tx) ([]ClientKey, error) {
	return listClientKeys(ctx, tx)
}

// ListClientKeys returns every client key, revoked ones included, oldest
// first.
func ListClientKeys(ctx context.Context, db *DB) ([]ClientKey, error) {
	return listClientKeys(ctx, db.R)
}

func listClientKeys(ctx context.Context, q sqlx.QueryerContext) ([]ClientKey, error) {
	var out []ClientKey
	if err := sqlx.SelectContext(ctx, q, &out, `SELECT `+clientKeyColumns+` FROM client_keys ORDER BY created_at, id`); err != nil {
		return nil, fmt.Errorf("list client keys: %w", err)
	}
	return out, nil
}

// RevokeClientKey revokes the live key with the given name inside tx and
// returns its row as it was, or ErrNoClientKey. The caller re-authenticates
// the row (SetClientKeyMAC) in the same transaction.
func RevokeClientKey(ctx context.Context, tx *sqlx.Tx, name string, now time.Time) (ClientKey, error) {
	var k ClientKey
	if err := tx.GetContext(ctx, &k, `SELECT `+clientKeyColumns+` FROM client_keys WHERE name = ? AND revoked_at = 0`, name); err != nil {
		if IsNotFound(err) {
			return k, fmt.Errorf("%w: %q", ErrNoClientKey, name)
		}
		return k, fmt.Errorf("find client key: %w", err)
	}
	if _, err := tx.ExecContext(ctx, `UPDATE client_keys SET revoked_at = ? WHERE id = ?`, RevokedAt(now), k.ID); err != nil {
		return k, fmt.Errorf("revoke client key: %w", err)
	}
	return k, nil
}

// LiveClientKeyTx returns the row of the live key with the given name
// inside tx, or ErrNoClientKey.
func LiveClientKeyTx(ctx context.Context, tx *sqlx.Tx, name string) (ClientKey, error) {
	var k ClientKey
	if err := tx.GetContext(ctx, &k, `SELECT `+clientKeyColumns+` FROM client_keys WHERE name = ? AND revoked_at = 0`, name); err != nil {
		if IsNotFound(err) {
			return k, fmt.Errorf("%w: %q", ErrNoClientKey, name)
		}
		return k, fmt.Errorf("find client key: %w", err)
	}
	return k, nil
}

// SetClientKeySettings writes the settings of row k (budgets, relay,
// models) by its id inside tx. The caller re-authenticates the row
// (SetClientKeyMAC) in the same transaction.
func SetClientKeySettings(ctx context.Context, tx *sqlx.Tx, k ClientKey) error {
	if _, err := tx.ExecContext(ctx, `UPDATE client_keys SET budgets = ?, relay = ?, models = ? WHERE id = ?`,
		k.Budgets, k.Relay, k.Models, k.ID); err != nil {
		return fmt.Errorf("update client key: %w", err)
	}
	return nil
}

// RevokedAt returns the revocation time RevokeClientKey stores for now.
func RevokedAt(now time.Time) int64 {
	return max(ToMS(now), 1)
}

// TouchClientKeys records last-use times (unix ms by key id); a time never
// moves backwards.
func TouchClientKeys(ctx context.Context, db *DB, used map[int64]int64) error {
	if len(used) == 0 {
		return nil
	}
	return Tx(ctx, db, func(tx *sqlx.Tx) error {
		for id, ms := range used {
			if _, err := tx.ExecContext(ctx, `UPDATE client_keys SET last_used_at = max(last_used_at, ?) WHERE id = ?`, ms, id); err != nil {
				return fmt.Errorf("record client key use: %w", err)
			}
		}
		return nil
	})
}

// ClientKeyAddress is an address a client key was used from.
type ClientKeyAddress struct {
	KeyID     int64  `db:"key_id"`
	Addr      string `db:"addr"`
	FirstSeen int64  `db:"first_seen"`
}

// ListClientKeyAddresses returns the addresses live keys were used from.
func ListClientKeyAddresses(ctx context.Context, db *DB) ([]ClientKeyAddress, error) {
	var out []ClientKeyAddress
	err := db.R.SelectContext(ctx, &out, `SELECT a.key_id, a.addr, a.first_seen FROM client_key_addresses a
		JOIN client_keys k ON k.id = a.key_id WHERE k.revoked_at = 0`)
	if err != nil {
		return nil, fmt.Errorf("list client key addresses: %w", err)
	}
	return out, nil
}

// AddClientKeyAddress records that a key was used from addr; it reports
// whether the address is new for that key.
func AddClientKeyAddress(ctx context.Context, tx *sqlx.Tx, a ClientKeyAddress) (bool, error) {
	res, err := tx.ExecContext(ctx, `INSERT OR IGNORE INTO client_key_addresses (key_id, addr, first_seen) VALUES (?, ?, ?)`,
		a.KeyID, a.Addr, a.FirstSeen)
	if err != nil {
		return false, fmt.Errorf("record client key address: %w", err)
	}
	n, _ := res.RowsAffected()
	return n > 0, nil
}
