package commands

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/urfave/cli/v2"
	"golang.org/x/term"

	"github.com/claudeflare/claudeflare/audit"
	"github.com/claudeflare/claudeflare/config"
	"github.com/claudeflare/claudeflare/store"
	"github.com/claudeflare/claudeflare/vault"
)

const keyRotateDescription = `Replaces the master key: a new age identity (or passphrase) is made, every data
key is re-wrapped to it, and the old master key no longer opens the vault. The
new recipient is printed on stdout. Account secrets and payloads are not
touched, so a running daemon keeps working without a restart.

By default the new identity replaces the identity file in use (identity.txt, or
--identity FILE): it is written to FILE.next, then renamed over FILE.
--to-identity FILE puts it in a new FILE instead (created 0600; it must not
exist); open the vault with --identity FILE or CLAUDEFLARE_IDENTITY_FILE
afterwards. --to-passphrase protects the vault with a passphrase (age scrypt)
from CLAUDEFLARE_PASSPHRASE_NEW or asked twice on the terminal; the rotation of a
passphrase vault asks for its new passphrase the same way. --pq makes a hybrid
post-quantum identity (default: the same kind as now). --add-recipient age1...
(repeatable) also wraps the data keys to a public key, e.g. an offline
break-glass key; give it again on the next rotation to keep it. age refuses to
mix post-quantum and classic recipients, and a passphrase with any other.

Backups are encrypted to the master key of their day: once it is replaced,
backups made before can only be restored with the previous key. --keep-old FILE
writes the previous identity to FILE (created 0600; it must not exist) before
anything changes; without it, key rotate warns that older backups need the old
key. A new passphrase needs at least 12 characters of two kinds (letters,
digits, spaces or punctuation).

A key in CLAUDEFLARE_ENCRYPTION_KEY or a systemd credential cannot be replaced
in place, and a new key is never printed: give --to-identity FILE or
--to-passphrase, then update the environment or LoadCredential=.

With --data, a new data key is made as well and every account secret is
re-encrypted with it; --data-only keeps the master key. A daemon picks up the
new data key within seconds. Payloads encrypted under an older data key stay
readable until retention deletes them; a data key nothing refers to any more
is destroyed by a later key rotate, an hour at the earliest after it retired.

Every step is ordered so that a crash leaves a vault that opens with the key
files left on disk; the next key rotate finishes or undoes the interrupted one.
A daemon reading an identity file that was rotated in place needs nothing. One
whose master key came from the environment, a credential or a passphrase keeps
working, but must be restarted with the new key before the next data-key
rotation.`

func keyCommand() *cli.Command {
	return &cli.Command{
		Name:  "key",
		Usage: "rotate the master and data keys, show the master recipient",
		Subcommands: []*cli.Command{
			{
				Name:        "rotate",
				Usage:       "replace the master key (and with --data the data key); print the new recipient",
				Description: keyRotateDescription,
				Flags: []cli.Flag{
					&cli.BoolFlag{Name: "yes", Usage: "do not ask for confirmation on a terminal"},
					&cli.BoolFlag{Name: "data", Usage: "also make a new data key and re-encrypt every secret with it"},
					&cli.BoolFlag{Name: "data-only", Usage: "make a new data key and re-encrypt every secret; keep the master key"},
					&cli.BoolFlag{Name: "to-passphrase", Usage: "protect the vault with a passphrase ($CLAUDEFLARE_PASSPHRASE_NEW, or asked twice)"},
					&cli.StringFlag{Name: "to-identity", Usage: "write the new master identity to `FILE` (created 0600; must not exist)"},
					&cli.StringSliceFlag{Name: "add-recipient", Usage: "also wrap the data keys to age `RECIPIENT` (age1...); repeatable"},
					&cli.BoolFlag{Name: "pq", Usage: "make the new identity hybrid post-quantum (default: same kind as the current one)"},
					&cli.StringFlag{Name: "keep-old", Usage: "also write the previous master identity to `FILE` (created 0600; must not exist): backups made before the rotation need it"},
				},
				Action: keyRotate,
			},
			{
				Name:   "recipient",
				Usage:  "print the current master recipient(s), one per line",
				Action: keyRecipient,
			},
		},
	}
}

// rotateArgs are the parsed flags of `key rotate`.
type rotateArgs struct {
	yes, data, dataOnly, toPassphrase bool
	toIdentity, keepOld               string
	addRecipients                     []string
	pq                                *bool
}

