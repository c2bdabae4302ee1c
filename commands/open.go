package commands

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/claudeflare/claudeflare/config"
	"github.com/claudeflare/claudeflare/internal/statefile"
	"github.com/claudeflare/claudeflare/store"
	"github.com/claudeflare/claudeflare/vault"
)

// keySource says where the master key comes from, from flags, env and
// config, resolved: only the source that wins is set (flag >
// environment > config file > default; vault.KeySource).
func (e *env) keySource(cfg *config.Config) vault.KeySource {
	s := e.masterSecrets()
	ks := vault.KeySource{
		EncryptionKey:  s.encryptionKey,
		Passphrase:     s.passphrase,
		CredentialsDir: e.getenv("CREDENTIALS_DIRECTORY"),
		DataDir:        cfg.DataDir,
	}
	// identity_file is one setting with three sources, each at its own
	// rank among the master key's sources.
	switch cfg.Origin("identity_file").Kind {
	case config.FromFlag:
		ks.IdentityFlag = cfg.IdentityFile
	case config.FromEnv:
		ks.IdentityFile = cfg.IdentityFile
	case config.FromFile:
		ks.ConfigIdentityFile = cfg.IdentityFile
	}
	return ks.Resolve()
}

// masterSecrets are the environment variables that hold a master key.
type masterSecrets struct {
	encryptionKey, passphrase, newPassphrase string
}

// masterKeyVars are removed from the process environment once read.
var masterKeyVars = []string{"CLAUDEFLARE_ENCRYPTION_KEY", "CLAUDEFLARE_PASSPHRASE", "CLAUDEFLARE_PASSPHRASE_NEW"}

// masterSecrets reads the master key variables once and removes them
// from the process environment (os.Unsetenv), so that no child process
// inherits them and nothing later in this process finds them by name.
// The kernel's copy of the initial environment (/proc/PID/environ,
// readable by the same user and root) keeps them: use a key file or a
// systemd credential where that matters.
func (e *env) masterSecrets() *masterSecrets {
	if e.secrets == nil {
		e.secrets = &masterSecrets{
			encryptionKey: e.getenv(masterKeyVars[0]),
			passphrase:    e.getenv(masterKeyVars[1]),
			newPassphrase: e.getenv(masterKeyVars[2]),
		}
		for _, k := range masterKeyVars {
			os.Unsetenv(k)
		}
	}
	return e.secrets
}

// openVault opens (creating on first use) the data dir and the vault.
func (e *env) openVault(ctx context.Context, cfg *config.Config) (*vault.Vault, error) {
	return e.openVaultPQ(ctx, cfg, false)
}

// openVaultPQ is openVault; with pq, a vault created now gets a hybrid
// post-quantum master identity.
func (e *env) openVaultPQ(ctx context.Context, cfg *config.Config, pq bool) (*vault.Vault, error) {
	return e.openVaultWith(ctx, cfg, vault.Options{Create: true, PQ: pq, Logger: e.log}, true)
}

// openVaultWith opens the vault; with prompt, a passphrase-protected vault
// without CLAUDEFLARE_PASSPHRASE asks for it when stdin is a terminal
// (people, not daemons, are asked).
func (e *env) openVaultWith(ctx context.Context, cfg *config.Config, opts vault.Options, prompt bool) (*vault.Vault, error) {
	db, err := openVaultDB(cfg)
	if err != nil {
		return nil, err
	}
	ks := e.keySource(cfg)
	if opts.Notify == nil && prompt {
		// A command run by a person says it on stderr; the daemon (which
		// never prompts) logs it at warn level, with the recipients.
		opts.Notify = func(msg string) { fmt.Fprintf(e.stderr, "claudeflare: %s\n", msg) }
	}
	v, err := vault.Open(ctx, db, ks, opts)
	if errors.Is(err, vault.ErrNeedPassphrase) && prompt && isTerminal(e.stdin) {
		if ks.Passphrase, err = e.readPassphrase("Passphrase: "); err == nil {
			v, err = vault.Open(ctx, db, ks, opts)
		}
	}
	if err == nil && !opts.ReadOnly {
		// The first open by a holder of the master key keys a log made by
		// an earlier release (and starts the log of a new vault); a log
		// found tampered with is reported. Commands that write audit rows
		// get its key with openAudit.
		if _, aerr := e.prepareAudit(ctx, v, false); aerr != nil {
			fmt.Fprintf(e.stderr, "claudeflare: warning: audit log: %v\n", aerr)
		}
	}
	if err != nil {
		db.Close()
		if errors.Is(err, vault.ErrNeedPassphrase) {
			return nil, withHint(err, "set CLAUDEFLARE_PASSPHRASE, or run on a terminal to be asked")
		}
		if errors.Is(err, vault.ErrWeakPassphrase) {
			return nil, withHint(usageError{err.Error()}, "choose a longer passphrase, e.g. four or five random words")
		}
		if errors.Is(err, vault.ErrBreakGlass) {
			return nil, withHint(err, "to recover with it: claudeflare key rotate --data --to-identity FILE (then use the new identity)")
		}
		return nil, keyHint(err)
	}
	return v, nil
}

// openVaultDB opens (creating on first use) the vault database without
// a key: for commands that touch no secret. The data dir and its state
// files are checked first (vault.EnsureDataDir).
func openVaultDB(cfg *config.Config) (*store.DB, error) {
	if err := vault.EnsureDataDir(cfg.DataDir); err != nil {
		return nil, stateHint(err)
	}
	db, err := store.OpenVault(cfg.DataDir)
	if err != nil {
		return nil, stateHint(fmt.Errorf("open vault: %w", err))
	}
	return db, nil
}

// openLog opens (creating on first use) the request log.
func (e *env) openLog(cfg *config.Config) (*store.DB, error) {
	if err := vault.EnsureDataDir(cfg.DataDir); err != nil {
		return nil, stateHint(err)
	}
	db, err := store.OpenLog(cfg.DataDir)
	if err != nil {
		return nil, stateHint(fmt.Errorf("open request log: %w", err))
	}
	return db, nil
}

// stateHint adds the hint of a data dir or state file problem (another
// user's file, a symbolic link, a file open to others) as the hint line.
func stateHint(err error) error {
	var se *statefile.Error
	if errors.As(err, &se) && se.Hint() != "" {
		return withHint(err, se.Hint())
	}
	return err
}

func keyHint(err error) error {
	switch {
	case errors.Is(err, vault.ErrTampered):
		return withHint(err, "run `claudeflare doctor`; restore a backup you trust, then `claudeflare key rotate --data`")
	case errors.Is(err, vault.ErrWrongKey):
		return withHint(err, "give the key this vault was made with: --identity FILE, CLAUDEFLARE_ENCRYPTION_KEY or CLAUDEFLARE_PASSPHRASE")
	case errors.Is(err, vault.ErrNoKey):
		return withHint(err, "give --identity FILE, or set CLAUDEFLARE_ENCRYPTION_KEY or CLAUDEFLARE_PASSPHRASE, or restore identity.txt")
	}
	return err
}
