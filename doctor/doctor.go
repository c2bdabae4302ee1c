// Package doctor checks a claudeflare installation: the master key and its
// file, the data dir, both databases (integrity, schema version), the
// accounts and the free disk space. It never writes: databases are opened
// read-only and nothing missing is created.
package doctor

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/claudeflare/claudeflare/internal/statefile"
	"github.com/claudeflare/claudeflare/store"
	"github.com/claudeflare/claudeflare/vault"
)

// Status of a check.
type Status string

const (
	OK    Status = "ok"
	Warn  Status = "warn"  // worth knowing; not a failure
	Error Status = "error" // something is wrong: doctor exits 1
	Skip  Status = "skip"  // not run because an earlier check failed
)

// Result is the outcome of one check.
type Result struct {
	Check   string
	Status  Status
	Message string
	Hint    string // what to do next; set for Warn and Error
}

// Options say what to check.
type Options struct {
	// DataDir is the data directory (absolute).
	DataDir string
	// Keys is where the master key comes from.
	Keys vault.KeySource
	// MinFree is the free space in the data dir below which the disk
	// check fails; WarnFree the one below which it warns. Zero values
	// mean 100 MiB and 1 GiB.
	MinFree, WarnFree uint64
	// Statfs reports the free bytes of the file system holding a path;
	// nil uses statfs(2). Tests inject one.
	Statfs func(path string) (free, total uint64, err error)
}

// Run runs every check in order and returns their results. A problem is
// reported as a Result, never as an error.
func Run(ctx context.Context, opts Options) []Result {
	d := &doctor{opts: opts}
	d.dataDir()
	d.files()
	vdb := d.database("vault", store.VaultFile)
	ldb := d.database("log", store.LogFile)
	if vdb != nil {
		defer vdb.Close()
	}
	if ldb != nil {
		defer ldb.Close()
	}
	d.key(ctx, vdb)
	d.vault(ctx, vdb)
	d.disk()
	d.daemon()
	return d.out
}

// Problems counts the results that are an Error: doctor exits 1 when
// there is one.
func Problems(rs []Result) int {
	n := 0
	for _, r := range rs {
		if r.Status == Error {
			n++
		}
	}
	return n
}

type doctor struct {
	opts     Options
	out      []Result
	keyBad   bool // the key file check failed: opening the vault would too
	vaultBad bool // vault.db is missing or damaged
	vaultOld bool // vault.db's schema is older than this binary's
}

func (d *doctor) add(check string, st Status, hint, format string, args ...any) {
	d.out = append(d.out, Result{Check: check, Status: st, Message: fmt.Sprintf(format, args...), Hint: hint})
}

func (d *doctor) dataDir() {
	dir := d.opts.DataDir
	st, err := os.Stat(dir)
	switch {
	case errors.Is(err, os.ErrNotExist):
		d.add("data_dir", Error, "run `claudeflare init`, or point --data-dir / CLAUDEFLARE_DATA_DIR at your data", "%s does not exist", dir)
	case err != nil:
		d.add("data_dir", Error, "check the path and its permissions", "%s: %v", dir, err)
	case !st.IsDir():
		d.add("data_dir", Error, "point --data-dir / CLAUDEFLARE_DATA_DIR at a directory", "%s is not a directory", dir)
	case st.Mode().Perm()&0o077 != 0:
		d.add("data_dir", Error, fmt.Sprintf("chmod 700 %s", dir), "%s has mode %04o; other users can list it", dir, st.Mode().Perm())
	default:
		d.add("data_dir", OK, "", "%s", dir)
	}
}

// key checks the master key source; for a key file, that it exists, is a
// regular file and is not readable by other users.
func (d *doctor) key(ctx context.Context, vdb *store.DB) {
	ks := d.opts.Keys
	var path, what string
	switch {
	case ks.EncryptionKey != "":
		d.add("key", OK, "", "master key from CLAUDEFLARE_ENCRYPTION_KEY")
	case ks.IdentityFile != "":
		path, what = ks.IdentityFile, "identity file"
	case ks.Passphrase != "":
		d.add("key", OK, "", "master key from CLAUDEFLARE_PASSPHRASE")
	case ks.CredentialsDir != "" && exists(filepath.Join(ks.CredentialsDir, vault.CredentialName)):
		path, what = filepath.Join(ks.CredentialsDir, vault.CredentialName), "systemd credential"
	default:
		path, what = filepath.Join(d.opts.DataDir, vault.IdentityFileName), "identity file"
	}
	if path == "" {
		return
	}
	st, err := os.Stat(path)
	switch {
	case errors.Is(err, os.ErrNotExist) && what == "identity file" && ks.IdentityFile == "" && passphraseVault(ctx, vdb):
		d.keyBad = true
		d.add("key", Error, "set CLAUDEFLARE_PASSPHRASE", "the vault is protected by a passphrase and none was given")
	case errors.Is(err, os.ErrNotExist):
		d.keyBad = true
		d.add("key", Error, "restore identity.txt from your copy, or give the key: CLAUDEFLARE_ENCRYPTION_KEY, --identity FILE or CLAUDEFLARE_PASSPHRASE",
			"%s %s does not exist", what, path)
	case err != nil:
		d.keyBad = true
		d.add("key", Error, "check the file's permissions", "%s %s: %v", what, path, err)
	case !st.Mode().IsRegular():
		d.keyBad = true
		d.add("key", Error, "give an age identity file", "%s %s is not a regular file", what, path)
	case st.Mode().Perm()&0o077 != 0:
		d.keyBad = true
		d.add("key", Error, fmt.Sprintf("chmod 600 %s", path), "%s %s has mode %04o; other users can read the master key", what, path, st.Mode().Perm())
	default:
		d.add("key", OK, "", "%s %s (mode %04o)", what, path, st.Mode().Perm())
	}
	if what == "identity file" {
		for _, suffix := range []string{vault.NextSuffix, vault.OldSuffix} {
			if exists(path + suffix) {
				d.add("key_rotation", Warn, "run `claudeflare key rotate` again to finish it",
					"%s%s exists: a key rotation was interrupted", path, suffix)
			}
		}
	}
}