func parseRotateArgs(c *cli.Context) (rotateArgs, error) {
	a := rotateArgs{
		yes: c.Bool("yes"), data: c.Bool("data"), dataOnly: c.Bool("data-only"),
		toPassphrase: c.Bool("to-passphrase"), toIdentity: c.String("to-identity"),
		addRecipients: c.StringSlice("add-recipient"), keepOld: c.String("keep-old"),
	}
	if c.IsSet("pq") {
		pq := c.Bool("pq")
		a.pq = &pq
	}
	switch {
	case c.NArg() > 0:
		return a, usagef("key rotate takes no arguments")
	case c.IsSet("to-identity") && a.toIdentity == "":
		return a, usagef("--to-identity needs a file name")
	case c.IsSet("keep-old") && a.keepOld == "":
		return a, usagef("--keep-old needs a file name")
	case a.dataOnly && a.keepOld != "":
		return a, usagef("--keep-old keeps the master key being replaced: --data-only replaces none")
	case a.toPassphrase && a.toIdentity != "":
		return a, usagef("--to-passphrase and --to-identity cannot be combined: choose one new master key")
	case a.dataOnly && (a.toPassphrase || a.toIdentity != "" || len(a.addRecipients) > 0 || a.pq != nil):
		return a, usagef("--data-only keeps the master key: it cannot be combined with --to-passphrase, --to-identity, --add-recipient or --pq")
	}
	for _, r := range a.addRecipients {
		if strings.HasPrefix(strings.ToUpper(strings.TrimSpace(r)), "AGE-SECRET-KEY-") {
			// A secret key on the command line is already in the shell
			// history; at least never store or echo it.
			return a, withHint(usagef("--add-recipient takes a public key (age1...), not a secret key"),
				"the secret key you gave is now in your shell history: treat it as exposed")
		}
	}
	return a, nil
}

func keyRotate(c *cli.Context) error {
	a, err := parseRotateArgs(c)
	if err != nil {
		return err
	}
	e := getEnv(c)
	cfg, err := e.config(nil)
	if err != nil {
		return err
	}
	v, err := e.openKeyVault(c.Context, cfg)
	if err != nil {
		return err
	}
	defer v.DB().Close()
	// Before the rotation, which carries the audit key over: a log made
	// by an earlier release is keyed first. (A vault whose rotation was
	// interrupted may not give its audit key until the rotation is done:
	// then it is fetched after it.)
	auditKey, auditErr := e.openAudit(c.Context, v)
	info, err := vault.ReadMaster(c.Context, v.DB())
	if err != nil {
		return err
	}
	opts := vault.RotateOptions{
		Master:        !a.dataOnly,
		Data:          a.data || a.dataOnly,
		IdentityFile:  a.toIdentity,
		AddRecipients: a.addRecipients,
		PQ:            v.PostQuantum(),
		KeepOld:       a.keepOld,
	}
	if a.pq != nil {
		opts.PQ = *a.pq
	}
	if opts.Master && a.toIdentity == "" && !a.toPassphrase && info.Kind != vault.MasterPassphrase {
		if err := rotateInPlaceAllowed(e.keySource(cfg)); err != nil {
			return err
		}
	}
	if err := confirmRotate(e, a, cfg.DataDir); err != nil {
		return err
	}
	if opts.Master && (a.toPassphrase || info.Kind == vault.MasterPassphrase && a.toIdentity == "") {
		if opts.Passphrase, err = e.newPassphrase(); err != nil {
			return err
		}
	}
	logDB, err := e.openLog(cfg)
	if err != nil {
		return err
	}
	defer logDB.Close()
	opts.LogDB = logDB

	res, err := v.Rotate(c.Context, opts)
	if err != nil {
		return rotateError(err)
	}
	for _, r := range res.Recipients {
		fmt.Fprintln(e.stdout, r)
	}
	reportRotation(e, opts, res)
	if auditErr != nil {
		if auditKey, err = e.openAudit(c.Context, v); err != nil {
			return err
		}
	}
	return audit.Write(context.WithoutCancel(c.Context), v.DB(), auditKey, audit.CLIActor(), audit.ActionKeyRotated, rotateDetail(opts, res))
}

// confirmRotate asks on a terminal, unless --yes, whether to replace the
// keys a asks for.
func confirmRotate(e *env, a rotateArgs, dataDir string) error {
	if a.yes || !isTerminal(e.stdin) {
		return nil
	}
	what := "the master key"
	switch {
	case a.dataOnly:
		what = "the data key"
	case a.data:
		what = "the master key and the data key"
	}
	fmt.Fprintf(e.stderr, "Replace %s of the vault in %s? Running daemons keep working. [y/N] ", what, dataDir)
	line, _ := readLine(e.stdin)
	if !strings.EqualFold(line, "y") && !strings.EqualFold(line, "yes") {
		return errors.New("not rotated")
	}
	return nil
}

