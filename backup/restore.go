package backup

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"filippo.io/age"

	"github.com/claudeflare/claudeflare/internal/fsutil"
	"github.com/claudeflare/claudeflare/internal/statefile"
	"github.com/claudeflare/claudeflare/store"
	"github.com/claudeflare/claudeflare/vault"
)

// LockFile is the file a running daemon holds an exclusive flock on.
const LockFile = statefile.LockName

// RestoreOptions configure Restore.
type RestoreOptions struct {
	// DataDir is where to restore; created 0700 if absent.
	DataDir string
	// Identities open the archive: the master key (see Identities).
	Identities []age.Identity
	// BackupKeys authenticate the archive's manifest: vault.BackupKeys of
	// the same key source. One of them must verify its MAC.
	BackupKeys [][]byte
	// Force replaces an existing vault.
	Force bool
	// ReplaceIdentity lets the archive's identity.txt replace a different
	// one in the data dir (kept as identity.txt.replaced-TIME).
	ReplaceIdentity bool
	// AllowUnauthenticated accepts an archive made by the first release,
	// which carries no MAC (FormatV1), encrypted to a public recipient.
	AllowUnauthenticated bool
	// Now is the clock (nil = time.Now), for names of files moved aside.
	Now func() time.Time
}

// RestoreResult says what Restore did.
type RestoreResult struct {
	Manifest Manifest
	// Restored are the files written into the data dir.
	Restored []string
	// Removed are files of the data dir that were removed (a request log,
	// WAL files) so that nothing stale mixes with the restored data.
	Removed []string
	// IdentityMovedAside is where a different identity.txt that was in
	// the data dir was moved, "" when none was.
	IdentityMovedAside string
	// Authenticated: the manifest's MAC verified with a backup key; false
	// for an archive of the first release restored with
	// AllowUnauthenticated, or authenticated by its passphrase encryption
	// (Passphrase).
	Authenticated bool
	// Passphrase: a first-release archive encrypted with the vault's
	// passphrase, which only its holder could make.
	Passphrase bool
}

// More errors callers map to hints.
var (
	// ErrNotAuthentic: the manifest's MAC does not verify with the backup
	// key of any identity given: the archive was made by someone else
	// (anyone can encrypt to the public recipient) or changed.
	ErrNotAuthentic = errors.New("the backup is not authenticated by the master key: it was not made by `claudeflare backup` with this key, or it was changed since")
	// ErrUnauthenticated: an archive of the first release (no MAC),
	// refused without AllowUnauthenticated.
	ErrUnauthenticated = errors.New("the backup was made by an earlier release and carries no authentication: anyone who knows the public master recipient could have made it")
	// ErrIdentityDiffers: the archive's identity.txt is not the data
	// dir's, refused without ReplaceIdentity.
	ErrIdentityDiffers = errors.New("the backup holds a master identity different from the data dir's identity.txt")
)

// WrongKeyError is ErrWrongKey with the recipients the archive names.
type WrongKeyError struct {
	// Recipients the archive is encrypted to, as its header names them
	// (none for a passphrase archive or one made by the first release).
	Recipients []string
}

func (e *WrongKeyError) Error() string {
	if len(e.Recipients) == 0 {
		return ErrWrongKey.Error()
	}
	return fmt.Sprintf("%s: it is encrypted to %s", ErrWrongKey, strings.Join(e.Recipients, ", "))
}

// Unwrap makes errors.Is(err, ErrWrongKey) true.
func (e *WrongKeyError) Unwrap() error { return ErrWrongKey }

