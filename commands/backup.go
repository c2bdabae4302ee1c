package commands

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/claudeflare/claudeflare/backup"
	"github.com/claudeflare/claudeflare/config"
	"github.com/claudeflare/claudeflare/store"
	"github.com/claudeflare/claudeflare/vault"
)

const keyHintRestore = "give the master key the backup was made for: --identity FILE, CLAUDEFLARE_ENCRYPTION_KEY or CLAUDEFLARE_PASSPHRASE"

func backupCommand() *cli.Command {
	return &cli.Command{
		Name:      "backup",
		Usage:     "write an encrypted backup of the vault and the request log to FILE (- for stdout)",
		ArgsUsage: "FILE",
		Description: "backup takes a consistent snapshot of vault.db and log.db (SQLite VACUUM INTO;\n" +
			"safe while the daemon serves, which it never blocks), packs them with\n" +
			"identity.txt when the data dir has one, and encrypts the archive with age to\n" +
			"the vault's master recipient(s), or with the vault's passphrase\n" +
			"(CLAUDEFLARE_PASSPHRASE). Only the master key opens it. It needs the master\n" +
			"key: the manifest (every file's size and SHA-256, the master recipients) is\n" +
			"authenticated with an HMAC whose key is derived from the master identity or\n" +
			"passphrase, so that restore can tell it from an archive someone else\n" +
			"encrypted to the public recipient. The age header names the master\n" +
			"recipients in the clear (a stanza age ignores), so that a restore without\n" +
			"the right key can say which it needs. FILE is written atomically with mode\n" +
			"0600. After `key rotate`, older backups need the old key (key rotate\n" +
			"--keep-old FILE keeps it; restore --identity FILE uses it).",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "no-log", Usage: "leave the request log out (accounts and keys only)"},
		},
		Action: runBackup,
	}
}

func restoreCommand() *cli.Command {
	return &cli.Command{
		Name:      "restore",
		Usage:     "restore the data dir from a backup FILE (- for stdin)",
		ArgsUsage: "FILE",
		Description: "restore decrypts FILE with the master key (the first of --identity FILE,\n" +
			"CLAUDEFLARE_ENCRYPTION_KEY, CLAUDEFLARE_IDENTITY_FILE, CLAUDEFLARE_PASSPHRASE,\n" +
			"the systemd credential, <data dir>/identity.txt; after a rotation, --identity\n" +
			"the file written by key rotate --keep-old).\n" +
			"When that key does not open it, the error names the recipient the archive\n" +
			"was made for.\n" +
			"\n" +
			"What a restore trusts: nothing in the archive until its manifest's HMAC\n" +
			"verifies with the backup key derived from that same master key, which only\n" +
			"its holder has: an archive anyone else built and encrypted to the public\n" +
			"recipient is refused before anything is unpacked. Then every file must match\n" +
			"the size and SHA-256 the manifest lists, and each database pass an integrity\n" +
			"check and have a schema this binary knows; only then are vault.db, log.db\n" +
			"and identity.txt moved into the data dir (a log.db absent from the archive is\n" +
			"removed, as are stale WAL files). What it cannot tell: whether an authentic\n" +
			"backup is the newest one (an older archive of the same key restores as well).\n" +
			"\n" +
			"It refuses while a daemon runs on the data dir, refuses to replace an\n" +
			"existing vault unless --force, and never replaces the data dir's\n" +
			"identity.txt with a different one from the archive unless --replace-identity\n" +
			"(the old one is kept as identity.txt.replaced-TIME). Backups made by the\n" +
			"first release carry no MAC: with an identity they restore only with\n" +
			"--allow-unauthenticated (one encrypted with the vault's passphrase is\n" +
			"authenticated by it).",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "force", Usage: "replace the data dir's existing vault and request log"},
			&cli.BoolFlag{Name: "replace-identity", Usage: "install the archive's identity.txt over a different one in the data dir (which is kept as identity.txt.replaced-TIME)"},
			&cli.BoolFlag{Name: "allow-unauthenticated", Usage: "restore a backup made by an earlier release, which carries no MAC: only one you know you made and kept safe"},
		},
		Action: runRestore,
	}
}

// backupArgs are the parsed arguments of backup and restore.
type backupArgs struct {
	file                 string
	noLog                bool
	force                bool
	replaceIdentity      bool
	allowUnauthenticated bool
}

