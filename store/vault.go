package store

// The vault's key tables: the master record (one row, id 1) and the data
// keys. The vault package decides what goes in them (wraps, MACs); the SQL
// is here. Functions that take a sqlx.QueryerContext or ExtContext run on
// a *sqlx.DB or inside a transaction (*sqlx.Tx) alike.

import (
	"context"
	"errors"
	"fmt"

	"github.com/jmoiron/sqlx"
)

// MasterRecord is the master row: the master key's kind and recipients,
// during a master rotation the incoming ones (next_*), the MACs and the
// wrapped audit key.
type MasterRecord struct {
	Kind           string  `db:"kind"`
	Recipients     string  `db:"recipients"`
	NextKind       *string `db:"next_kind"`
	NextRecipients *string `db:"next_recipients"`
	MAC            []byte  `db:"mac"`
	NextMAC        []byte  `db:"next_mac"`
	AuditKey       []byte  `db:"audit_key"`
	AuditKeyNext   []byte  `db:"audit_key_next"`
}

const masterColumns = `kind, recipients, next_kind, next_recipients, mac, next_mac, audit_key, audit_key_next`

// GetMaster reads the master row. A vault without one gives an error for
// which IsNotFound is true.
func GetMaster(ctx context.Context, q sqlx.QueryerContext) (MasterRecord, error) {
	var rec MasterRecord
	err := sqlx.GetContext(ctx, q, &rec, `SELECT `+masterColumns+` FROM master WHERE id = 1`)
	return rec, err
}

// MasterKind reads the master key's kind. A vault without a master row
// gives an error for which IsNotFound is true.
func MasterKind(ctx context.Context, q sqlx.QueryerContext) (string, error) {
	var kind string
	err := sqlx.GetContext(ctx, q, &kind, `SELECT kind FROM master WHERE id = 1`)
	return kind, err
}

// MasterSummary is the master key on record as the first release knew it.
type MasterSummary struct {
	Kind       string  `db:"kind"`
	Recipients string  `db:"recipients"`
	NextKind   *string `db:"next_kind"`
}

// GetMasterSummary reads MasterSummary, from a vault of any release. A
// vault without a master row gives an error for which IsNotFound is true.
func GetMasterSummary(ctx context.Context, q sqlx.QueryerContext) (MasterSummary, error) {
	var m MasterSummary
	err := sqlx.GetContext(ctx, q, &m, `SELECT kind, recipients, next_kind FROM master WHERE id = 1`)
	return m, err
}

