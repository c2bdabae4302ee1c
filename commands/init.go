package commands

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/urfave/cli/v2"

	"github.com/claudeflare/claudeflare/store"
	"github.com/claudeflare/claudeflare/vault"
)

func initCommand() *cli.Command {
	return &cli.Command{
		Name:  "init",
		Usage: "create the data dir, databases and master identity if absent; print the master recipient",
		Description: "init is idempotent: run it again and it prints the same recipient. Other\n" +
			"commands create what they need on first use too.",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "pq", Usage: "make the new master identity an age hybrid post-quantum one (AGE-SECRET-KEY-PQ-1...; recipient age1pq1...)"},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return usagef("init takes no arguments")
			}
			e := getEnv(c)
			cfg, err := e.config(nil)
			if err != nil {
				return err
			}
			_, err = os.Stat(filepath.Join(cfg.DataDir, store.VaultFile))
			fresh := errors.Is(err, fs.ErrNotExist)
			v, err := e.openVaultPQ(c.Context, cfg, c.Bool("pq"))
			if err != nil {
				return err
			}
			defer v.DB().Close()
			logDB, err := e.openLog(cfg)
			if err != nil {
				return err
			}
			logDB.Close()
			kind, recipients, err := v.Recipients(c.Context)
			if err != nil {
				return err
			}
			if len(recipients) == 0 {
				fmt.Fprintf(e.stderr, "claudeflare: the vault is protected by a %s; it has no public recipient\n", kind)
			}
			for _, r := range recipients {
				fmt.Fprintln(e.stdout, r)
			}
			if fresh && !e.quiet {
				// Once, when the vault is made (terminal or not: a
				// provisioning script's log should hold it too): the one
				// thing a new user must do that nothing reminds them of.
				fmt.Fprintf(e.stderr, "claudeflare: %s\n", backupAdvice(e.keySource(cfg)))
				fmt.Fprintln(e.stderr, "claudeflare: back up the data with `claudeflare backup FILE` (encrypted to that key); `claudeflare restore FILE` needs the key too")
			}
			return nil
		},
	}
}

// backupAdvice says which master key to keep a copy of, by where it
// comes from (ks resolved): never the key itself.
func backupAdvice(ks vault.KeySource) string {
	const why = "without it neither the vault nor any backup opens"
	switch {
	case ks.EncryptionKey != "":
		return "keep a copy of the key in CLAUDEFLARE_ENCRYPTION_KEY off this machine: " + why
	case ks.Passphrase != "":
		return "keep the passphrase (CLAUDEFLARE_PASSPHRASE) safe, e.g. in a password manager: " + why
	case ks.CredentialsDir != "":
		return "keep a copy of the systemd credential " + filepath.Join(ks.CredentialsDir, vault.CredentialName) + " off this machine: " + why
	case ks.IdentityFile != "":
		return "back up the master identity " + ks.IdentityFile + " now, off this machine: " + why
	}
	return "back up the master identity " + filepath.Join(ks.DataDir, vault.IdentityFileName) + " now, off this machine: " + why
}
