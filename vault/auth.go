package vault

// Authenticated metadata.
//
// Whoever can write vault.db could otherwise add a recipient of their own
// to the master record (the next data key and every backup would be
// encrypted to it) or insert a data key they made themselves (anyone can
// wrap one to the public master recipient; new secrets would be sealed to
// it). So the master record (kind, recipients, the audit key's wrap) and
// every data key row (recipient, wrap, payload key, retirement, binding)
// carry an HMAC whose key is derived from the master identity itself: its
// secret key (age identities) or the passphrase (through scrypt, so a
// guess costs what age's own scrypt costs). Nothing public, and nothing
// sealed to a public key, gives that key.
//
// Open checks every MAC after the master key has opened the data keys (so
// a wrong key is still ErrWrongKey); a long-running vault checks each data
// key it learns about later. `key rotate` writes the MACs of the incoming
// master next to the wraps to it (mac_next, next_mac) in the same
// transaction, and the commit moves them over with the wraps, so every
// crash point leaves a vault whose MACs verify with the key files on disk.
//
// A vault made before the MACs existed has none: the first open by a
// holder of the master key adds them (see upgrade): it keeps only the
// master's own recipients, binds every secret to its row, makes a new data
// key, and says so, naming the recipients it sealed and those it dropped.
//
// An extra recipient (key rotate --add-recipient, a break-glass key) can
// unwrap the data keys but not check the MACs: its key opens the vault only
// to replace the master key (Options.Recovery), which makes new MACs.
//
// What the MACs do not stop: someone who can write vault.db can still put
// back an older copy of it (whose MACs are valid), delete it, strip every
// MAC so that the next open upgrades the vault again as if it were an
// earlier release's (which says so every time, and trusts the account
// secrets it finds), and change what no MAC covers (accounts' settings and
// state). Client key rows carry MACs of their own (rowmac.go).

import (
	"bytes"
	"context"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"filippo.io/age"
	"github.com/jmoiron/sqlx"
	"golang.org/x/crypto/scrypt"

	"github.com/claudeflare/claudeflare/store"
)

// ErrTampered is returned when the vault's metadata does not carry a valid
// MAC made with the master key: it was changed outside claudeflare.
var ErrTampered = errors.New("vault metadata failed authentication: the master record or a data key was changed outside claudeflare")

// Domain separation of everything derived from the master identity.
const (
	rootSaltIdentity   = "claudeflare master identity root v1"
	rootSaltPassphrase = "claudeflare master passphrase root v1"
	purposeMetaMAC     = "claudeflare vault metadata mac v1"
	purposeBackup      = "claudeflare backup authentication v1"
)

// passphraseRootLogN is the log2 scrypt work factor that turns a master
// passphrase into the root of its derived keys (age's default). It is part
// of the key derivation, so it never changes; tests lower it.
var passphraseRootLogN = 18

// identityRoot is the root key derived from an age identity's secret key.
func identityRoot(id age.Identity) ([]byte, bool) {
	var s string
	switch id := id.(type) {
	case *age.X25519Identity:
		s = id.String()
	case *age.HybridIdentity:
		s = id.String()
	default:
		return nil, false
	}
	k, err := hkdf.Extract(sha256.New, []byte(s), []byte(rootSaltIdentity))
	if err != nil {
		return nil, false
	}
	return k, true
}

// passphraseRoot is the root key derived from the master passphrase,
// computed once per master (scrypt is slow on purpose).
func (m *master) passphraseRoot() ([]byte, error) {
	m.rootMu.Lock()
	defer m.rootMu.Unlock()
	if m.passRoot == nil {
		k, err := scrypt.Key([]byte(m.passphrase), []byte(rootSaltPassphrase), 1<<passphraseRootLogN, 8, 1, 32)
		if err != nil {
			return nil, fmt.Errorf("derive key from passphrase: %w", err)
		}
		m.passRoot = k
	}
	return m.passRoot, nil
}

// primaryRoot is the root key that new MACs and the backup key come from:
// the passphrase, or the first identity of the master key source.
func (m *master) primaryRoot() ([]byte, error) {
	if m.kind() == MasterPassphrase {
		return m.passphraseRoot()
	}
	for _, id := range m.primary {
		if r, ok := identityRoot(id); ok {
			return r, nil
		}
	}
	return nil, fmt.Errorf("%s: no usable age identity", m.where)
}

