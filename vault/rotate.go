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
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"filippo.io/age"
	"github.com/jmoiron/sqlx"
	"golang.org/x/crypto/chacha20poly1305"

	"github.com/claudeflare/claudeflare/internal/fsutil"
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

// masterPlan is where the new master key goes.
type masterPlan struct {
	kind       string
	passphrase string
	pq         bool
	extras     []age.Recipient
	extraText  []string
	file       string // the identity file to write
	inPlace    bool   // file is the current identity file: via .next and a rename
	keepOld    string // where the outgoing identity goes, if anywhere
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
	if _, err := v.db.W.ExecContext(ctx, `PRAGMA secure_delete = ON`); err != nil {
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
	v.db.W.ExecContext(ctx, `PRAGMA wal_checkpoint(TRUNCATE)`)
	if res.Kind, res.Recipients, err = v.Recipients(ctx); err != nil {
		return res, err
	}
	res.DataKeyID = v.currentKey().id
	return res, nil
}

// plan checks opts and decides where the new master key goes. Nothing is
// written.
func (v *Vault) plan(opts RotateOptions) (*masterPlan, error) {
	m := v.master()
	p := &masterPlan{kind: MasterIdentity, pq: opts.PQ}
	if opts.Passphrase != "" && opts.IdentityFile != "" {
		return nil, errors.New("rotate: give a new passphrase or a new identity file, not both")
	}
	for _, s := range opts.AddRecipients {
		rs, err := age.ParseRecipients(strings.NewReader(s))
		if err != nil || len(rs) != 1 {
			// Never echo it: it may be a secret key pasted by mistake.
			return nil, errors.New("rotate: an extra recipient is not an age recipient (expected age1...)")
		}
		p.extras = append(p.extras, rs[0])
		p.extraText = append(p.extraText, strings.TrimSpace(s))
	}
	switch {
	case opts.Passphrase != "":
		p.kind, p.passphrase = MasterPassphrase, opts.Passphrase
		if len(p.extras) > 0 {
			return nil, errors.New("rotate: a passphrase cannot be combined with extra recipients (age allows a passphrase only as the sole recipient)")
		}
		if opts.PQ {
			return nil, errors.New("rotate: a passphrase master key cannot be post-quantum; give an identity instead")
		}
		if err := CheckNewPassphrase(opts.Passphrase); err != nil {
			return nil, fmt.Errorf("rotate: %w", err)
		}
	case opts.IdentityFile != "":
		abs, err := filepath.Abs(opts.IdentityFile)
		if err != nil {
			return nil, fmt.Errorf("rotate: %w", err)
		}
		if _, err := os.Lstat(abs); err == nil {
			return nil, fmt.Errorf("rotate: %s already exists; give a new file", abs)
		}
		p.file = abs
	case m.source == sourceFile || m.source == sourceDefault:
		p.file, p.inPlace = m.path, true
		for _, aux := range []string{m.path + NextSuffix, m.path + OldSuffix} {
			if _, ours := readAuxIdentityFile(aux); fileExists(aux) && !ours {
				return nil, fmt.Errorf("rotate: %s exists and was not written by claudeflare; move it away first", aux)
			}
		}
	case m.source == sourcePassphrase:
		return nil, errors.New("rotate: a new passphrase is needed")
	default:
		return nil, ErrNoRotateTarget
	}
	for _, r := range p.extras {
		_, hybrid := r.(*age.HybridRecipient)
		if p.kind == MasterIdentity && hybrid != p.pq {
			return nil, ErrMixedRecipients
		}
	}
	if opts.KeepOld != "" {
		if m.kind == MasterPassphrase {
			return nil, ErrKeepOldPassphrase
		}
		abs, err := filepath.Abs(opts.KeepOld)
		if err != nil {
			return nil, fmt.Errorf("rotate: %w", err)
		}
		if _, err := os.Lstat(abs); err == nil {
			return nil, fmt.Errorf("rotate: %s already exists; give a new file for the old identity", abs)
		}
		if abs == p.file || m.path != "" && abs == m.path {
			return nil, errors.New("rotate: --keep-old must name a file of its own")
		}
		p.keepOld = abs
	}
	return p, nil
}

// ErrKeepOldPassphrase is returned for KeepOld when the master key being
// replaced is a passphrase: there is no identity to write.
var ErrKeepOldPassphrase = errors.New("rotate: the master key being replaced is a passphrase, not an identity; backups made before need that passphrase")

// writeOldIdentity writes the identities of m to path (exclusive, 0600).
func writeOldIdentity(m *master, path string) error {
	var b bytes.Buffer
	fmt.Fprintf(&b, "# claudeflare master identity before a key rotation: backups made before it need this key\n")
	for _, r := range m.recipientStrings() {
		fmt.Fprintf(&b, "# public key: %s\n", r)
	}
	for _, id := range m.primary {
		s, ok := id.(fmt.Stringer)
		if !ok {
			return errors.New("the master identity cannot be written out")
		}
		fmt.Fprintf(&b, "%s\n", s.String())
	}
	if err := writeFileExclusive(path, b.Bytes()); err != nil {
		return fmt.Errorf("keep old identity: %w", err)
	}
	return nil
}

// rotateMaster runs steps 1 to 5.
func (v *Vault) rotateMaster(ctx context.Context, p *masterPlan, res *RotateResult) error {
	old := v.master()
	// The audit key moves to the new master with the data keys. If
	// another process makes one meanwhile, step 2 notices and stops.
	auditKey, auditWrap, err := v.auditKeyToMove(ctx)
	if err != nil {
		return err
	}

	// Step 0: the outgoing identity, kept where the user asked.
	if p.keepOld != "" {
		if err := writeOldIdentity(old, p.keepOld); err != nil {
			return err
		}
		res.OldKeptIn = p.keepOld
	}

	// Step 1: the new key, where nothing refers to it yet.
	nm, err := newMasterKey(p, old, res)
	if err != nil {
		return err
	}
	if err := hook(stepNewKey); err != nil {
		return err
	}

	// Step 2: every data key (and the audit key) wrapped to the new
	// master as well, with the new master's MACs.
	if err := v.wrapToNext(ctx, nm, p, auditKey, auditWrap); err != nil {
		return err
	}
	if err := hook(stepWrappedBoth); err != nil {
		return err
	}

	// Step 3: in place, the new identity file replaces the old one.
	if p.inPlace {
		if err := swapIdentityFiles(p.file); err != nil {
			return err
		}
	}

	// Step 4: the new master only.
	if err := v.commitNext(ctx); err != nil {
		return err
	}
	if err := hook(stepCommitted); err != nil {
		return err
	}
	v.mu.Lock()
	v.m = nm
	v.breakGlass = false // the new master made the MACs now on record
	v.mu.Unlock()

	// Step 5: old key files that no longer open anything.
	if err := removeOldKeyFiles(p, old, res); err != nil {
		return err
	}
	return hook(stepCleaned)
}

// auditKeyToMove reads the audit key that moves to the new master with
// the data keys, and its current wrap (to notice another process making
// one meanwhile). A vault without one (an earlier release's, whose
// rotation was interrupted) gets none here: PrepareAudit makes it after
// the rotation, and keys the earlier release's log with it then. Made
// here, the log would look replaced (a vault that has had an audit key
// but no keyed row).
func (v *Vault) auditKeyToMove(ctx context.Context) (key, wrap []byte, err error) {
	rec, err := readMasterRecord(ctx, v.db.W)
	if err != nil {
		return nil, nil, err
	}
	if rec.AuditKey == nil {
		return nil, nil, nil
	}
	if key, err = v.AuditKey(ctx); err != nil {
		return nil, nil, err
	}
	if rec, err = readMasterRecord(ctx, v.db.W); err != nil {
		return nil, nil, err
	}
	return key, rec.AuditKey, nil
}

// newMasterKey is step 1: the new master key, written where nothing
// refers to it yet (a passphrase is only in memory).
func newMasterKey(p *masterPlan, old *master, res *RotateResult) (*master, error) {
	if p.kind == MasterPassphrase {
		return passphraseMaster(p.passphrase, "the new passphrase")
	}
	text, _, err := newIdentityText(p.pq)
	if err != nil {
		return nil, err
	}
	ids, err := parseIdentities(strings.NewReader(text))
	if err != nil {
		return nil, err
	}
	nm, err := fromIdentities(ids, MasterIdentity, "identity file "+p.file, p.file)
	if err != nil {
		return nil, err
	}
	nm.source = sourceFile
	if p.inPlace {
		nm.source = old.source
		if err := fsutil.WriteFile(p.file+NextSuffix, []byte(text), 0o600); err != nil {
			return nil, fmt.Errorf("write new identity: %w", err)
		}
	} else if err := writeFileExclusive(p.file, []byte(text)); err != nil {
		return nil, fmt.Errorf("write new identity: %w", err)
	}
	res.IdentityFile = p.file
	return nm, nil
}

// wrapToNext is step 2: every data key (and the audit key) wrapped to the
// new master nm as well, with the new master's MACs, in one transaction
// that also records the incoming master. The wrapping and the key
// derivation (scrypt takes a second) happen before the transaction.
func (v *Vault) wrapToNext(ctx context.Context, nm *master, p *masterPlan, auditKey, auditWrap []byte) error {
	to, err := nm.wrapTo()
	if err != nil {
		return err
	}
	nroot, err := nm.primaryRoot()
	if err != nil {
		return err
	}
	to = append(to, p.extras...)
	recipients := strings.Join(append(nm.recipientStrings(), p.extraText...), "\n")
	v.mu.RLock()
	keys := make([]*dataKey, 0, len(v.keys))
	for _, dk := range v.keys {
		keys = append(keys, dk)
	}
	v.mu.RUnlock()
	wraps := map[int64][]byte{}
	for _, dk := range keys {
		w, err := encrypt(dk.text, to...)
		if err != nil {
			if strings.Contains(err.Error(), "incompatible recipients") {
				return ErrMixedRecipients
			}
			return fmt.Errorf("wrap data key: %w", err)
		}
		wraps[dk.id] = w
	}
	var auditNext []byte
	if auditKey != nil {
		if auditNext, err = encrypt(auditKey, to...); err != nil {
			return fmt.Errorf("wrap audit key: %w", err)
		}
	}
	err = store.Tx(ctx, v.db, func(tx *sqlx.Tx) error {
		var rows []dataKeyRecord
		if err := tx.SelectContext(ctx, &rows, `SELECT `+dataKeyColumns+` FROM data_keys`); err != nil {
			return fmt.Errorf("read data keys: %w", err)
		}
		for _, r := range rows {
			w := wraps[r.ID]
			if w == nil {
				return fmt.Errorf("data key %d appeared during the rotation", r.ID)
			}
			mac := metaMAC(nroot, dataKeyParts(r.ID, r.Recipient, w, r.PayloadKey, r.Retired, r.Bound)...)
			if _, err := tx.ExecContext(ctx, `UPDATE data_keys SET wrapped_next = ?, mac_next = ? WHERE id = ?`, w, mac, r.ID); err != nil {
				return fmt.Errorf("wrap data key to the new master: %w", err)
			}
		}
		cur, err := readMasterRecord(ctx, tx)
		if err != nil {
			return err
		}
		if !bytes.Equal(cur.AuditKey, auditWrap) {
			return errors.New("the audit key changed during the rotation")
		}
		_, err = tx.ExecContext(ctx, `UPDATE master SET next_kind = ?, next_recipients = ?, next_mac = ?, audit_key_next = ? WHERE id = 1`,
			nm.kind, recipients, metaMAC(nroot, masterParts(nm.kind, recipients, auditNext)...), auditNext)
		if err != nil {
			return fmt.Errorf("record the new master: %w", err)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("rotate master key: %w", err)
	}
	return nil
}

// removeOldKeyFiles is step 5: old key files that no longer open anything
// are removed; those the user gave are reported in res.
func removeOldKeyFiles(p *masterPlan, old *master, res *RotateResult) error {
	switch {
	case p.inPlace:
		if err := removeFiles(p.file + OldSuffix); err != nil {
			return err
		}
	case old.source == sourceDefault:
		if err := removeFiles(old.path, old.path+NextSuffix, old.path+OldSuffix); err != nil {
			return err
		}
	case old.source == sourceFile:
		res.OldIdentityFile = old.path
	case old.source == sourceEnv:
		res.OldFromEnv = true
	}
	return nil
}

// swapIdentityFiles is step 3: path is copied to path.old, then path.next
// is renamed over path.
func swapIdentityFiles(path string) error {
	// A copy, marked as ours so that the loader reads it and the next
	// rotation may remove it (a user's own FILE.old is left alone).
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("keep old identity: %w", err)
	}
	if !bytes.HasPrefix(b, []byte(auxMarker)) {
		b = append([]byte(auxMarker+": the master identity before a key rotation; removed when it completes\n"), b...)
	}
	if err := fsutil.WriteFile(path+OldSuffix, b, 0o600); err != nil {
		return fmt.Errorf("keep old identity: %w", err)
	}
	if err := hook(stepOldKept); err != nil {
		return err
	}
	if err := os.Rename(path+NextSuffix, path); err != nil {
		return fmt.Errorf("put new identity in place: %w", err)
	}
	if err := fsutil.SyncDir(filepath.Dir(path)); err != nil {
		return err
	}
	return hook(stepRenamed)
}

// commitNext is step 4: the wraps to the incoming master become the only
// ones and the incoming master becomes current, in one transaction.
func (v *Vault) commitNext(ctx context.Context) error {
	err := store.Tx(ctx, v.db, func(tx *sqlx.Tx) error {
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
			updated_at = ? WHERE id = 1 AND next_kind IS NOT NULL`, store.ToMS(v.now()))
		if err != nil {
			return fmt.Errorf("update master record: %w", err)
		}
		if n, _ := res.RowsAffected(); n != 1 {
			return errors.New("no master rotation in progress")
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("commit new master key: %w", err)
	}
	return nil
}

// resume finishes or undoes a master rotation that was interrupted, and
// removes leftover key files once the identity file alone opens the
// vault. It reports whether it changed anything.
func (v *Vault) resume(ctx context.Context) (bool, error) {
	var row struct {
		NextKind *string `db:"next_kind"`
	}
	if err := v.db.W.GetContext(ctx, &row, `SELECT next_kind FROM master WHERE id = 1`); err != nil {
		return false, fmt.Errorf("read master record: %w", err)
	}
	var rows []dataKeyRecord
	if err := v.db.W.SelectContext(ctx, &rows, `SELECT `+dataKeyColumns+` FROM data_keys`); err != nil {
		return false, fmt.Errorf("read data keys: %w", err)
	}
	m := v.master()
	fileBased := m.path != "" && m.source != sourceCredential
	changed := false
	if row.NextKind != nil {
		changed = true
		var err error
		if m, err = v.finishOrUndo(ctx, m, rows, fileBased); err != nil {
			return false, err
		}
		// Re-read: the wraps changed.
		rows = nil
		if err := v.db.W.SelectContext(ctx, &rows, `SELECT `+dataKeyColumns+` FROM data_keys`); err != nil {
			return false, fmt.Errorf("read data keys: %w", err)
		}
	}
	if fileBased {
		removed, err := removeLeftovers(m, rows)
		if err != nil {
			return false, err
		}
		changed = changed || removed
	}
	removed, err := v.removeStaleDefault(m, rows)
	if err != nil {
		return false, err
	}
	changed = changed || removed
	if changed {
		m.identities = m.primary
		v.mu.Lock()
		v.m = m
		v.mu.Unlock()
	}
	return changed, nil
}

// opensAll reports whether ids open every data key in rows: its current
// wrap, or with next its wrap to the incoming master.
func opensAll(rows []dataKeyRecord, ids []age.Identity, next bool) bool {
	if len(ids) == 0 {
		return false
	}
	for _, r := range rows {
		w := r.Wrapped
		if next {
			w = r.WrappedNext
		}
		if w == nil {
			return false
		}
		if _, err := decrypt(w, ids...); err != nil {
			return false
		}
	}
	return true
}

// finishOrUndo finishes the interrupted master rotation when the new key
// is at hand (the key in use, or identity.txt.next), or undoes it when
// only the old one is. It returns the master now in use.
func (v *Vault) finishOrUndo(ctx context.Context, m *master, rows []dataKeyRecord, fileBased bool) (*master, error) {
	var nextIDs []age.Identity
	if fileBased {
		nextIDs, _ = readAuxIdentityFile(m.path + NextSuffix)
	}
	switch {
	case opensAll(rows, m.primary, true):
		// The key in use is the incoming one (identity.txt was
		// renamed already, or the new key was given): finish.
		if err := v.commitNext(ctx); err != nil {
			return nil, err
		}
	case nextIDs != nil && opensAll(rows, nextIDs, true):
		// The new identity is in identity.txt.next: finish.
		if err := swapIdentityFiles(m.path); err != nil {
			return nil, err
		}
		if err := v.commitNext(ctx); err != nil {
			return nil, err
		}
		nm, err := fromIdentities(nextIDs, MasterIdentity, m.where, m.path)
		if err != nil {
			return nil, err
		}
		nm.source = m.source
		m = nm
	case opensAll(rows, m.primary, false):
		// Only the old key is at hand: undo.
		err := store.Tx(ctx, v.db, func(tx *sqlx.Tx) error {
			if _, err := tx.ExecContext(ctx, `UPDATE data_keys SET wrapped_next = NULL, mac_next = NULL`); err != nil {
				return err
			}
			_, err := tx.ExecContext(ctx, `UPDATE master SET next_kind = NULL, next_recipients = NULL,
				next_mac = NULL, audit_key_next = NULL WHERE id = 1`)
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("undo interrupted rotation: %w", err)
		}
	default:
		return nil, fmt.Errorf("an interrupted key rotation can be neither finished nor undone with %s (hint: give the old or the new master key)", m.where)
	}
	return m, nil
}

// removeLeftovers removes the .next and .old files of ours and the temp
// files an interrupted rotation left beside m's identity file, once that
// file alone opens the vault. It reports whether it removed any.
func removeLeftovers(m *master, rows []dataKeyRecord) (bool, error) {
	dir, base := filepath.Dir(m.path), filepath.Base(m.path)
	temps, _ := filepath.Glob(filepath.Join(dir, "."+globEscape(base)+"*.tmp-*"))
	leftovers := slices.DeleteFunc([]string{m.path + NextSuffix, m.path + OldSuffix}, func(p string) bool {
		_, ours := readAuxIdentityFile(p)
		return !ours
	})
	if len(leftovers)+len(temps) == 0 {
		return false, nil
	}
	if !opensAll(rows, m.primary, false) {
		return false, fmt.Errorf("%s does not open the vault, but a file left by an interrupted key rotation does (hint: keep the file that opens it as %s)", m.where, m.path)
	}
	if err := removeFiles(append(leftovers, temps...)...); err != nil {
		return false, err
	}
	return true, nil
}

// removeStaleDefault removes an identity.txt left behind when the vault
// moved to another key (a crash right after the commit): it opens
// nothing any more. It reports whether it removed any.
func (v *Vault) removeStaleDefault(m *master, rows []dataKeyRecord) (bool, error) {
	def := v.ks.defaultIdentity()
	if v.ks.DataDir == "" || m.path == def {
		return false, nil
	}
	var stale []string
	for _, p := range []string{def, def + NextSuffix, def + OldSuffix} {
		ids, err := readIdentityFile(p)
		if err != nil {
			continue // missing, or not ours to judge
		}
		if _, ours := readAuxIdentityFile(p); p != def && !ours {
			continue
		}
		if !opensAny(rows, ids) {
			stale = append(stale, p)
		}
	}
	if len(stale) == 0 {
		return false, nil
	}
	if err := removeFiles(stale...); err != nil {
		return false, err
	}
	return true, nil
}

// opensAny reports whether ids open any wrap of any data key.
func opensAny(rows []dataKeyRecord, ids []age.Identity) bool {
	for _, r := range rows {
		for _, w := range [][]byte{r.Wrapped, r.WrappedNext} {
			if w == nil {
				continue
			}
			if _, err := decrypt(w, ids...); err == nil {
				return true
			}
		}
	}
	return false
}

func globEscape(s string) string {
	return strings.NewReplacer(`*`, `\*`, `?`, `\?`, `[`, `\[`, `\`, `\\`).Replace(s)
}

// removeFiles removes paths that exist and fsyncs their directories.
func removeFiles(paths ...string) error {
	dirs := map[string]bool{}
	for _, p := range paths {
		err := os.Remove(p)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("remove old key file: %w", err)
		}
		dirs[filepath.Dir(p)] = true
	}
	for d := range dirs {
		if err := fsutil.SyncDir(d); err != nil {
			return err
		}
	}
	return nil
}

// writeFileExclusive creates path with data, mode 0600, failing if it
// exists ("... already exists"), atomically (fsutil.WriteFileExclusive),
// creating its directory if needed.
func writeFileExclusive(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("create key directory: %w", err)
	}
	return fsutil.WriteFileExclusive(path, data, 0o600)
}

// rotateData makes a new data key and re-seals every account secret to it.
func (v *Vault) rotateData(ctx context.Context, res *RotateResult) error {
	to, err := v.wrapSet(ctx)
	if err != nil {
		return err
	}
	row, err := newDataKeyRow(to, v.now())
	if err != nil {
		return err
	}
	dk, err := dataKeyFromRow(row)
	if err != nil {
		return err
	}
	m := v.master()
	root, err := m.primaryRoot()
	if err != nil {
		return err
	}
	roots, err := m.roots()
	if err != nil {
		return err
	}
	err = store.Tx(ctx, v.db, func(tx *sqlx.Tx) error {
		rec, err := readMasterRecord(ctx, tx)
		if err != nil {
			return err
		}
		if rec.NextKind != nil {
			return errors.New("a master key rotation is in progress")
		}
		if err := verifyMaster(rec, roots); err != nil {
			return err
		}
		var cur []dataKeyRecord
		if err := tx.SelectContext(ctx, &cur, `SELECT `+dataKeyColumns+` FROM data_keys WHERE retired_at IS NULL`); err != nil {
			return fmt.Errorf("read data keys: %w", err)
		}
		retired := store.ToMS(v.now())
		for _, r := range cur {
			if err := verifyDataKey(r, roots); err != nil {
				return err
			}
			mac := metaMAC(root, dataKeyParts(r.ID, r.Recipient, r.Wrapped, r.PayloadKey, &retired, r.Bound)...)
			if _, err := tx.ExecContext(ctx, `UPDATE data_keys SET retired_at = ?, mac = ? WHERE id = ?`, retired, mac, r.ID); err != nil {
				return fmt.Errorf("retire data key: %w", err)
			}
		}
		id, err := insertDataKey(ctx, tx, row, root)
		dk.id = id
		return err
	})
	if err != nil {
		return fmt.Errorf("rotate data key: %w", err)
	}
	v.mu.Lock()
	keys := make(map[int64]*dataKey, len(v.keys)+1)
	for id, k := range v.keys {
		keys[id] = k
	}
	keys[dk.id] = dk
	v.keys, v.current = keys, dk.id
	v.mu.Unlock()
	if err := hook(stepDataKey); err != nil {
		return err
	}
	n, left, err := v.resealAll(ctx, true)
	res.Resealed, res.StillRetired = n, left
	if err != nil {
		return err
	}
	return hook(stepResealed)
}

// dataKeyFromRow turns a freshly made data key into its unwrapped form.
func dataKeyFromRow(row dataKeyRow) (*dataKey, error) {
	ids, err := age.ParseIdentities(strings.NewReader(string(row.text)))
	if err != nil || len(ids) != 1 {
		return nil, errors.New("new data key is malformed")
	}
	rcpt, err := parseRecipient(row.Recipient)
	if err != nil {
		return nil, err
	}
	aead, err := newPayloadAEAD(row.pk)
	if err != nil {
		return nil, err
	}
	return &dataKey{identity: ids[0], recipient: rcpt, aead: aead, text: row.text, wrapped: row.Wrapped, bound: true, bindKey: bindKey(row.text)}, nil
}

func newPayloadAEAD(pk []byte) (payloadAEAD, error) {
	a, err := chacha20poly1305.NewX(pk)
	if err != nil {
		return payloadAEAD{}, fmt.Errorf("open payload key: %w", err)
	}
	return payloadAEAD{a}, nil
}

// wrapSet returns the recipients that new data keys are wrapped to: the
// master recipients on record (extra recipients included), or the
// passphrase.
func (v *Vault) wrapSet(ctx context.Context) ([]age.Recipient, error) {
	rec, err := readMasterRecord(ctx, v.db.W)
	if err != nil {
		return nil, err
	}
	if err := v.checkMaster(rec); err != nil {
		return nil, err
	}
	kind := rec.Kind
	var recipients []string
	if rec.Recipients != "" {
		recipients = strings.Split(rec.Recipients, "\n")
	}
	if kind == MasterPassphrase {
		m := v.master()
		if m.kind != MasterPassphrase {
			return nil, errors.New("the vault is protected by a passphrase; open it with the passphrase to make a new data key")
		}
		return m.wrapTo()
	}
	rs, err := age.ParseRecipients(strings.NewReader(strings.Join(recipients, "\n")))
	if err != nil {
		return nil, errors.New("master record: malformed recipients")
	}
	return rs, nil
}

// resealAll re-seals every account secret that is not under the current
// data key. Passes repeat while a concurrent writer (a daemon that does not
// know the new key yet) keeps adding some; what is left is reported.
func (v *Vault) resealAll(ctx context.Context, hooks bool) (resealed, left int, err error) {
	first := true
	for pass := 0; pass < 5; pass++ {
		cur := v.currentKey().id
		var ids []int64
		if err := v.db.W.SelectContext(ctx, &ids, `SELECT id FROM accounts WHERE key_id != ? ORDER BY id`, cur); err != nil {
			return resealed, 0, fmt.Errorf("read accounts: %w", err)
		}
		if len(ids) == 0 {
			return resealed, 0, nil
		}
		left = len(ids)
		for _, id := range ids {
			changed, err := v.resealAccount(ctx, id)
			if err != nil {
				return resealed, left, err
			}
			if changed {
				resealed++
				if hooks && first {
					first = false
					if err := hook(stepResealedOne); err != nil {
						return resealed, left, err
					}
				}
			}
		}
	}
	cur := v.currentKey().id
	if err := v.db.W.GetContext(ctx, &left, `SELECT count(*) FROM accounts WHERE key_id != ?`, cur); err != nil {
		return resealed, 0, fmt.Errorf("read accounts: %w", err)
	}
	return resealed, left, nil
}

// resealAccount re-seals one account's secret to the current data key:
// the same plaintext bytes, a compare-and-swap on the token version that
// keeps the version, so that a daemon holding it can still swap. It
// retries when the account moved in between, and reports whether it
// wrote.
func (v *Vault) resealAccount(ctx context.Context, accountID int64) (bool, error) {
	for range 50 {
		ss, err := store.GetSecret(ctx, v.db, accountID)
		if errors.Is(err, store.ErrNoAccount) {
			return false, nil // removed meanwhile
		}
		if err != nil {
			return false, fmt.Errorf("read account secret: %w", err)
		}
		cur := v.currentKey()
		if ss.KeyID == cur.id {
			return false, nil
		}
		old, err := v.key(ctx, ss.KeyID)
		if err != nil {
			return false, fmt.Errorf("re-seal account secret: %w", err)
		}
		plain, err := decrypt(ss.Sealed, old.identity)
		if err != nil {
			return false, fmt.Errorf("re-seal account secret: %w", err)
		}
		// The same secret, bound to its account under the new key (one
		// sealed by the previous release is bound now).
		s, err := unbindSecrets(old, accountID, plain)
		if err != nil {
			return false, fmt.Errorf("re-seal account secret: %w", err)
		}
		if plain, err = bindSecrets(cur, accountID, s); err != nil {
			return false, fmt.Errorf("re-seal account secret: %w", err)
		}
		sealed, err := encrypt(plain, cur.recipient)
		if err != nil {
			return false, fmt.Errorf("re-seal account secret: %w", err)
		}
		res, err := v.db.W.ExecContext(ctx, `UPDATE accounts SET key_id = ?, secret = ?
			WHERE id = ? AND token_version = ? AND key_id = ?`, cur.id, sealed, accountID, ss.Version, ss.KeyID)
		if err != nil {
			return false, fmt.Errorf("save re-sealed secret: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 1 {
			return true, nil
		}
		// Tokens refreshed in between: read them again.
	}
	return false, fmt.Errorf("re-seal account %d: it kept changing", accountID)
}

// PruneDataKeys destroys retired data keys that nothing refers to: no
// account secret is sealed under them, no payload in logDB, and they were
// retired more than RetiredKeyGrace before now. It needs no master key,
// so cleanup can run it. The rows are zeroed before they are deleted.
func PruneDataKeys(ctx context.Context, vaultDB, logDB *store.DB, now time.Time) ([]int64, error) {
	used, err := store.PayloadKeyIDs(ctx, logDB)
	if err != nil {
		return nil, fmt.Errorf("read payload keys: %w", err)
	}
	cutoff := store.ToMS(now.Add(-RetiredKeyGrace))
	var deleted []int64
	err = store.Tx(ctx, vaultDB, func(tx *sqlx.Tx) error {
		deleted = nil
		var ids []int64
		if err := tx.SelectContext(ctx, &ids, `SELECT id FROM data_keys
			WHERE retired_at IS NOT NULL AND retired_at <= ?
			AND NOT EXISTS (SELECT 1 FROM accounts WHERE accounts.key_id = data_keys.id) ORDER BY id`, cutoff); err != nil {
			return fmt.Errorf("read data keys: %w", err)
		}
		for _, id := range ids {
			if slices.Contains(used, id) {
				continue
			}
			if _, err := tx.ExecContext(ctx, `UPDATE data_keys SET wrapped = zeroblob(length(wrapped)),
				payload_key = zeroblob(length(payload_key)), wrapped_next = NULL WHERE id = ?`, id); err != nil {
				return fmt.Errorf("destroy data key: %w", err)
			}
			if _, err := tx.ExecContext(ctx, `DELETE FROM data_keys WHERE id = ?`, id); err != nil {
				return fmt.Errorf("destroy data key: %w", err)
			}
			deleted = append(deleted, id)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("prune data keys: %w", err)
	}
	return deleted, nil
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
	var row struct {
		Kind       string  `db:"kind"`
		Recipients string  `db:"recipients"`
		NextKind   *string `db:"next_kind"`
	}
	err := db.R.GetContext(ctx, &row, `SELECT kind, recipients, next_kind FROM master WHERE id = 1`)
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