func parseBackupArgs(c *cli.Context, cmd string) (backupArgs, error) {
	if c.NArg() != 1 {
		return backupArgs{}, usagef("%s needs exactly one FILE argument (- for %s)", cmd, map[string]string{"backup": "stdout", "restore": "stdin"}[cmd])
	}
	return backupArgs{file: c.Args().First(), noLog: c.Bool("no-log"), force: c.Bool("force"),
		replaceIdentity: c.Bool("replace-identity"), allowUnauthenticated: c.Bool("allow-unauthenticated")}, nil
}

func runBackup(c *cli.Context) error {
	a, err := parseBackupArgs(c, "backup")
	if err != nil {
		return err
	}
	e := getEnv(c)
	cfg, err := e.config(nil)
	if err != nil {
		return err
	}
	if a.file == "-" && isTerminal(e.stdout) {
		return usagef("refusing to write a binary backup to a terminal; give a FILE or redirect stdout")
	}
	if _, err := os.Stat(filepath.Join(cfg.DataDir, store.VaultFile)); err != nil {
		return withHint(fmt.Errorf("nothing to back up: no vault in %s", cfg.DataDir), "check --data-dir / CLAUDEFLARE_DATA_DIR")
	}
	vdb, err := store.OpenVault(cfg.DataDir)
	if err != nil {
		return fmt.Errorf("open vault: %w", err)
	}
	defer vdb.Close()
	ks, macKey, err := e.backupKey(c.Context, vdb, cfg)
	if err != nil {
		return err
	}
	opts := backup.Options{DataDir: cfg.DataDir, Vault: vdb, Keys: ks, MACKey: macKey, Version: versionString()}
	if !a.noLog {
		ldb, err := e.openLog(cfg)
		if err != nil {
			return err
		}
		defer ldb.Close()
		opts.Log = ldb
	}
	var m backup.Manifest
	var size int64
	if a.file == "-" {
		cw := &countingWriter{w: e.stdout}
		m, err = backup.Create(c.Context, cw, opts)
		size = cw.n
	} else {
		m, size, err = backup.CreateFile(c.Context, a.file, opts)
	}
	switch {
	case errors.Is(err, backup.ErrNeedPassphrase):
		return withHint(err, "set CLAUDEFLARE_PASSPHRASE to the vault's passphrase")
	case errors.Is(err, backup.ErrRotationPending):
		return withHint(err, "run `claudeflare key rotate` to finish it, then back up")
	case err != nil:
		return keyHint(fmt.Errorf("backup: %w", err))
	}
	where := a.file
	if where == "-" {
		where = "stdout"
	}
	e.say("wrote %s (%s, %d bytes, %s master key)", where, fileNames(m), size, m.MasterKind) // on a terminal only: cron mails failures
	return nil
}

// backupKey opens the vault with the master key (asking for a passphrase
// on a terminal, which the archive is then encrypted with) and returns
// the key source and the backup key that authenticates the manifest.
func (e *env) backupKey(ctx context.Context, vdb *store.DB, cfg *config.Config) (vault.KeySource, []byte, error) {
	ks := e.keySource(cfg)
	info, err := vault.ReadMaster(ctx, vdb)
	if err != nil {
		return ks, nil, err
	}
	if info.Kind == vault.MasterPassphrase && ks.Passphrase == "" && ks.EncryptionKey == "" && ks.IdentityFile == "" {
		if !isTerminal(e.stdin) {
			return ks, nil, withHint(backup.ErrNeedPassphrase, "set CLAUDEFLARE_PASSPHRASE to the vault's passphrase")
		}
		if ks.Passphrase, err = e.readPassphrase("Passphrase: "); err != nil {
			return ks, nil, err
		}
	}
	v, err := vault.Open(ctx, vdb, ks, vault.Options{Logger: e.log,
		Notify: func(msg string) { fmt.Fprintf(e.stderr, "claudeflare: %s\n", msg) }})
	if err != nil {
		return ks, nil, keyHint(fmt.Errorf("backup: %w", err))
	}
	key, err := v.BackupKey()
	if err != nil {
		return ks, nil, fmt.Errorf("backup: %w", err)
	}
	return ks, key, nil
}

