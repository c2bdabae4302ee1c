package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jmoiron/sqlx"
)

// Account kinds and statuses.
const (
	KindOAuth  = "oauth"
	KindAPIKey = "apikey"
	// The cloud kinds (issue 21): Amazon Bedrock (AWS credentials) and
	// Google Vertex AI (a service-account key). Their non-secret
	// settings are in Account.Upstream.
	KindBedrock = "bedrock"
	KindVertex  = "vertex"

	// ModeSetupToken is the mode of an OAuth account whose credential
	// is a long-lived token made by `claude setup-token`: used as is,
	// never refreshed.
	ModeSetupToken = "setup-token"

	StatusOK         = "ok"
	StatusNeedsLogin = "needs_login"
	// StatusKeyRefused: the upstream refused the account's API key (a
	// 401 to a key, which no refresh can cure).
	StatusKeyRefused = "key_refused"
	// StatusQuarantined: the upstream refused the account itself (e.g.
	// "OAuth authentication is currently not allowed for this
	// organization", "credit balance too low"); StatusReason says why.
	StatusQuarantined = "quarantined"

	// The overage policies (accounts.overage).
	OverageAvoid = "avoid"
	OverageAllow = "allow"
)

// ErrNoAccount is returned when a named account does not exist.
var ErrNoAccount = errors.New("no such account")

// ErrAccountExists is returned when adding a name that is taken.
var ErrAccountExists = errors.New("an account with this name already exists")

// ErrVersionConflict is returned by a compare-and-swap on an account's
// secret when another writer moved its version first.
var ErrVersionConflict = errors.New("account secret changed concurrently")

// Account is an account's metadata and runtime state; never its secrets.
type Account struct {
	ID               int64   `db:"id"`
	Name             string  `db:"name"`
	Kind             string  `db:"kind"`
	Mode             string  `db:"mode"`
	Priority         int     `db:"priority"`
	Tier             int     `db:"tier"`
	Paused           bool    `db:"paused"`
	Status           string  `db:"status"`
	StatusReason     string  `db:"status_reason"`
	KeyID            int64   `db:"key_id"`
	TokenVersion     int64   `db:"token_version"`
	TokenExpiresAt   int64   `db:"token_expires_at"`
	RateLimitedUntil int64   `db:"rate_limited_until"`
	RLStatus         string  `db:"rl_status"`
	RLReset          int64   `db:"rl_reset"`
	Util5h           float64 `db:"util_5h"`
	Util7d           float64 `db:"util_7d"`
	Reset5h          int64   `db:"reset_5h"`
	Reset7d          int64   `db:"reset_7d"`
	CooldownMS       int64   `db:"cooldown_ms"`
	Overage          string  `db:"overage"`       // OverageAvoid or OverageAllow
	OverageUntil     int64   `db:"overage_until"` // unix ms; serving on extra usage until
	ModelLimits      string  `db:"model_limits"`  // JSON {"opus": until_ms}; see ParseModelLimits
	UnblockedAt      int64   `db:"unblocked_at"`  // unix ms of the last `accounts unblock`
	Upstream         string  `db:"upstream"`      // cloud kinds: JSON {"region","project","endpoint"}; '' otherwise
	CreatedAt        int64   `db:"created_at"`
	UpdatedAt        int64   `db:"updated_at"`
}

const accountColumns = `id, name, kind, mode, priority, tier, paused, status, status_reason,
	key_id, token_version, token_expires_at, rate_limited_until, rl_status, rl_reset,
	util_5h, util_7d, reset_5h, reset_7d, cooldown_ms, overage, overage_until, model_limits,
	unblocked_at, upstream, created_at, updated_at`

// ListAccounts returns every account ordered by priority, then name.
func ListAccounts(ctx context.Context, db *DB) ([]Account, error) {
	var out []Account
	err := db.R.SelectContext(ctx, &out, `SELECT `+accountColumns+` FROM accounts ORDER BY priority, name`)
	if err != nil {
		return nil, fmt.Errorf("list accounts: %w", err)
	}
	return out, nil
}

// GetAccount returns the named account or ErrNoAccount.
func GetAccount(ctx context.Context, db *DB, name string) (Account, error) {
	var a Account
	err := db.R.GetContext(ctx, &a, `SELECT `+accountColumns+` FROM accounts WHERE name = ?`, name)
	if IsNotFound(err) {
		return a, fmt.Errorf("%w: %q", ErrNoAccount, name)
	}
	return a, err
}

// NewAccount is what InsertAccount stores; Sealed is already encrypted.
type NewAccount struct {
	Name           string
	Kind           string
	Mode           string
	Priority       int
	Tier           int
	KeyID          int64
	Sealed         []byte
	TokenExpiresAt int64
	Upstream       string // cloud kinds: their settings as JSON (not secret)
}