func passphraseVault(ctx context.Context, db *store.DB) bool {
	if db == nil {
		return false
	}
	info, err := vault.ReadMaster(ctx, db)
	return err == nil && info.Kind == vault.MasterPassphrase
}

// database checks one SQLite file: integrity and schema version. It
// returns a read-only handle for further checks, nil when the file is
// missing or unusable.
func (d *doctor) database(schema, file string) *store.DB {
	path := filepath.Join(d.opts.DataDir, file)
	name := schema
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		if schema == "vault" {
			d.vaultBad = true
			d.add(name, Error, "run `claudeflare init`, or `claudeflare restore FILE` from a backup", "%s does not exist", path)
		} else {
			d.add(name, Warn, "it is created when the daemon or `claudeflare init` first runs", "%s does not exist", path)
		}
		return nil
	}
	db, err := store.OpenReadOnly(path)
	if err != nil {
		d.damaged(schema, name, path, err)
		return nil
	}
	if err := db.IntegrityCheck(context.Background()); err != nil {
		db.Close()
		var ie *store.IntegrityError
		if errors.As(err, &ie) {
			msg := strings.ReplaceAll(strings.Join(ie.Problems, "\n"), "\n", "; ")
			if len(msg) > 300 {
				msg = msg[:300] + "..."
			}
			err = errors.New(msg)
		}
		d.damaged(schema, name, path, err)
		return nil
	}
	version, err := db.UserVersion(context.Background())
	if err != nil {
		db.Close()
		d.damaged(schema, name, path, err)
		return nil
	}
	want := store.SchemaVersion(schema)
	switch {
	case version > want:
		d.add(name, Error, "upgrade claudeflare: this binary is older than the data",
			"%s: schema version %d is newer than this binary's %d", path, version, want)
	case version < want:
		if schema == "vault" {
			d.vaultOld = true
		}
		d.add(name, Warn, "any claudeflare command that opens it (e.g. `claudeflare init`) upgrades it",
			"%s: integrity ok; schema version %d, will be upgraded to %d", path, version, want)
	default:
		d.add(name, OK, "", "%s: integrity ok, schema version %d", path, version)
	}
	return db
}

func (d *doctor) damaged(schema, name, path string, err error) {
	hint := "stop the daemon and restore a backup: `claudeflare restore --force FILE`"
	if schema == "vault" {
		d.vaultBad = true
	} else {
		hint = "stop the daemon, then restore a backup (`claudeflare restore --force FILE`) or move " +
			filepath.Base(path) + " aside to start a new request log"
	}
	d.add(name, Error, hint, "%s fails the integrity check: %v", path, err)
}