func runRestore(c *cli.Context) error {
	a, err := parseBackupArgs(c, "restore")
	if err != nil {
		return err
	}
	e := getEnv(c)
	cfg, err := e.config(nil)
	if err != nil {
		return err
	}
	ids, err := backup.Identities(e.keySource(cfg))
	if err != nil {
		if errors.Is(err, vault.ErrKeyFileMode) {
			return withHint(err, "chmod 600 the identity file")
		}
		if a.file != "-" {
			if f, ferr := os.Open(a.file); ferr == nil {
				rs := backup.ArchiveRecipients(f)
				f.Close()
				if len(rs) > 0 {
					return withHint(err, "give the master key the backup was made for, the identity of "+strings.Join(rs, " or ")+": --identity FILE or CLAUDEFLARE_ENCRYPTION_KEY")
				}
			}
		}
		return withHint(err, keyHintRestore)
	}
	backupKeys, err := vault.BackupKeys(e.keySource(cfg))
	if err != nil {
		return withHint(err, keyHintRestore)
	}
	var in io.Reader = e.stdin
	if a.file != "-" {
		f, err := os.Open(a.file)
		if err != nil {
			return fmt.Errorf("open backup: %w", err)
		}
		defer f.Close()
		in = f
	}
	res, err := backup.Restore(c.Context, in, backup.RestoreOptions{DataDir: cfg.DataDir, Identities: ids, BackupKeys: backupKeys,
		Force: a.force, ReplaceIdentity: a.replaceIdentity, AllowUnauthenticated: a.allowUnauthenticated})
	var wrongKey *backup.WrongKeyError
	switch {
	case errors.As(err, &wrongKey) && len(wrongKey.Recipients) > 0:
		return withHint(err, "give the master identity of "+strings.Join(wrongKey.Recipients, " or ")+
			" with --identity FILE (after a key rotation: the file key rotate --keep-old wrote) or CLAUDEFLARE_ENCRYPTION_KEY")
	case errors.Is(err, backup.ErrNotAuthentic):
		return withHint(err, "do not restore it: someone who knows only the public recipient can build such an archive; if you made it with an earlier master key, give that key with --identity FILE")
	case errors.Is(err, backup.ErrUnauthenticated):
		return withHint(err, "if you made this backup with an earlier release and kept it safe, restore it with --allow-unauthenticated")
	case errors.Is(err, backup.ErrIdentityDiffers):
		return withHint(err, "--replace-identity installs it (the current identity.txt is kept as identity.txt.replaced-TIME); or restore into an empty data dir")
	case errors.Is(err, backup.ErrDaemonRunning):
		return withHint(err, "stop it first (e.g. `systemctl stop claudeflare`), then restore")
	case errors.Is(err, backup.ErrVaultExists):
		return withHint(err, "--force replaces it; back it up first with `claudeflare backup FILE`")
	case errors.Is(err, backup.ErrWrongKey):
		return withHint(err, keyHintRestore)
	case err != nil:
		return fmt.Errorf("restore: %w", err)
	}
	switch {
	case res.Passphrase:
		fmt.Fprintln(e.stderr, "claudeflare: the backup was made by an earlier release; it is authenticated by its encryption with the vault's passphrase")
	case !res.Authenticated:
		fmt.Fprintln(e.stderr, "claudeflare: warning: restored an unauthenticated backup made by an earlier release (--allow-unauthenticated); run `claudeflare doctor` and check `claudeflare apikey list` and the master recipients")
	}
	if len(res.Manifest.Recipients) > 0 {
		fmt.Fprintf(e.stderr, "claudeflare: the restored vault's master recipients: %s\n", strings.Join(res.Manifest.Recipients, ", "))
	}
	if res.IdentityMovedAside != "" {
		fmt.Fprintf(e.stderr, "claudeflare: kept the data dir's previous identity as %s\n", res.IdentityMovedAside)
	}
	fmt.Fprintf(e.stderr, "claudeflare: restored %s into %s (backup of %s)\n",
		strings.Join(res.Restored, ", "), cfg.DataDir, lineTime(res.Manifest.CreatedAt))
	return nil
}

func fileNames(m backup.Manifest) string {
	var names []string
	for _, f := range m.Files {
		names = append(names, f.Name)
	}
	return strings.Join(names, ", ")
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
