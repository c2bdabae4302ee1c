package vault

// Key rotation.
//
// Master key (`key rotate`). The data keys are re-wrapped to a new master
// key; account secrets and payloads are untouched, so a running daemon,
// which holds the unwrapped data keys, keeps working. The steps are
// ordered so that a crash after any of them leaves a vault that opens
// with the key files left on disk:
//
//  1. The new key is written where nothing refers to it yet: an identity
//     rotated in place goes to identity.txt.next (atomic, 0600); a new
//     identity file (--to-identity) is created with O_EXCL; a passphrase
//     is only in memory.
//  2. One transaction wraps every data key to the new master as well
//     (data_keys.wrapped_next) and records the incoming master
//     (master.next_kind, next_recipients). Either key opens the vault.
//  3. In place only: identity.txt is copied to identity.txt.old, then
//     identity.txt.next is renamed over identity.txt and the directory
//     fsynced. The loader reads .next and .old too, so every mix of files
//     opens the vault.
//  4. One transaction makes the new wraps the only ones and the new master
//     current. From here the old key no longer opens the vault.
//  5. identity.txt.old is removed (and, when moving away from the default
//     identity file, identity.txt itself).
//
// The next `key rotate` first finishes (when the new key is at hand) or
// undoes (when only the old one is) a rotation that was interrupted, and
// removes leftover key files that are no longer needed.
//
// Data key (`key rotate --data`). One transaction adds a new data key and
// retires the current one; then every account secret is re-sealed to the
// new key with a compare-and-swap on its token version that leaves the
// version as it is (the plaintext does not change), so a daemon refreshing
// tokens at the same moment neither loses its write nor sees a conflict.
// Retired keys stay while an account or a payload refers to them (payloads
// stay exportable until retention deletes them) and are destroyed by
// PruneDataKeys once nothing does and RetiredKeyGrace has passed.

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"filippo.io/age"

	"github.com/claudeflare/claudeflare/store"
)

// Rotation steps, in order. rotateHook runs after each one that wrote
// something durable.
const (
	stepNewKey      = "new-key"      // new identity file written
	stepWrappedBoth = "wrapped-both" // data keys wrapped to old and new master
	stepOldKept     = "old-kept"     // identity.txt copied to identity.txt.old
	stepRenamed     = "renamed"      // identity.txt.next renamed over identity.txt
	stepCommitted   = "committed"    // new master is the only one
	stepCleaned     = "cleaned"      // old key files removed
	stepDataKey     = "data-key"     // new data key added, old one retired
	stepResealedOne = "resealed-one" // the first account secret re-sealed
	stepResealed    = "resealed"     // every account secret re-sealed
	stepPruned      = "pruned"       // unused retired data keys destroyed
)

// rotateHook, when set (tests only), runs after each step of a rotation;
// an error stops the rotation right there, as a crash would.
var rotateHook func(step string) error

func hook(step string) error {
	if rotateHook == nil {
		return nil
	}
	if err := rotateHook(step); err != nil {
		return fmt.Errorf("rotation stopped after step %s: %w", step, err)
	}
	return nil
}

// RetiredKeyGrace is how long a retired data key is kept even when nothing
// refers to it: a daemon may still seal a payload with it until it notices
// the new key (within seconds).
const RetiredKeyGrace = time.Hour

// ErrNoRotateTarget is returned when the master key comes from somewhere
// claudeflare cannot write (CLAUDEFLARE_ENCRYPTION_KEY, a systemd
// credential) and no new place was given.
var ErrNoRotateTarget = errors.New("the master key comes from the environment or a systemd credential, where claudeflare cannot replace it")

// ErrRotationRunning is returned when another process is rotating keys.
var ErrRotationRunning = errors.New("another key rotation is running")

// ErrMixedRecipients is returned for post-quantum and classic recipients
// together: age refuses to encrypt to both, since the file would then be
// only as strong as the classic one.
var ErrMixedRecipients = errors.New("post-quantum and classic recipients cannot be mixed (age refuses: the file would not be quantum-safe)")

// RotateOptions say what Rotate replaces and with what.
type RotateOptions struct {
	Master bool // replace the master key
	Data   bool // make a new data key and re-seal every account secret

	// The new master key. Neither set: a new identity of the same kind,
	// in place of the identity file the vault was opened with.
	Passphrase   string // the new master is this passphrase (age scrypt)
	IdentityFile string // the new identity goes to this new file (O_EXCL, 0600)
	PQ           bool   // the new identity is hybrid post-quantum

	// AddRecipients are extra age recipients (age1...) the data keys are
	// also wrapped to, e.g. an offline break-glass key. Not kept by a
	// later rotation unless given again.
	AddRecipients []string

	// LogDB is the request log; with it, retired data keys that nothing
	// uses any more are destroyed. Nil keeps them.
	LogDB *store.DB

	// KeepOld, with Master, is a new file (0600, created exclusively and
	// atomically) the outgoing master identity is written to before
	// anything else: backups made before the rotation need it.
	KeepOld string
}