// vault opens the vault with the master key (read-only) and checks the
// accounts.
func (d *doctor) vault(ctx context.Context, db *store.DB) {
	if db == nil || d.vaultBad {
		d.add("vault_key", Skip, "", "vault not opened: see above")
		return
	}
	if d.keyBad {
		d.add("vault_key", Skip, "", "vault not opened: fix the master key first")
		return
	}
	info, err := vault.ReadMaster(ctx, db)
	if errors.Is(err, vault.ErrNotInitialised) {
		d.add("vault_key", Error, "run `claudeflare init`", "the vault is not initialised")
		return
	}
	if err != nil {
		d.add("vault_key", Error, "stop the daemon and restore a backup: `claudeflare restore --force FILE`", "read the vault: %v", err)
		return
	}
	if info.Pending {
		d.add("key_rotation", Warn, "run `claudeflare key rotate` again to finish it", "a master key rotation was interrupted")
	}
	if d.vaultOld {
		// doctor never migrates: the key, MAC and client key checks need
		// the current schema, which the first command with the key makes.
		d.add("vault_key", Warn, "run `claudeflare init` (it upgrades the vault and seals its MACs), then `claudeflare doctor` again",
			"the vault was made by an earlier release: the key, MAC and client key checks run once it is upgraded")
		return
	}
	v, err := vault.Open(ctx, db, d.opts.Keys, vault.Options{ReadOnly: true})
	switch {
	case errors.Is(err, vault.ErrTampered):
		d.vaultMAC(ctx, nil, err)
		return
	case errors.Is(err, vault.ErrWrongKey):
		d.add("vault_key", Error, "give the key this vault was made with: CLAUDEFLARE_ENCRYPTION_KEY, --identity FILE or CLAUDEFLARE_PASSPHRASE",
			"the master key does not open the vault (%s master key)", info.Kind)
		return
	case err != nil:
		d.add("vault_key", Error, "set CLAUDEFLARE_ENCRYPTION_KEY, --identity FILE or CLAUDEFLARE_PASSPHRASE", "open the vault: %v", err)
		return
	}
	d.add("vault_key", OK, "", "the master key (%s) opens the vault", info.Kind)
	d.vaultMAC(ctx, v, nil)
	d.clientKeys(ctx, v, db)

	accts, err := store.ListAccounts(ctx, db)
	if err != nil {
		d.add("accounts", Error, "stop the daemon and restore a backup: `claudeflare restore --force FILE`", "%v", err)
		return
	}
	if len(accts) == 0 {
		d.add("accounts", Warn, "add one with `claudeflare accounts add NAME`", "no accounts")
		return
	}
	usable, paused := 0, 0
	for _, a := range accts {
		switch {
		case a.Status == store.StatusNeedsLogin:
			reason := ""
			if a.StatusReason != "" {
				reason = ": " + a.StatusReason
			}
			d.add("account", Error, fmt.Sprintf("log in again with `claudeflare accounts login %s`", a.Name),
				"account %s needs a new login%s", a.Name, reason)
		case a.Paused:
			paused++
		default:
			usable++
		}
	}
	switch {
	case usable == 0:
		d.add("accounts", Error, "resume one with `claudeflare accounts resume NAME`, or add one", "%s, none usable (%d paused)", plural(len(accts), "account"), paused)
	default:
		d.add("accounts", OK, "", "%s, %d usable, %d paused", plural(len(accts), "account"), usable, paused)
	}
}

// vaultMAC reports whether the vault's key metadata (master recipients,
// data keys, audit key) carries valid MACs made with the master key:
// openErr is Open's ErrTampered, or v is the vault opened.
func (d *doctor) vaultMAC(ctx context.Context, v *vault.Vault, openErr error) {
	err := openErr
	if v != nil {
		err = v.CheckMAC(ctx)
	}
	switch {
	case err == nil:
		d.add("vault_mac", OK, "", "the master record and data keys carry valid MACs")
	case errors.Is(err, vault.ErrUnsealed):
		d.add("vault_mac", Warn, "run any claudeflare command that opens the vault (e.g. `claudeflare accounts check`) to add it, and check the recipients it prints",
			"the vault's key metadata has no MAC yet (made by an earlier release)")
	case errors.Is(err, vault.ErrTampered):
		d.add("vault_mac", Error, "someone who could write vault.db changed it: stop the daemon, restore a backup you trust, then `claudeflare key rotate --data`",
			"%v", err)
	default:
		d.add("vault_mac", Warn, "run doctor with the master key", "%v", err)
	}
}

func (d *doctor) disk() {
	statfs := d.opts.Statfs
	if statfs == nil {
		statfs = statFS
	}
	minFree, warnFree := d.opts.MinFree, d.opts.WarnFree
	if minFree == 0 {
		minFree = 100 << 20
	}
	if warnFree == 0 {
		warnFree = 1 << 30
	}
	dir := d.opts.DataDir
	if !exists(dir) {
		dir = filepath.Dir(dir)
	}
	free, total, err := statfs(dir)
	if err != nil {
		d.add("disk", Warn, "", "free space in %s unknown: %v", dir, err)
		return
	}
	msg := fmt.Sprintf("%s free of %s in %s", bytesString(free), bytesString(total), dir)
	switch {
	case free < minFree:
		d.add("disk", Error, "free space, or delete old log data: `claudeflare cleanup --older-than 30d --vacuum`", "only %s", msg)
	case free < warnFree:
		d.add("disk", Warn, "consider `claudeflare cleanup --older-than 30d --vacuum`", "only %s", msg)
	default:
		d.add("disk", OK, "", "%s", msg)
	}
}

func statFS(path string) (free, total uint64, err error) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return 0, 0, err
	}
	return st.Bavail * uint64(st.Bsize), st.Blocks * uint64(st.Bsize), nil
}

// daemon reports whether a daemon holds the data dir's lock.
func (d *doctor) daemon() {
	running, err := DaemonRunning(d.opts.DataDir)
	switch {
	case err != nil:
		d.add("daemon", Warn, "", "cannot tell whether a daemon runs: %v", err)
	case running:
		d.add("daemon", OK, "", "a daemon is running on this data dir")
	default:
		d.add("daemon", OK, "", "no daemon is running on this data dir")
	}
}

// DaemonRunning reports whether a process holds <dataDir>/daemon.lock.
// It creates nothing.
func DaemonRunning(dataDir string) (bool, error) {
	return statefile.DataDirLocked(dataDir)
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

func bytesString(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}