// InsertMaster writes the master row of a new vault, in tx. It returns
// false, writing nothing, when there is one already (another process
// initialised the vault first).
func InsertMaster(ctx context.Context, tx *sqlx.Tx, kind, recipients string, updatedAt int64, mac []byte) (bool, error) {
	var n int
	if err := tx.GetContext(ctx, &n, `SELECT count(*) FROM master`); err != nil {
		return false, err
	}
	if n > 0 {
		return false, nil
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO master (id, kind, recipients, updated_at, mac) VALUES (1, ?, ?, ?, ?)`,
		kind, recipients, updatedAt, mac); err != nil {
		return false, fmt.Errorf("write master key record: %w", err)
	}
	return true, nil
}

// SealMaster sets the master's recipients and MAC.
func SealMaster(ctx context.Context, tx *sqlx.Tx, recipients string, mac []byte) error {
	_, err := tx.ExecContext(ctx, `UPDATE master SET recipients = ?, mac = ? WHERE id = 1`, recipients, mac)
	return err
}

// SetAuditKey records the wrapped audit key and the master's new MAC,
// unless the master has an audit key already.
func SetAuditKey(ctx context.Context, tx *sqlx.Tx, wrap, mac []byte) error {
	_, err := tx.ExecContext(ctx, `UPDATE master SET audit_key = ?, mac = ? WHERE id = 1 AND audit_key IS NULL`, wrap, mac)
	return err
}

// SetNextMaster records the incoming master of a master rotation.
func SetNextMaster(ctx context.Context, tx *sqlx.Tx, kind, recipients string, mac, auditKeyNext []byte) error {
	_, err := tx.ExecContext(ctx, `UPDATE master SET next_kind = ?, next_recipients = ?, next_mac = ?, audit_key_next = ? WHERE id = 1`,
		kind, recipients, mac, auditKeyNext)
	return err
}

// CommitNextMaster ends a master rotation, in tx: the wraps to the
// incoming master become the only ones and the incoming master current.
// It refuses when a data key or the audit key is not wrapped to it, or
// when no rotation is in progress.
func CommitNextMaster(ctx context.Context, tx *sqlx.Tx, updatedAt int64) error {
	var missing int
	if err := tx.GetContext(ctx, &missing, `SELECT count(*) FROM data_keys WHERE wrapped_next IS NULL`); err != nil {
		return fmt.Errorf("read data keys: %w", err)
	}
	if missing > 0 {
		return fmt.Errorf("%d data keys are not wrapped to the new master", missing)
	}
	var lost int
	if err := tx.GetContext(ctx, &lost, `SELECT count(*) FROM master WHERE audit_key IS NOT NULL AND audit_key_next IS NULL`); err != nil {
		return fmt.Errorf("read master record: %w", err)
	}
	if lost > 0 {
		return errors.New("the audit key is not wrapped to the new master")
	}
	if _, err := tx.ExecContext(ctx, `UPDATE data_keys SET wrapped = wrapped_next, mac = mac_next, wrapped_next = NULL, mac_next = NULL`); err != nil {
		return fmt.Errorf("update data keys: %w", err)
	}
	res, err := tx.ExecContext(ctx, `UPDATE master SET kind = next_kind, recipients = next_recipients, mac = next_mac,
		audit_key = audit_key_next, next_kind = NULL, next_recipients = NULL, next_mac = NULL, audit_key_next = NULL,
		updated_at = ? WHERE id = 1 AND next_kind IS NOT NULL`, updatedAt)
	if err != nil {
		return fmt.Errorf("update master record: %w", err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return errors.New("no master rotation in progress")
	}
	return nil
}

// UndoNextMaster drops the incoming master of an interrupted master
// rotation and the data keys' wraps to it, in tx.
func UndoNextMaster(ctx context.Context, tx *sqlx.Tx) error {
	if _, err := tx.ExecContext(ctx, `UPDATE data_keys SET wrapped_next = NULL, mac_next = NULL`); err != nil {
		return err
	}
	_, err := tx.ExecContext(ctx, `UPDATE master SET next_kind = NULL, next_recipients = NULL,
		next_mac = NULL, audit_key_next = NULL WHERE id = 1`)
	return err
}

// DataKey is a row of data_keys: a data identity wrapped to the master
// (and during a master rotation to the incoming one), its payload key,
// when it was retired, its MACs, and whether secrets under it are bound
// to their rows.
type DataKey struct {
	ID          int64  `db:"id"`
	Recipient   string `db:"recipient"`
	Wrapped     []byte `db:"wrapped"`
	WrappedNext []byte `db:"wrapped_next"`
	PayloadKey  []byte `db:"payload_key"`
	Retired     *int64 `db:"retired_at"`
	MAC         []byte `db:"mac"`
	MACNext     []byte `db:"mac_next"`
	Bound       bool   `db:"bound"`
}

const dataKeyColumns = `id, recipient, wrapped, wrapped_next, payload_key, retired_at, mac, mac_next, bound`

// ListDataKeys reads every data key, by id.
func ListDataKeys(ctx context.Context, q sqlx.QueryerContext) ([]DataKey, error) {
	var rows []DataKey
	if err := sqlx.SelectContext(ctx, q, &rows, `SELECT `+dataKeyColumns+` FROM data_keys ORDER BY id`); err != nil {
		return nil, fmt.Errorf("read data keys: %w", err)
	}
	return rows, nil
}

// CurrentDataKeys reads the data keys not retired.
func CurrentDataKeys(ctx context.Context, q sqlx.QueryerContext) ([]DataKey, error) {
	var rows []DataKey
	if err := sqlx.SelectContext(ctx, q, &rows, `SELECT `+dataKeyColumns+` FROM data_keys WHERE retired_at IS NULL`); err != nil {
		return nil, fmt.Errorf("read data keys: %w", err)
	}
	return rows, nil
}

// DataKeysByID reads the data keys with the given ids.
func DataKeysByID(ctx context.Context, q sqlx.QueryerContext, ids []int64) ([]DataKey, error) {
	query, args, err := sqlx.In(`SELECT `+dataKeyColumns+` FROM data_keys WHERE id IN (?)`, ids)
	if err != nil {
		return nil, err
	}
	var rows []DataKey
	if err := sqlx.SelectContext(ctx, q, &rows, query, args...); err != nil {
		return nil, fmt.Errorf("read data keys: %w", err)
	}
	return rows, nil
}

// DataKeyState is a data key's id and whether it is current (not retired).
type DataKeyState struct {
	ID      int64 `db:"id"`
	Current bool  `db:"current"`
}

// DataKeyStates reads every data key's id and whether it is current.
func DataKeyStates(ctx context.Context, q sqlx.QueryerContext) ([]DataKeyState, error) {
	var rows []DataKeyState
	if err := sqlx.SelectContext(ctx, q, &rows, `SELECT id, retired_at IS NULL AS current FROM data_keys`); err != nil {
		return nil, fmt.Errorf("read data keys: %w", err)
	}
	return rows, nil
}

// InsertDataKey adds a data key (bound, without a MAC yet: the MAC covers
// the id, so SetDataKeyMAC follows) and returns its id.
func InsertDataKey(ctx context.Context, tx *sqlx.Tx, recipient string, wrapped, payloadKey []byte, createdAt int64) (int64, error) {
	res, err := tx.ExecContext(ctx, `INSERT INTO data_keys (recipient, wrapped, payload_key, created_at, bound) VALUES (?, ?, ?, ?, 1)`,
		recipient, wrapped, payloadKey, createdAt)
	if err != nil {
		return 0, err
	}
	return res.LastInsertId()
}

// SetDataKeyMAC sets a data key's MAC.
func SetDataKeyMAC(ctx context.Context, tx *sqlx.Tx, id int64, mac []byte) error {
	_, err := tx.ExecContext(ctx, `UPDATE data_keys SET mac = ? WHERE id = ?`, mac, id)
	return err
}

// SealDataKey sets a data key's MAC and marks it bound.
func SealDataKey(ctx context.Context, tx *sqlx.Tx, id int64, mac []byte) error {
	_, err := tx.ExecContext(ctx, `UPDATE data_keys SET mac = ?, bound = 1 WHERE id = ?`, mac, id)
	return err
}

// RetireDataKey marks a data key retired at retiredAt, with its new MAC.
func RetireDataKey(ctx context.Context, tx *sqlx.Tx, id, retiredAt int64, mac []byte) error {
	_, err := tx.ExecContext(ctx, `UPDATE data_keys SET retired_at = ?, mac = ? WHERE id = ?`, retiredAt, mac, id)
	return err
}

// SetNextWrap records a data key's wrap to the incoming master and its MAC.
func SetNextWrap(ctx context.Context, tx *sqlx.Tx, id int64, wrapped, mac []byte) error {
	_, err := tx.ExecContext(ctx, `UPDATE data_keys SET wrapped_next = ?, mac_next = ? WHERE id = ?`, wrapped, mac, id)
	return err
}

// PrunableDataKeys lists the data keys retired at or before cutoff that
// no account secret is sealed under, by id.
func PrunableDataKeys(ctx context.Context, q sqlx.QueryerContext, cutoff int64) ([]int64, error) {
	var ids []int64
	if err := sqlx.SelectContext(ctx, q, &ids, `SELECT id FROM data_keys
		WHERE retired_at IS NOT NULL AND retired_at <= ?
		AND NOT EXISTS (SELECT 1 FROM accounts WHERE accounts.key_id = data_keys.id) ORDER BY id`, cutoff); err != nil {
		return nil, fmt.Errorf("read data keys: %w", err)
	}
	return ids, nil
}

// DestroyDataKey overwrites a data key's wraps and payload key with zeros,
// then deletes its row.
func DestroyDataKey(ctx context.Context, tx *sqlx.Tx, id int64) error {
	if _, err := tx.ExecContext(ctx, `UPDATE data_keys SET wrapped = zeroblob(length(wrapped)),
		payload_key = zeroblob(length(payload_key)), wrapped_next = NULL WHERE id = ?`, id); err != nil {
		return fmt.Errorf("destroy data key: %w", err)
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM data_keys WHERE id = ?`, id); err != nil {
		return fmt.Errorf("destroy data key: %w", err)
	}
	return nil
}