// reportRotation tells the user on stderr what a rotation did and what to
// do next (the new recipients are on stdout).
func reportRotation(e *env, opts vault.RotateOptions, res vault.RotateResult) {
	note := func(format string, args ...any) { fmt.Fprintf(e.stderr, "claudeflare: "+format+"\n", args...) }
	if res.Resumed {
		note("finished an interrupted key rotation first")
	}
	switch {
	case res.OldKeptIn != "":
		note("the previous master identity was written to %s: backups made before this rotation need it (restore --identity %s); keep it as safe as the new one", res.OldKeptIn, res.OldKeptIn)
	case opts.Master:
		note("warning: backups made before this rotation are encrypted to the previous master key and cannot be restored without it; keep a copy of that key if you still have one (next time: key rotate --keep-old FILE)")
	}
	if len(res.Recipients) == 0 {
		note("the vault is protected by a passphrase; it has no public recipient")
	}
	if opts.IdentityFile != "" {
		note("new master identity written to %s; from now on use --identity %s or CLAUDEFLARE_IDENTITY_FILE", res.IdentityFile, res.IdentityFile)
	}
	if res.OldFromEnv {
		note("CLAUDEFLARE_ENCRYPTION_KEY no longer opens the vault: remove it from the environment (and restart a daemon that uses it)")
	}
	if res.OldIdentityFile != "" {
		note("%s no longer opens the vault; delete it", res.OldIdentityFile)
	}
	if opts.Data {
		note("new data key %d; %d account secrets re-encrypted", res.DataKeyID, res.Resealed)
	}
	if len(res.DeletedKeys) > 0 {
		note("destroyed %d data keys nothing used any more", len(res.DeletedKeys))
	}
	if res.StillRetired > 0 {
		note("warning: %d account secrets are still encrypted with an older data key: a running daemon cannot open the new one; restart it with the current master key, then run key rotate --data-only", res.StillRetired)
	}
}

// rotateDetail describes a rotation for the audit log: kinds and counts,
// never a key.
func rotateDetail(opts vault.RotateOptions, res vault.RotateResult) string {
	var parts []string
	if opts.Master {
		parts = append(parts, fmt.Sprintf("master key replaced (%s, %d recipients)", res.Kind, len(res.Recipients)))
	}
	if opts.Data {
		parts = append(parts, fmt.Sprintf("data key %d made, %d secrets re-encrypted", res.DataKeyID, res.Resealed))
	}
	if len(res.DeletedKeys) > 0 {
		parts = append(parts, fmt.Sprintf("%d retired data keys destroyed", len(res.DeletedKeys)))
	}
	return strings.Join(parts, "; ")
}

// rotateInPlaceAllowed refuses, before anything is asked or written, to
// replace a master key that lives where claudeflare cannot write it.
func rotateInPlaceAllowed(ks vault.KeySource) error {
	hint := "give --to-identity FILE (a new identity file, never printed) or --to-passphrase; " +
		"--data-only replaces just the data key"
	switch {
	case ks.EncryptionKey != "":
		return withHint(usagef("the master key comes from CLAUDEFLARE_ENCRYPTION_KEY, which claudeflare cannot replace"), hint)
	case ks.IdentityFile == "" && ks.Passphrase == "" && ks.CredentialsDir != "" &&
		keyFileExists(filepath.Join(ks.CredentialsDir, vault.CredentialName)):
		return withHint(usagef("the master key comes from the systemd credential %s, which claudeflare cannot replace", vault.CredentialName), hint)
	}
	return nil
}

func keyFileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

func rotateError(err error) error {
	switch {
	case errors.Is(err, vault.ErrNoRotateTarget):
		return withHint(usageError{err.Error()}, "give --to-identity FILE or --to-passphrase")
	case errors.Is(err, vault.ErrMixedRecipients):
		return withHint(usageError{err.Error()}, "with --pq give age1pq1... recipients only; without it, age1... classic ones")
	case errors.Is(err, vault.ErrKeepOldPassphrase):
		return withHint(usageError{err.Error()}, "drop --keep-old; keep the old passphrase instead")
	case errors.Is(err, vault.ErrWeakPassphrase):
		return withHint(usageError{err.Error()}, "choose a longer passphrase, e.g. four or five random words")
	case errors.Is(err, vault.ErrRotationRunning):
		return withHint(err, "wait for the other key rotate to finish")
	}
	return fmt.Errorf("rotate keys: %w", err)
}