// InsertAccount adds an account. A taken name gives ErrAccountExists.
func InsertAccount(ctx context.Context, db *DB, a NewAccount, now time.Time) (int64, error) {
	ms := ToMS(now)
	res, err := db.W.ExecContext(ctx, `INSERT INTO accounts
		(name, kind, mode, priority, tier, key_id, secret, token_expires_at, upstream, created_at, updated_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		a.Name, a.Kind, a.Mode, a.Priority, a.Tier, a.KeyID, a.Sealed, a.TokenExpiresAt, a.Upstream, ms, ms)
	if IsUnique(err) {
		return 0, fmt.Errorf("%w: %q", ErrAccountExists, a.Name)
	}
	if err != nil {
		return 0, fmt.Errorf("insert account: %w", err)
	}
	return res.LastInsertId()
}

// InsertAccountSealed adds an account whose secret is sealed knowing the
// account's id (the vault binds each secret to its row): in one
// transaction the row is inserted, seal is called with its id, and the
// sealed secret and its key are stored. a.Sealed is ignored; a.KeyID must
// name an existing data key. A taken name gives ErrAccountExists.
func InsertAccountSealed(ctx context.Context, db *DB, a NewAccount, now time.Time, seal func(id int64) (keyID int64, sealed []byte, err error)) (int64, error) {
	ms := ToMS(now)
	var id int64
	err := Tx(ctx, db, func(tx *sqlx.Tx) error {
		res, err := tx.ExecContext(ctx, `INSERT INTO accounts
			(name, kind, mode, priority, tier, key_id, secret, token_expires_at, upstream, created_at, updated_at)
			VALUES (?, ?, ?, ?, ?, ?, x'', ?, ?, ?, ?)`,
			a.Name, a.Kind, a.Mode, a.Priority, a.Tier, a.KeyID, a.TokenExpiresAt, a.Upstream, ms, ms)
		if IsUnique(err) {
			return fmt.Errorf("%w: %q", ErrAccountExists, a.Name)
		}
		if err != nil {
			return fmt.Errorf("insert account: %w", err)
		}
		if id, err = res.LastInsertId(); err != nil {
			return err
		}
		keyID, sealed, err := seal(id)
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `UPDATE accounts SET key_id = ?, secret = ? WHERE id = ?`, keyID, sealed, id); err != nil {
			return fmt.Errorf("insert account: %w", err)
		}
		return nil
	})
	return id, err
}

// SealedSecret is an account's encrypted secret and its version.
type SealedSecret struct {
	KeyID          int64  `db:"key_id"`
	Sealed         []byte `db:"secret"`
	Version        int64  `db:"token_version"`
	TokenExpiresAt int64  `db:"token_expires_at"`
}

// GetSecret reads an account's sealed secret from the writer connection,
// so that it sees the latest committed version.
func GetSecret(ctx context.Context, db *DB, accountID int64) (SealedSecret, error) {
	var s SealedSecret
	err := db.W.GetContext(ctx, &s, `SELECT key_id, secret, token_version, token_expires_at FROM accounts WHERE id = ?`, accountID)
	if IsNotFound(err) {
		return s, ErrNoAccount
	}
	return s, err
}

// SwapSecret replaces the sealed secret if its version is still from; it
// returns the new version or ErrVersionConflict. A successful swap also
// clears a needs-login status, since the account has live tokens again.
func SwapSecret(ctx context.Context, db *DB, accountID, from int64, s SealedSecret, now time.Time) (int64, error) {
	res, err := db.W.ExecContext(ctx, `UPDATE accounts
		SET key_id = ?, secret = ?, token_expires_at = ?, token_version = token_version + 1,
		    status = 'ok', status_reason = '', updated_at = ?
		WHERE id = ? AND token_version = ?`,
		s.KeyID, s.Sealed, s.TokenExpiresAt, ToMS(now), accountID, from)
	if err != nil {
		return 0, fmt.Errorf("save account secret: %w", err)
	}
	n, _ := res.RowsAffected()
	if n == 0 {
		return 0, ErrVersionConflict
	}
	return from + 1, nil
}

// SetStatus records an account's status (ok or needs_login) and reason.
func SetStatus(ctx context.Context, db *DB, accountID int64, status, reason string, now time.Time) error {
	_, err := db.W.ExecContext(ctx, `UPDATE accounts SET status = ?, status_reason = ?, updated_at = ? WHERE id = ?`,
		status, reason, ToMS(now), accountID)
	if err != nil {
		return fmt.Errorf("set account status: %w", err)
	}
	return nil
}

// SetUpstream records a cloud account's settings (JSON, not secret).
func SetUpstream(ctx context.Context, db *DB, accountID int64, upstream string, now time.Time) error {
	res, err := db.W.ExecContext(ctx, `UPDATE accounts SET upstream = ?, updated_at = ? WHERE id = ?`, upstream, ToMS(now), accountID)
	if err != nil {
		return fmt.Errorf("set account settings: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return ErrNoAccount
	}
	return nil
}

// SetPaused pauses or resumes the named account.
func SetPaused(ctx context.Context, db *DB, name string, paused bool, now time.Time) error {
	return updateNamed(ctx, db, name, `UPDATE accounts SET paused = ?, updated_at = ? WHERE name = ?`, paused, ToMS(now), name)
}

// DeleteAccount removes the named account and its secrets.
func DeleteAccount(ctx context.Context, db *DB, name string) error {
	return updateNamed(ctx, db, name, `DELETE FROM accounts WHERE name = ?`, name)
}

func updateNamed(ctx context.Context, db *DB, name, query string, args ...any) error {
	res, err := db.W.ExecContext(ctx, query, args...)
	if err != nil {
		return fmt.Errorf("update account: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("%w: %q", ErrNoAccount, name)
	}
	return nil
}

// RateState is the rate-limit state persisted per account.
type RateState struct {
	RateLimitedUntil int64   `db:"rate_limited_until"`
	RLStatus         string  `db:"rl_status"`
	RLReset          int64   `db:"rl_reset"`
	Util5h           float64 `db:"util_5h"`
	Util7d           float64 `db:"util_7d"`
	Reset5h          int64   `db:"reset_5h"`
	Reset7d          int64   `db:"reset_7d"`
	CooldownMS       int64   `db:"cooldown_ms"`
	OverageUntil     int64   `db:"overage_until"`
	ModelLimits      string  `db:"model_limits"`
}

// SaveRateState records an account's latest rate-limit state. It does not
// touch updated_at, so that pollers watching for configuration changes are
// not woken by every response.
func SaveRateState(ctx context.Context, db *DB, accountID int64, st RateState) error {
	_, err := db.W.ExecContext(ctx, `UPDATE accounts SET rate_limited_until = ?, rl_status = ?, rl_reset = ?,
		util_5h = ?, util_7d = ?, reset_5h = ?, reset_7d = ?, cooldown_ms = ?, overage_until = ?, model_limits = ?
		WHERE id = ?`,
		st.RateLimitedUntil, st.RLStatus, st.RLReset, st.Util5h, st.Util7d, st.Reset5h, st.Reset7d, st.CooldownMS,
		st.OverageUntil, st.ModelLimits, accountID)
	if err != nil {
		return fmt.Errorf("save rate-limit state: %w", err)
	}
	return nil
}

// Tx runs fn in one immediate transaction on the writer.
func Tx(ctx context.Context, db *DB, fn func(tx *sqlx.Tx) error) error {
	tx, err := db.W.BeginTxx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	if err := fn(tx); err != nil {
		tx.Rollback()
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// AccountEdit is what UpdateAccount changes; a nil field is kept.
type AccountEdit struct {
	Name     *string
	Mode     *string
	Priority *int
	Tier     *int
	Overage  *string // OverageAvoid or OverageAllow
}

// UpdateAccount changes the settings of the account with id accountID.
// A taken new name gives ErrAccountExists and changes nothing.
func UpdateAccount(ctx context.Context, db *DB, accountID int64, e AccountEdit, now time.Time) error {
	res, err := db.W.ExecContext(ctx, `UPDATE accounts SET name = COALESCE(?, name), mode = COALESCE(?, mode),
		priority = COALESCE(?, priority), tier = COALESCE(?, tier), overage = COALESCE(?, overage),
		updated_at = ? WHERE id = ?`,
		e.Name, e.Mode, e.Priority, e.Tier, e.Overage, ToMS(now), accountID)
	if IsUnique(err) {
		return fmt.Errorf("%w: %q", ErrAccountExists, *e.Name)
	}
	if err != nil {
		return fmt.Errorf("update account: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return ErrNoAccount
	}
	return nil
}

// Unblock clears every block the named account carries: its rate limit
// or cooldown, its model-scoped limits, its extra-usage mark, and a
// quarantined or key_refused status (not needs_login: that takes a new
// login). unblocked_at moves, so that a running daemon drops the blocks
// it holds in memory too. It reports the status the account had.
func Unblock(ctx context.Context, db *DB, name string, now time.Time) (before Account, err error) {
	err = Tx(ctx, db, func(tx *sqlx.Tx) error {
		if err := tx.GetContext(ctx, &before, `SELECT `+accountColumns+` FROM accounts WHERE name = ?`, name); err != nil {
			if IsNotFound(err) {
				return fmt.Errorf("%w: %q", ErrNoAccount, name)
			}
			return fmt.Errorf("unblock account: %w", err)
		}
		ms := ToMS(now)
		if ms <= before.UnblockedAt {
			ms = before.UnblockedAt + 1 // always moves, even on a clock step back
		}
		_, err := tx.ExecContext(ctx, `UPDATE accounts SET rate_limited_until = 0, cooldown_ms = 0,
			overage_until = 0, model_limits = '', unblocked_at = ?, updated_at = ?,
			status = CASE WHEN status IN (?, ?) THEN ? ELSE status END,
			status_reason = CASE WHEN status IN (?, ?) THEN '' ELSE status_reason END
			WHERE id = ?`, ms, ToMS(now),
			StatusQuarantined, StatusKeyRefused, StatusOK, StatusQuarantined, StatusKeyRefused, before.ID)
		if err != nil {
			return fmt.Errorf("unblock account: %w", err)
		}
		return nil
	})
	return before, err
}