// RotateResult says what Rotate did.
type RotateResult struct {
	Kind            string   // master kind afterwards: identity | passphrase
	Recipients      []string // master recipients afterwards (none for a passphrase)
	IdentityFile    string   // the file holding the new master identity, if one was written
	OldIdentityFile string   // a file given by the user that no longer opens the vault (left in place)
	OldFromEnv      bool     // the old master came from the environment and no longer opens the vault
	Resumed         bool     // an interrupted rotation was finished or undone first
	DataKeyID       int64    // the current data key afterwards
	Resealed        int      // account secrets re-sealed to the current data key
	StillRetired    int      // account secrets still under a retired key (a daemon that cannot open the new one keeps writing)
	DeletedKeys     []int64  // retired data keys destroyed
	OldKeptIn       string   // the file the outgoing identity was written to (KeepOld)
}

// PostQuantum reports whether the master key is a hybrid post-quantum identity.
func (v *Vault) PostQuantum() bool {
	for _, id := range v.master().primary {
		if _, ok := id.(*age.HybridIdentity); ok {
			return true
		}
	}
	return false
}

// Rotate replaces the master key, the data key, or both, as opts say;
// then re-seals account secrets still under a retired data key and, with
// opts.LogDB, destroys retired data keys nothing uses. It holds a lock
// file next to the vault for its duration; a crash at any point leaves a
// vault that opens (see the comment at the top of this file).
func (v *Vault) Rotate(ctx context.Context, opts RotateOptions) (RotateResult, error) {
	var res RotateResult
	if !opts.Master && !opts.Data {
		return res, errors.New("rotate: nothing to rotate")
	}
	v.mu.RLock()
	glass := v.breakGlass
	v.mu.RUnlock()
	if glass && !opts.Master {
		return res, errors.New("rotate: an extra recipient's key cannot check the vault's metadata: replace the master key (with --data), not only the data key")
	}
	var plan *masterPlan
	if opts.Master {
		p, err := v.plan(opts)
		if err != nil {
			return res, err
		}
		plan = p
	}
	unlock, err := lockRotation(filepath.Dir(v.db.Path))
	if err != nil {
		return res, err
	}
	defer unlock()
	// Another rotation may have finished while this vault was open: know
	// every data key there is now.
	if _, err := v.syncKeys(ctx); err != nil {
		return res, fmt.Errorf("rotate: %w", err)
	}
	// Freed pages are zeroed, so that wraps to the old master and
	// destroyed data keys do not linger in the file.
	if err := v.db.SecureDelete(ctx); err != nil {
		return res, fmt.Errorf("rotate: %w", err)
	}
	if res.Resumed, err = v.resume(ctx); err != nil {
		return res, err
	}
	v.mu.RLock()
	legacy := v.legacy
	v.mu.RUnlock()
	if legacy {
		// A rotation made by the previous release was just finished:
		// its metadata gets its MACs now (and a new data key, unless
		// this rotation makes one).
		if err := v.upgrade(ctx, true, !opts.Data); err != nil {
			return res, err
		}
	}
	if opts.Master {
		if err := v.rotateMaster(ctx, plan, &res); err != nil {
			return res, err
		}
	}
	if opts.Data {
		if err := v.rotateData(ctx, &res); err != nil {
			return res, err
		}
	} else {
		// Housekeeping: secrets a daemon saved under a retired key.
		n, left, err := v.resealAll(ctx, false)
		res.Resealed, res.StillRetired = n, left
		if err != nil {
			return res, err
		}
	}
	if opts.LogDB != nil {
		deleted, err := PruneDataKeys(ctx, v.db, opts.LogDB, v.now())
		if err != nil {
			return res, err
		}
		res.DeletedKeys = deleted
		if err := hook(stepPruned); err != nil {
			return res, err
		}
	}
	// Best effort: move the WAL into the file and truncate it, so that old
	// wraps do not linger there either. A busy reader only delays it.
	v.db.CheckpointTruncate(ctx) // best effort: a busy reader only delays it
	if res.Kind, res.Recipients, err = v.Recipients(ctx); err != nil {
		return res, err
	}
	res.DataKeyID = v.currentKey().id
	return res, nil
}

// MasterInfo is the master key on record; no key is needed to read it.
type MasterInfo struct {
	Kind       string   // identity | passphrase
	Recipients []string // none for a passphrase
	Pending    bool     // a master rotation was interrupted; the next `key rotate` finishes it
}

// ReadMaster reads the master record of the vault in db, or
// ErrNotInitialised.
func ReadMaster(ctx context.Context, db *store.DB) (MasterInfo, error) {
	row, err := store.GetMasterSummary(ctx, db.R)
	if store.IsNotFound(err) {
		return MasterInfo{}, ErrNotInitialised
	}
	if err != nil {
		return MasterInfo{}, fmt.Errorf("read master record: %w", err)
	}
	info := MasterInfo{Kind: row.Kind, Pending: row.NextKind != nil}
	if row.Recipients != "" {
		info.Recipients = strings.Split(row.Recipients, "\n")
	}
	return info, nil
}
