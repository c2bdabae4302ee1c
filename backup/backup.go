// Package backup makes and restores encrypted backups of a claudeflare
// data dir: a consistent online snapshot of vault.db and log.db (SQLite's
// VACUUM INTO on a read-only connection, so a running daemon is never
// blocked), packed with a manifest in a tar archive, age-encrypted to the
// vault's master recipient(s), or with scrypt for a passphrase vault.
//
// An archive holds manifest.json first, then manifest.mac, then vault.db,
// log.db (unless left out) and, when the data dir has one, identity.txt:
// the master identity itself, harmless inside an archive that only that
// identity opens, and what makes a restored data dir whole.
//
// Encryption alone does not say who made an archive: anyone can encrypt
// to the public master recipient. So manifest.mac is an HMAC-SHA256 of the
// manifest's exact bytes under the vault's backup key, derived from the
// master identity (or passphrase) itself (vault.Vault.BackupKey), and the
// manifest carries every file's size and SHA-256: restore checks the MAC
// before it unpacks anything, and each file against the manifest. The
// manifest also records the master recipients the archive was made for,
// and the age header names them in a stanza of its own
// ("claudeflare-recipient", ignored by age), so that a restore that cannot
// open the archive can say which key it needs.
package backup

import (
	"archive/tar"
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
	"github.com/claudeflare/claudeflare/store"
	"github.com/claudeflare/claudeflare/vault"
)

// Format names the archive layout in the manifest.
const Format = "claudeflare-backup/2"

// FormatV1 is the layout of the first release: no manifest MAC.
const FormatV1 = "claudeflare-backup/1"

// ManifestName is the archive's first entry; MACName, the second, holds
// the manifest's HMAC-SHA256 (hex) under the backup key.
const (
	ManifestName = "manifest.json"
	MACName      = "manifest.mac"
)

// HintStanza is the type of the age header stanza that names a master
// recipient of the archive (its one argument) in the clear.
const HintStanza = "claudeflare-recipient"

// Errors callers map to hints.
var (
	// ErrDaemonRunning: a daemon holds <data dir>/daemon.lock.
	ErrDaemonRunning = errors.New("a claudeflare daemon is running on this data dir")
	// ErrVaultExists: restore would overwrite a vault.
	ErrVaultExists = errors.New("the data dir already has a vault")
	// ErrWrongKey: the master key does not open the archive.
	ErrWrongKey = errors.New("the master key does not open this backup")
	// ErrNeedPassphrase: the vault is protected by a passphrase and none
	// was given.
	ErrNeedPassphrase = errors.New("the vault is protected by a passphrase: set CLAUDEFLARE_PASSPHRASE")
	// ErrRotationPending: a master key rotation is half done.
	ErrRotationPending = errors.New("a master key rotation was interrupted")
)

// Manifest describes an archive.
type Manifest struct {
	Format    string    `json:"format"`
	CreatedAt time.Time `json:"created_at"`
	Version   string    `json:"version"`
	// MasterKind is the vault's master key kind: identity or passphrase.
	MasterKind string `json:"master_kind"`
	// Recipients are the master recipients the archive is encrypted to
	// (none for a passphrase vault): the key a restore needs.
	Recipients []string `json:"recipients,omitempty"`
	Files      []File   `json:"files"`
}