// AccountSecret is an account's id and its secret as sealed.
type AccountSecret struct {
	ID     int64  `db:"id"`
	KeyID  int64  `db:"key_id"`
	Sealed []byte `db:"secret"`
}

// ListAccountSecrets reads every account's sealed secret.
func ListAccountSecrets(ctx context.Context, q sqlx.QueryerContext) ([]AccountSecret, error) {
	var rows []AccountSecret
	if err := sqlx.SelectContext(ctx, q, &rows, `SELECT id, key_id, secret FROM accounts`); err != nil {
		return nil, fmt.Errorf("read account secrets: %w", err)
	}
	return rows, nil
}

// SetAccountSecret replaces an account's sealed secret under the same
// data key, keeping its token version.
func SetAccountSecret(ctx context.Context, tx *sqlx.Tx, accountID int64, sealed []byte) error {
	_, err := tx.ExecContext(ctx, `UPDATE accounts SET secret = ? WHERE id = ?`, sealed, accountID)
	return err
}

// AccountsNotUnder lists the accounts whose secret is not sealed under
// the data key keyID, by id.
func AccountsNotUnder(ctx context.Context, q sqlx.QueryerContext, keyID int64) ([]int64, error) {
	var ids []int64
	if err := sqlx.SelectContext(ctx, q, &ids, `SELECT id FROM accounts WHERE key_id != ? ORDER BY id`, keyID); err != nil {
		return nil, fmt.Errorf("read accounts: %w", err)
	}
	return ids, nil
}