// roots are the root keys of every identity that may open the vault:
// primary first, then leftovers of an interrupted rotation.
func (m *master) roots() ([][]byte, error) {
	if m.kind() == MasterPassphrase {
		r, err := m.passphraseRoot()
		if err != nil {
			return nil, err
		}
		return [][]byte{r}, nil
	}
	var out [][]byte
	for _, id := range m.identities {
		if r, ok := identityRoot(id); ok {
			out = append(out, r)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: no usable age identity", m.where)
	}
	return out, nil
}

func purposeKey(root []byte, purpose string) []byte {
	k, err := hkdf.Expand(sha256.New, root, purpose, 32)
	if err != nil {
		panic(err) // 32 bytes of SHA-256 output never fails
	}
	return k
}

// metaMAC is the HMAC of parts, each length-prefixed, under the metadata
// key derived from root.
func metaMAC(root []byte, parts ...[]byte) []byte {
	h := hmac.New(sha256.New, purposeKey(root, purposeMetaMAC))
	var n [8]byte
	for _, p := range parts {
		binary.BigEndian.PutUint64(n[:], uint64(len(p)))
		h.Write(n[:])
		h.Write(p)
	}
	return h.Sum(nil)
}

func masterParts(kind, recipients string, auditWrap []byte) [][]byte {
	return [][]byte{[]byte("master"), []byte(kind), []byte(recipients), auditWrap}
}

func dataKeyParts(id int64, recipient string, wrapped, payloadKey []byte, retired *int64, bound bool) [][]byte {
	ret := []byte("current")
	if retired != nil {
		ret = []byte(strconv.FormatInt(*retired, 10))
	}
	b := []byte("unbound")
	if bound {
		b = []byte("bound")
	}
	return [][]byte{[]byte("data_key"), []byte(strconv.FormatInt(id, 10)), []byte(recipient), wrapped, payloadKey, ret, b}
}

func macOK(got []byte, roots [][]byte, parts [][]byte) bool {
	if got == nil {
		return false
	}
	for _, r := range roots {
		if hmac.Equal(got, metaMAC(r, parts...)) {
			return true
		}
	}
	return false
}

// masterRecord is the master row as the MAC sees it.
type masterRecord = store.MasterRecord

func readMasterRecord(ctx context.Context, q sqlx.QueryerContext) (masterRecord, error) {
	rec, err := store.GetMaster(ctx, q)
	if err != nil {
		return rec, fmt.Errorf("read master record: %w", err)
	}
	return rec, nil
}

// verifyMaster checks the master record's MAC (or, during a rotation, the
// incoming master's) with roots.
func verifyMaster(rec masterRecord, roots [][]byte) error {
	if macOK(rec.MAC, roots, masterParts(rec.Kind, rec.Recipients, rec.AuditKey)) {
		return nil
	}
	if rec.NextKind != nil && rec.NextRecipients != nil &&
		macOK(rec.NextMAC, roots, masterParts(*rec.NextKind, *rec.NextRecipients, rec.AuditKeyNext)) {
		return nil
	}
	return ErrTampered
}

// verifyDataKey checks a data key row's MAC (or its MAC under the
// incoming master, during a rotation) with roots.
func verifyDataKey(r dataKeyRecord, roots [][]byte) error {
	if macOK(r.MAC, roots, dataKeyParts(r.ID, r.Recipient, r.Wrapped, r.PayloadKey, r.Retired, r.Bound)) {
		return nil
	}
	if r.WrappedNext != nil && macOK(r.MACNext, roots, dataKeyParts(r.ID, r.Recipient, r.WrappedNext, r.PayloadKey, r.Retired, r.Bound)) {
		return nil
	}
	return fmt.Errorf("%w (data key %d)", ErrTampered, r.ID)
}

// ErrBreakGlass is returned by Open for the key of an extra recipient
// (key rotate --add-recipient), which opens the data keys but cannot check
// the vault's MACs: it may only replace the master key.
var ErrBreakGlass = errors.New("this key is an extra (break-glass) recipient of the vault and cannot check its MACs; it can only replace the master key (claudeflare key rotate --data)")

// ErrUnsealed is reported by CheckMAC for a vault whose metadata has no
// MAC yet (made by an earlier release, not opened by its master key since).
var ErrUnsealed = errors.New("the vault's metadata has no MAC yet (made by an earlier release)")

// CheckMAC verifies now, from the database, the MACs of the master record
// and of every data key with the master key in use.
func (v *Vault) CheckMAC(ctx context.Context) error {
	rec, err := readMasterRecord(ctx, v.db.R)
	if err != nil {
		return err
	}
	rows, err := store.ListDataKeys(ctx, v.db.R)
	if err != nil {
		return err
	}
	if isLegacy(rec, rows) {
		return ErrUnsealed
	}
	if err := v.checkMaster(rec); err != nil {
		if m := v.master(); breakGlass(rec, m) {
			return fmt.Errorf("%s is an extra recipient and cannot check the MACs; run with the master key", m.where)
		}
		return err
	}
	roots, err := v.master().roots()
	if err != nil {
		return err
	}
	for _, r := range rows {
		if err := verifyDataKey(r, roots); err != nil {
			return err
		}
	}
	return nil
}

// errMasterReplaced is returned when the master record no longer names
// the master key in use: another process replaced it (key rotate).
var errMasterReplaced = errors.New("the vault's master key was replaced since this process opened it (hint: restart with the current master key)")

// checkMaster verifies the master record rec with the master key in use.
// A long-running holder whose key came from a file reads the file again
// when that fails: another process may have rotated the key in place.
func (v *Vault) checkMaster(rec masterRecord) error {
	m := v.master()
	roots, err := m.roots()
	if err != nil {
		return err
	}
	if verifyMaster(rec, roots) == nil {
		return nil
	}
	if m.path != "" {
		if m2, err := v.ks.load(false, false); err == nil {
			if r2, err := m2.roots(); err == nil && verifyMaster(rec, r2) == nil {
				v.mu.Lock()
				v.m = m2
				v.mu.Unlock()
				return nil
			}
		}
	}
	if m.kind() == MasterIdentity && rec.Kind == MasterIdentity && !listsAny(rec, m) {
		return errMasterReplaced
	}
	return ErrTampered
}

// listsAny reports whether the master record (or the incoming one) lists
// a recipient of m.
func listsAny(rec masterRecord, m *master) bool {
	lists := rec.Recipients
	if rec.NextRecipients != nil {
		lists += "\n" + *rec.NextRecipients
	}
	for _, r := range strings.Split(lists, "\n") {
		for _, s := range m.recipientStrings() {
			if r == s {
				return true
			}
		}
	}
	return false
}

// Results of authenticate besides an error.
const (
	authOK         = iota
	authLegacy     // no MACs yet: sealed by sealLegacy once open
	authBreakGlass // opened by an extra recipient, who cannot check the MACs
)

// authenticate checks the MACs of the master record and of rows (the data
// keys just opened with the master key). A vault that predates the MACs
// is reported as legacy; it is sealed by sealLegacy once it is open.
//
// An extra recipient (key rotate --add-recipient: an offline break-glass
// key) opens the data keys but holds no key to check the MACs with. It is
// refused (ErrBreakGlass), except to replace the master key (Options.Recovery,
// `key rotate`), which makes new MACs: then the vault opens unverified,
// with a warning, and nothing that trusts the old metadata (its recipient
// list, a new data key before the new master) is done.
func (v *Vault) authenticate(ctx context.Context, m *master, rows []dataKeyRecord) (int, error) {
	rec, err := readMasterRecord(ctx, v.db.W)
	if err != nil {
		return 0, err
	}
	if isLegacy(rec, rows) {
		return authLegacy, nil
	}
	roots, err := m.roots()
	if err != nil {
		return 0, err
	}
	if err := verifyMaster(rec, roots); err != nil {
		if breakGlass(rec, m) {
			if !v.recovery {
				return 0, fmt.Errorf("%s: %w", m.where, ErrBreakGlass)
			}
			msg := "the vault was opened with an extra recipient's key, which cannot check the vault's MACs: its metadata is trusted as found until the master key is replaced"
			if v.notify != nil {
				v.notify(msg)
			} else {
				v.log.Warn(msg, "key", m.where)
			}
			return authBreakGlass, nil
		}
		return 0, err
	}
	for _, r := range rows {
		if err := verifyDataKey(r, roots); err != nil {
			return 0, err
		}
	}
	return authOK, nil
}

// breakGlass reports whether m is an extra recipient of the vault: listed,
// but not first.
func breakGlass(rec masterRecord, m *master) bool {
	if m.kind() != MasterIdentity {
		return false
	}
	mine := m.recipientStrings()
	check := func(list string) (listed, first bool) {
		for i, r := range strings.Split(list, "\n") {
			for _, s := range mine {
				if r == s {
					listed = true
					first = first || i == 0
				}
			}
		}
		return listed, first
	}
	listed, first := check(rec.Recipients)
	if rec.NextRecipients != nil {
		l2, f2 := check(*rec.NextRecipients)
		listed, first = listed || l2, first || f2
	}
	return listed && !first
}

// AuditKey returns the 32-byte HMAC key of the audit chain. It is random,
// made on first use by a holder of the master key, stored wrapped to the
// master key and covered by the vault's metadata MAC, and carried across
// `key rotate` (re-wrapped), so old audit entries still verify.
func (v *Vault) AuditKey(ctx context.Context) ([]byte, error) {
	v.auditMu.Lock()
	defer v.auditMu.Unlock()
	if v.auditKey != nil {
		return bytes.Clone(v.auditKey), nil
	}
	rec, err := readMasterRecord(ctx, v.db.W)
	if err != nil {
		return nil, err
	}
	if rec.AuditKey == nil {
		if err := v.makeAuditKey(ctx); err != nil {
			return nil, err
		}
		if rec, err = readMasterRecord(ctx, v.db.W); err != nil {
			return nil, err
		}
	}
	v.mu.RLock()
	glass := v.breakGlass
	v.mu.RUnlock()
	if !glass {
		if err := v.checkMaster(rec); err != nil {
			return nil, err
		}
	}
	m := v.master()
	key, err := decrypt(rec.AuditKey, m.identities...)
	if errors.Is(err, ErrWrongKey) && rec.AuditKeyNext != nil {
		key, err = decrypt(rec.AuditKeyNext, m.identities...)
	}
	if err != nil {
		return nil, fmt.Errorf("open audit key: %w", err)
	}
	if len(key) != 32 {
		return nil, errors.New("open audit key: malformed")
	}
	v.auditKey = key
	return bytes.Clone(key), nil
}

// makeAuditKey makes the audit key, wraps it to the master and stores it
// with a new master MAC, unless another process made one first.
func (v *Vault) makeAuditKey(ctx context.Context) error {
	if rec, err := readMasterRecord(ctx, v.db.W); err != nil {
		return err
	} else if rec.NextKind != nil {
		return errRotationInterrupted
	}
	to, err := v.wrapSet(ctx) // checks the master record first
	if err != nil {
		return err
	}
	m := v.master()
	roots, err := m.roots()
	if err != nil {
		return err
	}
	root, err := m.primaryRoot()
	if err != nil {
		return err
	}
	key, wrap, err := newAuditKey(to)
	if err != nil {
		return err
	}
	var sealedKeys []string
	err = store.Tx(ctx, v.db, func(tx *sqlx.Tx) error {
		sealedKeys = nil
		rec, err := readMasterRecord(ctx, tx)
		if err != nil {
			return err
		}
		if rec.AuditKey != nil {
			return nil // another process made it
		}
		if rec.NextKind != nil {
			return errRotationInterrupted
		}
		if err := verifyMaster(rec, roots); err != nil {
			return err
		}
		mac := metaMAC(root, masterParts(rec.Kind, rec.Recipients, wrap)...)
		if err = store.SetAuditKey(ctx, tx, wrap, mac); err != nil {
			return err
		}
		// Client keys made by an earlier release get their MACs with
		// the audit key they derive from (vault/rowmac.go).
		sealedKeys, err = sealLegacyClientKeys(ctx, tx, key)
		return err
	})
	if err != nil {
		return fmt.Errorf("make audit key: %w", err)
	}
	v.notifyClientKeysSealed(sealedKeys)
	return nil
}

// errRotationInterrupted: the audit key is made once an interrupted key
// rotation is finished.
var errRotationInterrupted = errors.New("a key rotation was interrupted (hint: run claudeflare key rotate to finish it)")

// newAuditKey makes an audit key and its wrap to the recipients to.
func newAuditKey(to []age.Recipient) (key, wrap []byte, err error) {
	key = make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return nil, nil, err
	}
	if wrap, err = encrypt(key, to...); err != nil {
		return nil, nil, fmt.Errorf("wrap audit key: %w", err)
	}
	return key, wrap, nil
}

// BackupKey returns the HMAC key backups are authenticated with, derived
// (HKDF-SHA256, purpose string) from the master identity in use; only a
// holder of the master identity can compute it.
func (v *Vault) BackupKey() ([]byte, error) {
	root, err := v.master().primaryRoot()
	if err != nil {
		return nil, err
	}
	return purposeKey(root, purposeBackup), nil
}

// BackupKeys returns the backup HMAC keys of every identity ks yields
// (the master file may hold rotation leftovers; --keep-old files), for
// restore to try in turn.
func BackupKeys(ks KeySource) ([][]byte, error) {
	m, err := ks.load(false, false)
	if err != nil {
		return nil, err
	}
	roots, err := m.roots()
	if err != nil {
		return nil, err
	}
	out := make([][]byte, 0, len(roots))
	for _, r := range roots {
		out = append(out, purposeKey(r, purposeBackup))
	}
	return out, nil
}