// File is one archived file.
type File struct {
	Name   string `json:"name"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
	// Schema is a database's PRAGMA user_version.
	Schema int `json:"schema,omitempty"`
}

// Options configure Create.
type Options struct {
	// DataDir is the data dir to back up.
	DataDir string
	// Vault and Log are the open databases. Log may be nil to leave the
	// request log out.
	Vault, Log *store.DB
	// Keys is the master key source; only a passphrase vault needs it
	// (identity vaults are encrypted to their stored recipients).
	Keys vault.KeySource
	// MACKey authenticates the manifest: the vault's BackupKey, which only
	// a holder of the master key can compute. Required.
	MACKey []byte
	// Master is the vault opened with the master key: the recipients the
	// archive is encrypted to are read through it, their MAC checked when
	// read. Nil opens the vault with Keys.
	Master *vault.Vault
	// Version is claudeflare's version, for the manifest.
	Version string
	// Now is the clock (nil = time.Now).
	Now func() time.Time
	// ScryptWorkFactor overrides age's scrypt work factor (tests); 0 keeps
	// age's default.
	ScryptWorkFactor int
}

// Create writes an encrypted archive of the data dir to w and returns its
// manifest. The snapshots are taken in a private temp dir inside the data
// dir, removed before returning.
func Create(ctx context.Context, w io.Writer, opts Options) (Manifest, error) {
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	if len(opts.MACKey) < 16 {
		return Manifest{}, errors.New("no backup key: open the vault with the master key")
	}
	to, kind, names, err := recipients(ctx, opts)
	if err != nil {
		return Manifest{}, err
	}
	tmp, err := os.MkdirTemp(opts.DataDir, ".backup-")
	if err != nil {
		return Manifest{}, fmt.Errorf("create snapshot dir: %w", err)
	}
	defer os.RemoveAll(tmp)

	m := Manifest{Format: Format, CreatedAt: now().UTC().Truncate(time.Second), Version: opts.Version, MasterKind: kind, Recipients: names}
	// The log first: data keys are only ever added while payloads refer
	// to them, so the vault taken after it holds every key the log needs.
	var snaps []string
	if opts.Log != nil {
		snaps = append(snaps, store.LogFile)
	}
	snaps = append(snaps, store.VaultFile)
	for _, name := range snaps {
		db := opts.Vault
		if name == store.LogFile {
			db = opts.Log
		}
		f, err := snapshot(ctx, db, filepath.Join(tmp, name))
		if err != nil {
			return Manifest{}, err
		}
		f.Name = name
		m.Files = append(m.Files, f)
	}
	identity := filepath.Join(opts.DataDir, vault.IdentityFileName)
	if kind == vault.MasterIdentity {
		if b, err := os.ReadFile(identity); err == nil {
			if err := os.WriteFile(filepath.Join(tmp, vault.IdentityFileName), b, 0o600); err != nil {
				return Manifest{}, fmt.Errorf("copy identity file: %w", err)
			}
			m.Files = append(m.Files, File{Name: vault.IdentityFileName, Size: int64(len(b)), SHA256: sum(b)})
		} else if !errors.Is(err, os.ErrNotExist) {
			return Manifest{}, fmt.Errorf("read identity file: %w", err)
		}
	}

	aw, err := age.Encrypt(w, to...)
	if err != nil {
		return Manifest{}, fmt.Errorf("encrypt backup: %w", err)
	}
	tw := tar.NewWriter(aw)
	mb, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return Manifest{}, err
	}
	if err := writeEntry(tw, ManifestName, int64(len(mb)), m.CreatedAt, strings.NewReader(string(mb))); err != nil {
		return Manifest{}, err
	}
	mac := manifestMAC(opts.MACKey, mb)
	if err := writeEntry(tw, MACName, int64(len(mac)), m.CreatedAt, strings.NewReader(mac)); err != nil {
		return Manifest{}, err
	}
	for _, f := range m.Files {
		if err := copyEntry(tw, filepath.Join(tmp, f.Name), f, m.CreatedAt); err != nil {
			return Manifest{}, err
		}
	}
	if err := tw.Close(); err != nil {
		return Manifest{}, fmt.Errorf("write backup: %w", err)
	}
	if err := aw.Close(); err != nil {
		return Manifest{}, fmt.Errorf("encrypt backup: %w", err)
	}
	return m, nil
}

// manifestMAC is the hex HMAC-SHA256 of the manifest's bytes under key.
func manifestMAC(key, manifest []byte) string {
	m := hmac.New(sha256.New, key)
	m.Write(manifest)
	return hex.EncodeToString(m.Sum(nil))
}

// recipients returns whom the archive is encrypted to (with the hint
// stanza for an identity vault), the master kind, and the recipients'
// names for the manifest. The recipients are read through the vault
// opened with the master key (Vault.Recipients), which checks the master
// record's MAC as it reads it: a recipient added to vault.db after the
// vault was opened is not trusted.
func recipients(ctx context.Context, opts Options) ([]age.Recipient, string, []string, error) {
	info, err := vault.ReadMaster(ctx, opts.Vault)
	if err != nil {
		return nil, "", nil, err
	}
	if info.Pending {
		return nil, "", nil, ErrRotationPending
	}
	if info.Kind == vault.MasterPassphrase {
		if opts.Keys.Passphrase == "" {
			return nil, "", nil, ErrNeedPassphrase
		}
		// Only the vault's own passphrase may lock the backup: check it.
		if _, err := vault.Open(ctx, opts.Vault, vault.KeySource{Passphrase: opts.Keys.Passphrase, DataDir: opts.DataDir}, vault.Options{}); err != nil {
			return nil, "", nil, fmt.Errorf("check passphrase: %w", err)
		}
		r, err := age.NewScryptRecipient(opts.Keys.Passphrase)
		if err != nil {
			return nil, "", nil, fmt.Errorf("scrypt recipient: %w", err)
		}
		if opts.ScryptWorkFactor > 0 {
			r.SetWorkFactor(opts.ScryptWorkFactor)
		}
		return []age.Recipient{r}, info.Kind, nil, nil
	}
	v := opts.Master
	if v == nil {
		if v, err = vault.Open(ctx, opts.Vault, opts.Keys, vault.Options{}); err != nil {
			return nil, "", nil, fmt.Errorf("open vault: %w", err)
		}
	}
	kind, names, err := v.Recipients(ctx)
	if err != nil {
		return nil, "", nil, fmt.Errorf("master recipients: %w", err)
	}
	if kind != info.Kind {
		return nil, "", nil, fmt.Errorf("master recipients: %w", vault.ErrTampered)
	}
	if len(names) == 0 {
		return nil, "", nil, errors.New("the vault has no master recipient")
	}
	rs, err := age.ParseRecipients(strings.NewReader(strings.Join(names, "\n")))
	if err != nil {
		return nil, "", nil, fmt.Errorf("parse master recipients: %w", err)
	}
	hint, err := newRecipientHint(rs, names)
	if err != nil {
		return nil, "", nil, err
	}
	return append(rs, hint), kind, names, nil
}

// recipientHint is an age recipient that wraps nothing: it adds one
// stanza per master recipient, naming it in the clear, with the labels of
// the real recipients (age requires them to agree).
type recipientHint struct {
	names  []string
	labels []string
}

func newRecipientHint(rs []age.Recipient, names []string) (*recipientHint, error) {
	h := &recipientHint{names: names}
	if rl, ok := rs[0].(age.RecipientWithLabels); ok {
		_, labels, err := rl.WrapWithLabels(make([]byte, 16))
		if err != nil {
			return nil, fmt.Errorf("master recipient: %w", err)
		}
		h.labels = labels
	}
	return h, nil
}

func (h *recipientHint) Wrap(fileKey []byte) ([]*age.Stanza, error) {
	s, _, err := h.WrapWithLabels(fileKey)
	return s, err
}

func (h *recipientHint) WrapWithLabels([]byte) ([]*age.Stanza, []string, error) {
	var out []*age.Stanza
	for _, n := range h.names {
		out = append(out, &age.Stanza{Type: HintStanza, Args: []string{n}})
	}
	return out, h.labels, nil
}

// snapshot writes a consistent copy of db to path with VACUUM INTO on the
// read-only pool: it reads one snapshot of the database and never takes
// the write lock.
func snapshot(ctx context.Context, db *store.DB, path string) (File, error) {
	if err := db.VacuumInto(ctx, path); err != nil {
		return File{}, fmt.Errorf("snapshot %s: %w", filepath.Base(db.Path), err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		return File{}, fmt.Errorf("snapshot %s: %w", filepath.Base(db.Path), err)
	}
	f := File{}
	var err error
	if f.Size, f.SHA256, err = hashFile(path); err != nil {
		return File{}, err
	}
	schema, err := readOnly(path, func(d *store.DB) (int, error) { return d.UserVersion(ctx) })
	if err != nil {
		return File{}, fmt.Errorf("snapshot %s: %w", filepath.Base(db.Path), err)
	}
	f.Schema = schema
	return f, nil
}

func writeEntry(tw *tar.Writer, name string, size int64, mtime time.Time, r io.Reader) error {
	hdr := &tar.Header{Name: name, Mode: 0o600, Size: size, ModTime: mtime, Typeflag: tar.TypeReg, Format: tar.FormatPAX}
	if err := tw.WriteHeader(hdr); err != nil {
		return fmt.Errorf("write backup: %w", err)
	}
	n, err := io.Copy(tw, r)
	if err != nil {
		return fmt.Errorf("write backup: %w", err)
	}
	if n != size {
		return fmt.Errorf("write backup: %s changed while archiving", name)
	}
	return nil
}

func copyEntry(tw *tar.Writer, path string, f File, mtime time.Time) error {
	in, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("write backup: %w", err)
	}
	defer in.Close()
	return writeEntry(tw, f.Name, f.Size, mtime, in)
}

func hashFile(path string) (int64, string, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, "", err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return 0, "", err
	}
	return n, hex.EncodeToString(h.Sum(nil)), nil
}

func sum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// CreateFile writes the archive to path atomically: a temp file (0600) in
// the same directory, fsynced, renamed over path, then the directory
// fsynced. On error, path is untouched.
func CreateFile(ctx context.Context, path string, opts Options) (Manifest, int64, error) {
	f, err := fsutil.Create(path, 0o600)
	if err != nil {
		return Manifest{}, 0, err
	}
	defer f.Abort()
	cw := &countWriter{w: f}
	m, err := Create(ctx, cw, opts)
	if err != nil {
		return Manifest{}, 0, err
	}
	if err := f.Commit(); err != nil {
		return Manifest{}, 0, err
	}
	return m, cw.n, nil
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