// Restore decrypts the archive in r and installs its files in the data
// dir. It refuses while a daemon holds the data dir's lock (and holds the
// lock itself, so none starts meanwhile), and refuses to replace a vault
// without opts.Force. The manifest's MAC is checked before anything is
// unpacked (an archive without one only with opts.AllowUnauthenticated);
// everything is then unpacked and verified (sizes and SHA-256 against the
// manifest, integrity check, schema version) in a temp dir inside the data
// dir, and a different identity.txt in the data dir refused unless
// opts.ReplaceIdentity, before the first file is replaced; each file is
// then renamed into place.
func Restore(ctx context.Context, r io.Reader, opts RestoreOptions) (RestoreResult, error) {
	var res RestoreResult
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	if err := vault.EnsureDataDir(opts.DataDir); err != nil {
		return res, err
	}
	unlock, err := LockDataDir(opts.DataDir)
	if err != nil {
		return res, err
	}
	defer unlock()
	vaultPath := filepath.Join(opts.DataDir, store.VaultFile)
	if st, err := os.Stat(vaultPath); err == nil && st.Size() > 0 && !opts.Force {
		return res, fmt.Errorf("%w: %s", ErrVaultExists, vaultPath)
	}

	tmp, err := os.MkdirTemp(opts.DataDir, ".restore-")
	if err != nil {
		return res, fmt.Errorf("create restore dir: %w", err)
	}
	defer os.RemoveAll(tmp)
	m, auth, err := unpack(r, opts, tmp)
	if err != nil {
		return res, err
	}
	res.Manifest = m
	res.Authenticated, res.Passphrase = auth == authMAC, auth == authPassphrase
	for _, f := range m.Files {
		if f.Name == vault.IdentityFileName {
			continue
		}
		if err := verifyDatabase(ctx, filepath.Join(tmp, f.Name), f); err != nil {
			return res, err
		}
	}
	// The identity: the same as the data dir's is not installed again; a
	// different one only with ReplaceIdentity. Decided before anything
	// is replaced.
	installIdentity := false
	if m.has(vault.IdentityFileName) {
		same, exists, err := sameFile(filepath.Join(tmp, vault.IdentityFileName), filepath.Join(opts.DataDir, vault.IdentityFileName))
		if err != nil {
			return res, err
		}
		if exists && !same && !opts.ReplaceIdentity {
			return res, ErrIdentityDiffers
		}
		installIdentity = !same
	}

	// Replace: stale WAL and shared-memory files first (SQLite would
	// replay an old WAL into the restored database), then each file by
	// rename. A request log left out of the archive is removed too.
	hasLog := false
	for _, f := range m.Files {
		hasLog = hasLog || f.Name == store.LogFile
	}
	for _, db := range []string{store.LogFile, store.VaultFile} {
		names := []string{db + "-wal", db + "-shm", db + "-journal"}
		if db == store.LogFile && !hasLog {
			names = append(names, db)
		}
		for _, n := range names {
			p := filepath.Join(opts.DataDir, n)
			if err := os.Remove(p); err == nil {
				res.Removed = append(res.Removed, n)
			} else if !errors.Is(err, os.ErrNotExist) {
				return res, fmt.Errorf("remove %s: %w", n, err)
			}
		}
	}
	// The log before the vault: until the vault is in place, the data dir
	// is not one a daemon could mistake for whole.
	for _, name := range []string{store.LogFile, store.VaultFile, vault.IdentityFileName} {
		if !m.has(name) {
			continue
		}
		dst := filepath.Join(opts.DataDir, name)
		if name == vault.IdentityFileName {
			if !installIdentity {
				continue
			}
			aside, err := moveAside(dst, now())
			if err != nil {
				return res, err
			}
			res.IdentityMovedAside = aside
		}
		if err := os.Rename(filepath.Join(tmp, name), dst); err != nil {
			return res, fmt.Errorf("install %s: %w", name, err)
		}
		res.Restored = append(res.Restored, name)
	}
	return res, fsutil.SyncDir(opts.DataDir)
}

func (m Manifest) has(name string) bool {
	for _, f := range m.Files {
		if f.Name == name {
			return true
		}
	}
	return false
}

// sameFile reports whether the data dir's file dst exists and has the
// same bytes as src.
func sameFile(src, dst string) (same, exists bool, err error) {
	old, err := os.ReadFile(dst)
	if errors.Is(err, os.ErrNotExist) {
		return false, false, nil
	}
	if err != nil {
		return false, false, fmt.Errorf("read %s: %w", dst, err)
	}
	neu, err := os.ReadFile(src)
	if err != nil {
		return false, true, err
	}
	return bytes.Equal(old, neu), true, nil
}