func keyRecipient(c *cli.Context) error {
	if c.NArg() > 0 {
		return usagef("key recipient takes no arguments")
	}
	e := getEnv(c)
	cfg, err := e.config(nil)
	if err != nil {
		return err
	}
	db, err := openExistingVaultDB(cfg)
	if err != nil {
		return err
	}
	defer db.Close()
	info, err := vault.ReadMaster(c.Context, db)
	if err != nil {
		return err
	}
	if info.Pending {
		fmt.Fprintln(e.stderr, "claudeflare: a key rotation was interrupted; run claudeflare key rotate to finish it")
	}
	if len(info.Recipients) == 0 {
		fmt.Fprintf(e.stderr, "claudeflare: the vault is protected by a %s; it has no public recipient\n", info.Kind)
		return nil
	}
	// With the master key at hand, print only recipients the vault's MAC
	// vouches for: someone who can write vault.db could have added one.
	recipients, checked := info.Recipients, false
	v, err := vault.Open(c.Context, db, e.keySource(cfg), vault.Options{ReadOnly: true})
	switch {
	case err == nil:
		if _, recipients, err = v.Recipients(c.Context); err != nil {
			return err
		}
		checked = true
	case errors.Is(err, vault.ErrTampered):
		return keyHint(err)
	}
	for _, r := range recipients {
		fmt.Fprintln(e.stdout, r)
	}
	if !checked && !info.Pending {
		fmt.Fprintln(e.stderr, "claudeflare: note: not checked against the vault's MAC (the master key is not at hand)")
	}
	return nil
}

// vaultExists is vault.ErrNotInitialised when the data dir has no vault.
func vaultExists(cfg *config.Config) error {
	if _, err := os.Stat(filepath.Join(cfg.DataDir, store.VaultFile)); errors.Is(err, os.ErrNotExist) {
		return vault.ErrNotInitialised
	}
	return nil
}

// openExistingVaultDB opens the vault database without creating one.
func openExistingVaultDB(cfg *config.Config) (*store.DB, error) {
	if err := vaultExists(cfg); err != nil {
		return nil, err
	}
	db, err := store.OpenVault(cfg.DataDir)
	if err != nil {
		return nil, fmt.Errorf("open vault: %w", err)
	}
	return db, nil
}

// openKeyVault opens an existing vault; for a passphrase-protected one
// without CLAUDEFLARE_PASSPHRASE it asks on the terminal.
func (e *env) openKeyVault(ctx context.Context, cfg *config.Config) (*vault.Vault, error) {
	if err := vaultExists(cfg); err != nil {
		return nil, err
	}
	// A break-glass key may open the vault here, and only here: replacing
	// the master key is what it is for.
	return e.openVaultWith(ctx, cfg, vault.Options{Logger: e.log, Recovery: true}, true)
}

// readPassphrase asks on stderr and reads a line from the terminal on
// stdin without echoing it.
func (e *env) readPassphrase(prompt string) (string, error) {
	f, ok := e.stdin.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return "", usagef("cannot ask for a passphrase: stdin is not a terminal")
	}
	fd := int(f.Fd())
	restore, err := echoOff(fd)
	if err != nil {
		return "", fmt.Errorf("read passphrase: %w", err)
	}
	defer restore()
	fmt.Fprint(e.stderr, prompt)
	b, err := term.ReadPassword(fd)
	fmt.Fprintln(e.stderr)
	if err != nil {
		return "", fmt.Errorf("read passphrase: %w", err)
	}
	return string(b), nil
}

// newPassphrase is the new master passphrase: CLAUDEFLARE_PASSPHRASE_NEW,
// else asked twice on the terminal. Never from argv.
func (e *env) newPassphrase() (string, error) {
	if p := e.masterSecrets().newPassphrase; p != "" {
		if err := vault.CheckNewPassphrase(p); err != nil {
			return "", withHint(usagef("CLAUDEFLARE_PASSPHRASE_NEW: %v", err), "choose a longer passphrase, e.g. four or five random words")
		}
		return p, nil
	}
	if !isTerminal(e.stdin) {
		return "", withHint(usagef("a new passphrase is needed"), "set CLAUDEFLARE_PASSPHRASE_NEW, or run on a terminal to be asked")
	}
	p1, err := e.readPassphrase("New passphrase: ")
	if err != nil {
		return "", err
	}
	if p1 == "" {
		return "", usagef("the passphrase is empty")
	}
	if err := vault.CheckNewPassphrase(p1); err != nil {
		return "", withHint(usageError{err.Error()}, "choose a longer passphrase, e.g. four or five random words")
	}
	p2, err := e.readPassphrase("Repeat the new passphrase: ")
	if err != nil {
		return "", err
	}
	if p1 != p2 {
		return "", usagef("the passphrases do not match")
	}
	return p1, nil
}
