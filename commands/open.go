package commands

import (
	"context"
	"errors"
	"fmt"

	"github.com/claudeflare/claudeflare/config"
	"github.com/claudeflare/claudeflare/internal/statefile"
	"github.com/claudeflare/claudeflare/store"
	"github.com/claudeflare/claudeflare/vault"
)

// keySource says where the master key comes from, from env and config.
func (e *env) keySource(cfg *config.Config) vault.KeySource {
	return vault.KeySource{
		EncryptionKey:  e.getenv("CLAUDEFLARE_ENCRYPTION_KEY"),
		IdentityFile:   cfg.IdentityFile,
		Passphrase:     e.getenv("CLAUDEFLARE_PASSPHRASE"),
		CredentialsDir: e.getenv("CREDENTIALS_DIRECTORY"),
		DataDir:        cfg.DataDir,
	}
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
	v, err := vault.Open(ctx, db, ks, opts)
	if errors.Is(err, vault.ErrNeedPassphrase) && prompt && isTerminal(e.stdin) {
		if ks.Passphrase, err = e.readPassphrase("Passphrase: "); err == nil {
			v, err = vault.Open(ctx, db, ks, opts)
		}
	}
	if err != nil {
		db.Close()
		if errors.Is(err, vault.ErrNeedPassphrase) {
			return nil, withHint(err, "set CLAUDEFLARE_PASSPHRASE, or run on a terminal to be asked")
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
	if errors.As(err, &se) && se.Hint != "" {
		return withHint(err, se.Hint)
	}
	return err
}

func keyHint(err error) error {
	switch {
	case errors.Is(err, vault.ErrWrongKey):
		return withHint(err, "give the key this vault was made with: CLAUDEFLARE_ENCRYPTION_KEY, --identity FILE or CLAUDEFLARE_PASSPHRASE")
	case errors.Is(err, vault.ErrNoKey):
		return withHint(err, "set CLAUDEFLARE_ENCRYPTION_KEY, --identity FILE or CLAUDEFLARE_PASSPHRASE, or restore identity.txt")
	}
	return err
}