// moveAside renames dst to dst.replaced-TIME, if it exists.
func moveAside(dst string, now time.Time) (string, error) {
	if _, err := os.Lstat(dst); errors.Is(err, os.ErrNotExist) {
		return "", nil
	}
	aside := fmt.Sprintf("%s.replaced-%s", dst, now.UTC().Format("20060102T150405Z"))
	if err := os.Rename(dst, aside); err != nil {
		return "", fmt.Errorf("move %s aside: %w", dst, err)
	}
	return aside, nil
}

type authKind int

const (
	authNone authKind = iota
	authMAC
	authPassphrase
)

// headTap keeps the first bytes read through it: the age header, where
// the hint stanzas name the archive's recipients.
type headTap struct{ buf []byte }

const maxHead = 256 << 10

func (h *headTap) Write(p []byte) (int, error) {
	if room := maxHead - len(h.buf); room > 0 {
		h.buf = append(h.buf, p[:min(room, len(p))]...)
	}
	return len(p), nil
}

// recipients are the hint stanzas' arguments in the header read so far.
func (h *headTap) recipients() []string {
	var out []string
	for _, l := range strings.Split(string(h.buf), "\n") {
		if strings.HasPrefix(l, "---") {
			break
		}
		if f := strings.Fields(l); len(f) == 3 && f[0] == "->" && f[1] == HintStanza && strings.HasPrefix(f[2], "age1") {
			out = append(out, f[2])
		}
	}
	return out
}

// ArchiveRecipients reads the age header at the start of r and returns
// the master recipients its hint stanzas name (none for a passphrase
// archive or one made by the first release), without decrypting.
func ArchiveRecipients(r io.Reader) []string {
	tap := &headTap{}
	io.Copy(tap, io.LimitReader(r, maxHead))
	return tap.recipients()
}

// unpack decrypts the archive, authenticates its manifest and unpacks
// its files into dir, checking each against the manifest.
func unpack(r io.Reader, opts RestoreOptions, dir string) (Manifest, authKind, error) {
	var m Manifest
	ids := opts.Identities
	if len(ids) == 0 {
		return m, authNone, errors.New("no master key to open the backup")
	}
	tap := &headTap{}
	ar, err := age.Decrypt(io.TeeReader(r, tap), ids...)
	if err != nil {
		var nm *age.NoIdentityMatchError
		if errors.As(err, &nm) || strings.Contains(err.Error(), "incorrect passphrase") ||
			strings.Contains(err.Error(), "scrypt identity must be the only one") {
			return m, authNone, &WrongKeyError{Recipients: tap.recipients()}
		}
		return m, authNone, fmt.Errorf("decrypt backup: %w", err)
	}
	tr := tar.NewReader(ar)
	hdr, err := tr.Next()
	if err != nil || hdr.Name != ManifestName {
		return m, authNone, fmt.Errorf("read backup: not a claudeflare backup (no %s)", ManifestName)
	}
	mb, err := io.ReadAll(io.LimitReader(tr, 1<<20))
	if err != nil {
		return m, authNone, fmt.Errorf("read backup manifest: %w", err)
	}
	if err := json.Unmarshal(mb, &m); err != nil {
		return m, authNone, fmt.Errorf("read backup manifest: %w", err)
	}
	auth := authNone
	switch m.Format {
	case Format:
		hdr, err := tr.Next()
		if err != nil || hdr.Name != MACName {
			return m, authNone, ErrNotAuthentic
		}
		mac, err := io.ReadAll(io.LimitReader(tr, 1<<10))
		if err != nil {
			return m, authNone, fmt.Errorf("read backup: %w", err)
		}
		for _, k := range opts.BackupKeys {
			if hmac.Equal(mac, []byte(manifestMAC(k, mb))) {
				auth = authMAC
				break
			}
		}
		if auth != authMAC {
			return m, authNone, ErrNotAuthentic
		}
	case FormatV1:
		// Encrypted with the passphrase, it was made by its holder.
		if _, ok := ids[0].(*age.ScryptIdentity); ok && len(ids) == 1 {
			auth = authPassphrase
		} else if !opts.AllowUnauthenticated {
			return m, authNone, ErrUnauthenticated
		}
	default:
		return m, authNone, fmt.Errorf("read backup: unknown format %q (want %s)", m.Format, Format)
	}
	want := map[string]File{}
	for _, f := range m.Files {
		switch f.Name {
		case store.VaultFile, store.LogFile, vault.IdentityFileName:
		default:
			return m, auth, fmt.Errorf("read backup: unexpected file %q in manifest", f.Name)
		}
		if _, dup := want[f.Name]; dup {
			return m, auth, fmt.Errorf("read backup: %s twice in the manifest", f.Name)
		}
		want[f.Name] = f
	}
	if _, ok := want[store.VaultFile]; !ok {
		return m, auth, errors.New("read backup: no vault.db in the archive")
	}
	seen := map[string]bool{}
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return m, auth, fmt.Errorf("read backup: %w", err)
		}
		f, ok := want[hdr.Name]
		if !ok || seen[hdr.Name] || hdr.Typeflag != tar.TypeReg {
			return m, auth, fmt.Errorf("read backup: unexpected entry %q", hdr.Name)
		}
		seen[hdr.Name] = true
		if err := extract(tr, filepath.Join(dir, f.Name), f); err != nil {
			return m, auth, err
		}
	}
	for name := range want {
		if !seen[name] {
			return m, auth, fmt.Errorf("read backup: %s is missing (truncated archive?)", name)
		}
	}
	return m, auth, nil
}

