package commands

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/claudeflare/claudeflare/backup"
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
			"(CLAUDEFLARE_PASSPHRASE). Only the master key opens it. FILE is written\n" +
			"atomically with mode 0600. After `key rotate`, older backups need the old key.",
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
		Description: "restore decrypts FILE with the master key (the first of\n" +
			"CLAUDEFLARE_ENCRYPTION_KEY, --identity, CLAUDEFLARE_PASSPHRASE, <data\n" +
			"dir>/identity.txt), checks every file, and only then moves vault.db, log.db\n" +
			"and identity.txt into the data dir. It refuses while a daemon runs on the\n" +
			"data dir, and refuses to replace an existing vault unless --force is given.\n" +
			"A different identity.txt already in the data dir is kept as\n" +
			"identity.txt.replaced-TIME.",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "force", Usage: "replace the data dir's existing vault and request log"},
		},
		Action: runRestore,
	}
}

// backupArgs are the parsed arguments of backup and restore.
type backupArgs struct {
	file  string
	noLog bool
	force bool
}

func parseBackupArgs(c *cli.Context, cmd string) (backupArgs, error) {
	if c.NArg() != 1 {
		return backupArgs{}, usagef("%s needs exactly one FILE argument (- for %s)", cmd, map[string]string{"backup": "stdout", "restore": "stdin"}[cmd])
	}
	return backupArgs{file: c.Args().First(), noLog: c.Bool("no-log"), force: c.Bool("force")}, nil
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
	opts := backup.Options{DataDir: cfg.DataDir, Vault: vdb, Keys: e.keySource(cfg), Version: versionString()}
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
	create := func() error {
		var err error
		if a.file == "-" {
			cw := &countingWriter{w: e.stdout}
			m, err = backup.Create(c.Context, cw, opts)
			size = cw.n
		} else {
			m, size, err = backup.CreateFile(c.Context, a.file, opts)
		}
		return err
	}
	err = create()
	// A passphrase vault without CLAUDEFLARE_PASSPHRASE: ask on a terminal
	// (nothing has been written yet when the passphrase is missing).
	if errors.Is(err, backup.ErrNeedPassphrase) && isTerminal(e.stdin) {
		if opts.Keys.Passphrase, err = e.readPassphrase("Passphrase: "); err == nil {
			err = create()
		}
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
	fmt.Fprintf(e.stderr, "claudeflare: wrote %s (%s, %d bytes, %s master key)\n", where, fileNames(m), size, m.MasterKind)
	return nil
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
	res, err := backup.Restore(c.Context, in, backup.RestoreOptions{DataDir: cfg.DataDir, Identities: ids, Force: a.force})
	switch {
	case errors.Is(err, backup.ErrDaemonRunning):
		return withHint(err, "stop it first (e.g. `systemctl stop claudeflare`), then restore")
	case errors.Is(err, backup.ErrVaultExists):
		return withHint(err, "--force replaces it; back it up first with `claudeflare backup FILE`")
	case errors.Is(err, backup.ErrWrongKey):
		return withHint(err, keyHintRestore)
	case err != nil:
		return fmt.Errorf("restore: %w", err)
	}
	if res.IdentityMovedAside != "" {
		fmt.Fprintf(e.stderr, "claudeflare: kept the data dir's previous identity as %s\n", res.IdentityMovedAside)
	}
	fmt.Fprintf(e.stderr, "claudeflare: restored %s into %s (backup of %s)\n",
		strings.Join(res.Restored, ", "), cfg.DataDir, res.Manifest.CreatedAt.UTC().Format("2006-01-02T15:04:05Z"))
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
