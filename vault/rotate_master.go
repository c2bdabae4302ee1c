package vault

// Master key rotation: the steps 1 to 5 of the overview in rotate.go,
// and resume, which finishes or undoes a rotation a crash interrupted.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"filippo.io/age"
	"github.com/jmoiron/sqlx"

	"github.com/claudeflare/claudeflare/internal/fsutil"
	"github.com/claudeflare/claudeflare/store"
)

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
		if m.kind() == MasterPassphrase {
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
	nm, err := fromIdentities(ids, "identity file "+p.file, p.file)
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
		rows, err := store.ListDataKeys(ctx, tx)
		if err != nil {
			return err
		}
		for _, r := range rows {
			w := wraps[r.ID]
			if w == nil {
				return fmt.Errorf("data key %d appeared during the rotation", r.ID)
			}
			mac := metaMAC(nroot, dataKeyParts(r.ID, r.Recipient, w, r.PayloadKey, r.Retired, r.Bound)...)
			if err := store.SetNextWrap(ctx, tx, r.ID, w, mac); err != nil {
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
		err = store.SetNextMaster(ctx, tx, nm.kind(), recipients, metaMAC(nroot, masterParts(nm.kind(), recipients, auditNext)...), auditNext)
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
		return store.CommitNextMaster(ctx, tx, store.ToMS(v.now()))
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
	row, err := readMasterRecord(ctx, v.db.W)
	if err != nil {
		return false, err
	}
	rows, err := store.ListDataKeys(ctx, v.db.W)
	if err != nil {
		return false, err
	}
	m := v.master()
	fileBased := m.path != "" && m.source != sourceCredential
	changed := false
	if row.NextKind != nil {
		changed = true
		if m, err = v.finishOrUndo(ctx, m, rows, fileBased); err != nil {
			return false, err
		}
		// Re-read: the wraps changed.
		if rows, err = store.ListDataKeys(ctx, v.db.W); err != nil {
			return false, err
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
		nm, err := fromIdentities(nextIDs, m.where, m.path)
		if err != nil {
			return nil, err
		}
		nm.source = m.source
		m = nm
	case opensAll(rows, m.primary, false):
		// Only the old key is at hand: undo.
		err := store.Tx(ctx, v.db, func(tx *sqlx.Tx) error {
			return store.UndoNextMaster(ctx, tx)
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