func extract(r io.Reader, path string, f File) error {
	out, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("unpack %s: %w", f.Name, err)
	}
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(out, h), io.LimitReader(r, f.Size+1))
	if err != nil {
		out.Close()
		return fmt.Errorf("unpack %s: %w", f.Name, err)
	}
	if n != f.Size || hex.EncodeToString(h.Sum(nil)) != f.SHA256 {
		out.Close()
		return fmt.Errorf("unpack %s: checksum mismatch (damaged archive)", f.Name)
	}
	if err := out.Sync(); err != nil {
		out.Close()
		return fmt.Errorf("unpack %s: %w", f.Name, err)
	}
	if err := out.Close(); err != nil {
		return fmt.Errorf("unpack %s: %w", f.Name, err)
	}
	return nil
}

// verifyDatabase checks an unpacked database: integrity and a schema this
// binary knows.
func verifyDatabase(ctx context.Context, path string, f File) error {
	schema := "vault"
	if f.Name == store.LogFile {
		schema = "log"
	}
	_, err := readOnly(path, func(db *store.DB) (int, error) {
		if err := db.IntegrityCheck(ctx); err != nil {
			return 0, err
		}
		v, err := db.UserVersion(ctx)
		if err != nil {
			return 0, err
		}
		if v > store.SchemaVersion(schema) {
			return 0, fmt.Errorf("%w (schema %d, binary knows %d): upgrade claudeflare", store.ErrTooNew, v, store.SchemaVersion(schema))
		}
		return v, nil
	})
	if err != nil {
		return fmt.Errorf("verify %s: %w", f.Name, err)
	}
	return nil
}

// readOnly opens path read-only (creating nothing), runs fn and closes it.
func readOnly(path string, fn func(*store.DB) (int, error)) (int, error) {
	db, err := store.OpenReadOnly(path)
	if err != nil {
		return 0, err
	}
	defer db.Close()
	return fn(db)
}

// LockDataDir takes the exclusive lock a daemon holds on
// <dataDir>/daemon.lock (statefile.LockDataDir), or returns
// ErrDaemonRunning. The returned func releases it.
func LockDataDir(dataDir string) (unlock func(), err error) {
	f, err := statefile.LockDataDir(dataDir)
	if errors.Is(err, statefile.ErrLocked) {
		return nil, ErrDaemonRunning
	}
	if err != nil {
		return nil, err
	}
	return func() { f.Close() }, nil
}

// Identities resolves the master key source to age identities, as the
// vault does (vault.KeySource.Identities): CLAUDEFLARE_ENCRYPTION_KEY, an
// identity file, a passphrase, the systemd credential, <data dir>/identity.txt.
// Identity files readable by other users are refused.
func Identities(ks vault.KeySource) ([]age.Identity, error) {
	return ks.Identities()
}