// CountAccountsNotUnder counts the accounts whose secret is not sealed
// under the data key keyID.
func CountAccountsNotUnder(ctx context.Context, q sqlx.QueryerContext, keyID int64) (int, error) {
	var n int
	if err := sqlx.GetContext(ctx, q, &n, `SELECT count(*) FROM accounts WHERE key_id != ?`, keyID); err != nil {
		return 0, fmt.Errorf("read accounts: %w", err)
	}
	return n, nil
}

// ResealSecret moves an account's secret from the data key from to the
// data key to, with a compare-and-swap on its token version that keeps
// the version (the plaintext is the same). It reports whether it wrote:
// false when the account changed in between.
func ResealSecret(ctx context.Context, db *DB, accountID, version, from, to int64, sealed []byte) (bool, error) {
	res, err := db.W.ExecContext(ctx, `UPDATE accounts SET key_id = ?, secret = ?
		WHERE id = ? AND token_version = ? AND key_id = ?`, to, sealed, accountID, version, from)
	if err != nil {
		return false, fmt.Errorf("save re-sealed secret: %w", err)
	}
	n, _ := res.RowsAffected()
	return n == 1, nil
}

// SecureDelete turns on secure_delete on the writer: freed pages are
// zeroed from now on.
func (db *DB) SecureDelete(ctx context.Context) error {
	_, err := db.W.ExecContext(ctx, `PRAGMA secure_delete = ON`)
	return err
}

// CheckpointTruncate moves the WAL into the database file and truncates
// it. Callers for which it is best effort (a busy reader only delays it)
// may ignore the error; one that needs the file alone (a copy of it)
// must not.
func (db *DB) CheckpointTruncate(ctx context.Context) error {
	_, err := db.W.ExecContext(ctx, `PRAGMA wal_checkpoint(TRUNCATE)`)
	return err
}

// VacuumInto writes a consistent copy of the database to path with
// VACUUM INTO on the read-only pool: one snapshot, never the write lock.
func (db *DB) VacuumInto(ctx context.Context, path string) error {
	_, err := db.R.ExecContext(ctx, "VACUUM INTO ?", path)
	return err
}
