package commands

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/claudeflare/claudeflare/accounts"
	"github.com/claudeflare/claudeflare/audit"
	"github.com/claudeflare/claudeflare/cloud"
	"github.com/claudeflare/claudeflare/config"
	"github.com/claudeflare/claudeflare/internal/acctstate"
	"github.com/claudeflare/claudeflare/oauth"
	"github.com/claudeflare/claudeflare/requestlog"
	"github.com/claudeflare/claudeflare/store"
	"github.com/claudeflare/claudeflare/upstream"
	"github.com/claudeflare/claudeflare/vault"
)

func accountsCommand() *cli.Command {
	return &cli.Command{
		Name:  "accounts",
		Usage: "add, log in again, edit, list, check, unblock, pause, resume and remove Claude accounts",
		Subcommands: []*cli.Command{
			{
				Name:      "add",
				Usage:     "add an account: interactive OAuth login, or a refresh token or API key from stdin, or a Bedrock or Vertex account",
				ArgsUsage: "NAME",
				Description: "Without a credential flag, add prints an authorize URL; open it, log in,\n" +
					"and paste back the code#state it shows. With --refresh-token-stdin, the\n" +
					"token is refreshed once to validate it and the rotated tokens are stored.\n" +
					"With --api-key-stdin, the key is checked with one cheap request; a key\n" +
					"upstream refuses is not stored (exit 1).\n" +
					"With --setup-token-stdin, a long-lived token made by `claude setup-token`\n" +
					"is stored as the access token: never refreshed (it is not checked when\n" +
					"added), and the account needs a new login (`accounts login`) when upstream\n" +
					"refuses it. Secrets are read from stdin, never from argv." + cloudHelp,
				Flags: append([]cli.Flag{
					&cli.StringFlag{Name: "mode", Value: "max", Usage: "`MODE`: max (Claude subscription) or console (Anthropic Console; the login creates an API key)"},
					&cli.IntFlag{Name: "priority", Value: 0, Usage: "`N`: lower is preferred (0 highest)"},
					&cli.IntFlag{Name: "tier", Value: 1, Usage: "`TIER`: subscription tier 1, 5 or 20"},
					&cli.BoolFlag{Name: "refresh-token-stdin", Usage: "read an OAuth refresh token from stdin"},
					&cli.BoolFlag{Name: "api-key-stdin", Usage: "read an Anthropic API key from stdin"},
					&cli.BoolFlag{Name: "setup-token-stdin", Usage: "read a long-lived token made by `claude setup-token` from stdin: used as is, never refreshed; the account needs a new login when upstream refuses it"},
					overageFlag(store.OverageAvoid, ""),
				}, cloudFlags()...),
				Action: accountsAdd,
			},
			{
				Name:      "login",
				Usage:     "give an existing account new credentials: interactive OAuth login, or a refresh token or API key from stdin",
				ArgsUsage: "NAME",
				Description: "For an account that needs a new login (status needs_login) or whose\n" +
					"credentials should change. Takes the credential flags of `accounts add`;\n" +
					"without them it prints an authorize URL (in the account's mode). The\n" +
					"account keeps its priority, tier, pause, settings and request history; its\n" +
					"status is ok again. A running daemon uses the new credentials within a few\n" +
					"seconds, without a restart. Secrets are read from stdin, never from argv.\n" +
					"A Bedrock or Vertex account takes --bedrock or --vertex with its credentials\n" +
					"on stdin; --region, --project and --endpoint change those settings, and\n" +
					"the ones not given stay as they are.",
				Flags: append([]cli.Flag{
					&cli.BoolFlag{Name: "refresh-token-stdin", Usage: "read an OAuth refresh token from stdin"},
					&cli.BoolFlag{Name: "api-key-stdin", Usage: "read an Anthropic API key from stdin"},
					&cli.BoolFlag{Name: "setup-token-stdin", Usage: "read a long-lived token made by `claude setup-token` from stdin (never refreshed)"},
				}, cloudFlags()...),
				Action: accountsLogin,
			},
			{
				Name:      "edit",
				Usage:     "change an account's priority, tier, name or overage policy",
				ArgsUsage: "NAME",
				Description: "Values are checked as `accounts add` checks them; an edit that changes\n" +
					"nothing is a usage error, and --rename refuses a name already taken. The\n" +
					"account keeps its credentials. The request log keeps the name each request\n" +
					"was made under.",
				Flags: []cli.Flag{
					&cli.IntFlag{Name: "priority", Usage: "`N`: lower is preferred (0 highest)", DefaultText: "unchanged"},
					&cli.IntFlag{Name: "tier", Usage: "`TIER`: subscription tier 1, 5 or 20", DefaultText: "unchanged"},
					&cli.StringFlag{Name: "rename", Usage: "`NEW` name of the account", DefaultText: "unchanged"},
					overageFlag("", "unchanged"),
				},
				Action: accountsEdit,
			},
			{
				Name:  "list",
				Usage: "list accounts and their state (never a secret)",
				Flags: []cli.Flag{&cli.BoolFlag{Name: "json", Usage: "print NDJSON, one account a line"}},
				Action: func(c *cli.Context) error {
					if c.NArg() > 0 {
						return usagef("accounts list takes no arguments")
					}
					return accountsList(c)
				},
			},
			accountsCheckCommand(),
			accountsUnblockCommand(),
			{
				Name:      "remove",
				Usage:     "remove an account and its tokens",
				ArgsUsage: "NAME",
				Flags:     []cli.Flag{&cli.BoolFlag{Name: "force", Aliases: []string{"f"}, Usage: "do not ask"}},
				Action:    accountsRemove,
			},
			{
				Name:      "pause",
				Usage:     "take an account out of rotation",
				ArgsUsage: "NAME",
				Action:    func(c *cli.Context) error { return accountsSetPaused(c, true) },
			},
			{
				Name:      "resume",
				Usage:     "put a paused account back into rotation",
				ArgsUsage: "NAME",
				Action:    func(c *cli.Context) error { return accountsSetPaused(c, false) },
			},
		},
	}
}

// overageFlag is --overage of add (value the default) and edit.
func overageFlag(value, defaultText string) cli.Flag {
	return &cli.StringFlag{Name: "overage", Value: value, DefaultText: defaultText,
		Usage: "`POLICY` once the subscription limit is reached and upstream serves on paid extra usage: avoid (steer requests to other accounts first, never refuse one) or allow (use it like any other account)"}
}

// oneName returns the single NAME argument.
func oneName(c *cli.Context) (string, error) {
	if c.NArg() != 1 {
		return "", usagef("%s needs exactly one account NAME", c.Command.FullName())
	}
	name := c.Args().First()
	if err := vault.ValidateName(name); err != nil {
		return "", usageError{err.Error()}
	}
	return name, nil
}

type addArgs struct {
	name         string
	mode         oauth.Mode
	priority     int
	tier         int
	refreshStdin bool
	apiKeyStdin  bool
	setupStdin   bool
	overage      string
}

func parseAddArgs(c *cli.Context) (addArgs, error) {
	var a addArgs
	name, err := oneName(c)
	if err != nil {
		return a, err
	}
	a.name = name
	if a.mode, err = oauth.ParseMode(c.String("mode")); err != nil {
		return a, usagef("--mode: %v", err)
	}
	a.priority = c.Int("priority")
	if a.priority < 0 {
		return a, usagef("--priority must be 0 or more")
	}
	a.tier = c.Int("tier")
	if a.tier != 1 && a.tier != 5 && a.tier != 20 {
		return a, usagef("--tier must be 1, 5 or 20")
	}
	a.overage = c.String("overage")
	if err := accounts.CheckOverage(a.overage); err != nil {
		return a, usagef("--overage: %v", err)
	}
	a.refreshStdin, a.apiKeyStdin, a.setupStdin = credentialFlags(c)
	return a, checkCredentialFlags(a.refreshStdin, a.apiKeyStdin, a.setupStdin)
}

// credentialFlags are the stdin credential flags of add and login.
func credentialFlags(c *cli.Context) (refresh, apiKey, setup bool) {
	return c.Bool("refresh-token-stdin"), c.Bool("api-key-stdin"), c.Bool("setup-token-stdin")
}

// checkCredentialFlags refuses more than one credential on stdin.
func checkCredentialFlags(flags ...bool) error {
	n := 0
	for _, f := range flags {
		if f {
			n++
		}
	}
	if n > 1 {
		return usagef("--refresh-token-stdin, --api-key-stdin and --setup-token-stdin exclude each other")
	}
	return nil
}

// oauthClient talks to the token endpoint with the daemon's upstream
// transport: verified TLS and upstream.pin_sha256 on the token host too.
func oauthClient(cfg *config.Config) (*oauth.Client, error) {
	transport, err := upstream.Transport(cfg)
	if err != nil {
		return nil, withHint(usagef("%v", err), "use https:// for upstream_url and oauth_token_url, or set no upstream.pin_sha256")
	}
	version, _, _ := buildInfo()
	return &oauth.Client{
		TokenURL:  cfg.OAuthTokenURL,
		ClientID:  cfg.ClientID,
		APIBase:   cfg.UpstreamURL,
		HTTP:      &http.Client{Timeout: 60 * time.Second, Transport: transport},
		UserAgent: oauth.UserAgent(version),
	}, nil
}

// openForCredentials is what add and login share: the token client
// (before anything is opened, so a bad pin touches nothing), the vault
// and the audit key. The caller closes the vault's database.
func openForCredentials(c *cli.Context, e *env) (*oauth.Client, *vault.Vault, []byte, error) {
	cfg, err := e.config(nil)
	if err != nil {
		return nil, nil, nil, err
	}
	client, err := oauthClient(cfg)
	if err != nil {
		return nil, nil, nil, err
	}
	v, err := e.openVault(c.Context, cfg)
	if err != nil {
		return nil, nil, nil, err
	}
	auditKey, err := e.openAudit(c.Context, v)
	if err != nil {
		v.DB().Close()
		return nil, nil, nil, err
	}
	return client, v, auditKey, nil
}

func accountsAdd(c *cli.Context) error {
	a, err := parseAddArgs(c)
	if err != nil {
		return err
	}
	if kind, st, err := cloudArgs(c); err != nil || kind != "" {
		if err != nil {
			return err
		}
		return accountsAddCloud(c, a, kind, st)
	}
	e := getEnv(c)
	client, v, auditKey, err := openForCredentials(c, e)
	if err != nil {
		return err
	}
	defer v.DB().Close()
	ctx := c.Context
	// Refuse a taken name before any token is spent.
	if _, err := store.GetAccount(ctx, v.DB(), a.name); err == nil {
		return fmt.Errorf("%w: %q", store.ErrAccountExists, a.name)
	} else if !errors.Is(err, store.ErrNoAccount) {
		return err
	}
	acct := vault.NewAccount{Name: a.name, Kind: store.KindOAuth, Mode: string(a.mode), Priority: a.priority, Tier: a.tier}
	switch {
	case a.apiKeyStdin:
		key, err := readSecret(e.stdin, "API key")
		if err != nil {
			return err
		}
		acct.Kind, acct.Mode = store.KindAPIKey, ""
		if err := checkAPIKey(c, e, key); err != nil {
			return err
		}
		if _, err := v.AddAccount(ctx, acct, vault.Secrets{APIKey: key}); err != nil {
			return err
		}
	case a.setupStdin:
		tok, err := readSecret(e.stdin, "setup token")
		if err != nil {
			return err
		}
		acct.Mode = store.ModeSetupToken
		if _, err := v.AddAccount(ctx, acct, vault.Secrets{AccessToken: tok}); err != nil {
			return err
		}
	case a.refreshStdin:
		rt, err := readSecret(e.stdin, "refresh token")
		if err != nil {
			return err
		}
		if err := addFromRefreshToken(ctx, v, client, acct, rt); err != nil {
			return err
		}
	default:
		if err := addInteractive(ctx, e, v, client, acct, a.mode, client.ClientID); err != nil {
			return err
		}
	}
	if err := setOverage(ctx, v.DB(), a.name, a.overage); err != nil {
		return err
	}
	if err := accounts.Added(ctx, v.DB(), auditKey, accounts.By{Actor: audit.CLIActor()}, a.name, time.Now()); err != nil {
		return err
	}
	e.say("account %q added", a.name)
	return nil
}

// setOverage sets a new account's overage policy when it is not the
// default (the column's).
func setOverage(ctx context.Context, db *store.DB, name, overage string) error {
	if overage == store.OverageAvoid {
		return nil
	}
	a, err := store.GetAccount(ctx, db, name)
	if err != nil {
		return err
	}
	return store.UpdateAccount(context.WithoutCancel(ctx), db, a.ID, store.AccountEdit{Overage: &overage}, time.Now())
}

// addFromRefreshToken stores the account with the given refresh token
// first, then refreshes it once and swaps in the rotated tokens, so that a
// crash after the token endpoint rotated the token can never lose the
// account. A refused token removes the row again: nothing stays stored.
func addFromRefreshToken(ctx context.Context, v *vault.Vault, client *oauth.Client, acct vault.NewAccount, rt string) error {
	id, err := v.AddAccount(ctx, acct, vault.Secrets{RefreshToken: rt})
	if err != nil {
		return err
	}
	tok, err := client.Refresh(ctx, rt)
	if err != nil {
		if derr := store.DeleteAccount(context.WithoutCancel(ctx), v.DB(), acct.Name); derr != nil {
			return errors.Join(fmt.Errorf("validate refresh token: %w", err), derr)
		}
		if errors.Is(err, oauth.ErrInvalidGrant) {
			return withHint(fmt.Errorf("validate refresh token: %w", err), "the token is expired or already used; get a new one and run `claudeflare accounts add NAME` again")
		}
		return fmt.Errorf("validate refresh token: %w", err)
	}
	_, err = v.SwapTokens(context.WithoutCancel(ctx), id, 1, vault.Secrets{AccessToken: tok.AccessToken, RefreshToken: tok.RefreshToken, ExpiresAt: tok.ExpiresAt})
	if err != nil {
		return fmt.Errorf("store rotated tokens: %w", err)
	}
	return nil
}

func accountsLogin(c *cli.Context) error {
	name, err := oneName(c)
	if err != nil {
		return err
	}
	refreshStdin, apiKeyStdin, setupStdin := credentialFlags(c)
	if err := checkCredentialFlags(refreshStdin, apiKeyStdin, setupStdin); err != nil {
		return err
	}
	if kind, st, err := cloudArgsFor(c, true); err != nil || kind != "" {
		if err != nil {
			return err
		}
		return accountsLoginCloud(c, name, kind, st)
	}
	e := getEnv(c)
	client, v, auditKey, err := openForCredentials(c, e)
	if err != nil {
		return err
	}
	defer v.DB().Close()
	ctx := c.Context
	// Refuse an unknown name before any token is spent.
	a, err := store.GetAccount(ctx, v.DB(), name)
	if errors.Is(err, store.ErrNoAccount) {
		return withHint(err, "to add a new account, run `claudeflare accounts add "+name+"`")
	} else if err != nil {
		return err
	}
	if cloud.Is(a.Kind) {
		return withHint(fmt.Errorf("%w: %q is a %s account", accounts.ErrKindMismatch, name, a.Kind),
			"run `claudeflare accounts login "+name+" --"+a.Kind+" --region REGION ...` with its credentials on stdin")
	}
	by := accounts.By{Actor: audit.CLIActor()}
	var cred accounts.Credential
	switch {
	case apiKeyStdin:
		if cred.APIKey, err = readSecret(e.stdin, "API key"); err == nil && a.Kind == store.KindAPIKey {
			err = checkAPIKey(c, e, cred.APIKey)
		}
	case setupStdin:
		cred.SetupToken, err = readSecret(e.stdin, "setup token")
	case refreshStdin:
		cred.RefreshToken, err = readSecret(e.stdin, "refresh token")
	default:
		mode, err := oauth.ParseMode(a.Mode)
		if err != nil {
			mode = oauth.ModeMax
		}
		s, err := loginInteractive(ctx, e, client, mode, client.ClientID)
		if err != nil {
			return err
		}
		if err := accounts.Login(context.WithoutCancel(ctx), v, auditKey, by, name, s, time.Now()); err != nil {
			return err
		}
	}
	if err != nil {
		return err
	}
	if cred != (accounts.Credential{}) {
		err := accounts.LoginWith(ctx, v, client, auditKey, by, name, cred, time.Now())
		if errors.Is(err, oauth.ErrInvalidGrant) {
			return withHint(err, "the token is expired or already used; get a new one and run `claudeflare accounts login "+name+"` again")
		}
		if err != nil {
			return err
		}
	}
	e.say("account %q logged in", name)
	return nil
}

// loginInteractive runs the OAuth login (PKCE) and returns the credentials
// it gives: tokens, or for a console login an API key made with them.
func loginInteractive(ctx context.Context, e *env, client *oauth.Client, mode oauth.Mode, clientID string) (vault.Secrets, error) {
	p, err := oauth.NewPKCE()
	if err != nil {
		return vault.Secrets{}, err
	}
	fmt.Fprintf(e.stderr, "Open this URL in a browser, log in, and paste the code shown (code#state):\n\n%s\n\ncode: ", oauth.AuthorizeURL(mode, clientID, p))
	line, err := readLine(e.stdin)
	if err != nil {
		return vault.Secrets{}, err
	}
	code, err := oauth.ParseCallback(line, p.State)
	if err != nil {
		return vault.Secrets{}, err
	}
	tok, err := client.Exchange(ctx, code, p)
	if err != nil {
		return vault.Secrets{}, fmt.Errorf("exchange code: %w", err)
	}
	if mode == oauth.ModeConsole {
		key, err := client.CreateAPIKey(ctx, tok.AccessToken)
		if err != nil {
			return vault.Secrets{}, fmt.Errorf("create API key: %w", err)
		}
		return vault.Secrets{APIKey: key}, nil
	}
	return vault.Secrets{AccessToken: tok.AccessToken, RefreshToken: tok.RefreshToken, ExpiresAt: tok.ExpiresAt}, nil
}

func addInteractive(ctx context.Context, e *env, v *vault.Vault, client *oauth.Client, acct vault.NewAccount, mode oauth.Mode, clientID string) error {
	p, err := oauth.NewPKCE()
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stderr, "Open this URL in a browser, log in, and paste the code shown (code#state):\n\n%s\n\ncode: ", oauth.AuthorizeURL(mode, clientID, p))
	line, err := readLine(e.stdin)
	if err != nil {
		return err
	}
	code, err := oauth.ParseCallback(line, p.State)
	if err != nil {
		return err
	}
	tok, err := client.Exchange(ctx, code, p)
	if err != nil {
		return fmt.Errorf("exchange code: %w", err)
	}
	if mode == oauth.ModeConsole {
		key, err := client.CreateAPIKey(ctx, tok.AccessToken)
		if err != nil {
			return fmt.Errorf("create API key: %w", err)
		}
		acct.Kind, acct.Mode = store.KindAPIKey, string(oauth.ModeConsole)
		_, err = v.AddAccount(ctx, acct, vault.Secrets{APIKey: key})
		return err
	}
	_, err = v.AddAccount(ctx, acct, vault.Secrets{AccessToken: tok.AccessToken, RefreshToken: tok.RefreshToken, ExpiresAt: tok.ExpiresAt})
	return err
}

const maxSecretBytes = accounts.MaxSecretBytes

// readSecret reads one secret from stdin, checked as accounts.CheckSecret
// checks it: trimmed, non-empty, one line of printable characters.
func readSecret(r io.Reader, what string) (string, error) {
	b, err := io.ReadAll(io.LimitReader(r, maxSecretBytes+1))
	if err != nil {
		return "", fmt.Errorf("read %s from stdin: %w", what, err)
	}
	if len(b) > maxSecretBytes {
		return "", fmt.Errorf("read %s from stdin: more than %d bytes", what, maxSecretBytes)
	}
	if strings.TrimSpace(string(b)) == "" {
		return "", usagef("no %s on stdin", what)
	}
	v, err := accounts.CheckSecret(string(b), what)
	if err != nil {
		return "", usagef("the %s on stdin must be one line without spaces", what)
	}
	return v, nil
}

func readLine(r io.Reader) (string, error) {
	br := bufio.NewReader(io.LimitReader(r, maxSecretBytes))
	line, err := br.ReadString('\n')
	if err != nil && line == "" {
		if errors.Is(err, io.EOF) {
			return "", usagef("no code pasted")
		}
		return "", err
	}
	return strings.TrimSpace(line), nil
}

// openMetadata opens the vault and the request log without a key: for
// commands that read metadata only, never a secret.
func (e *env) openMetadata(cfg *config.Config) (vdb, ldb *store.DB, err error) {
	if vdb, err = openVaultDB(cfg); err != nil {
		return nil, nil, err
	}
	if ldb, err = e.openLog(cfg); err != nil {
		vdb.Close()
		return nil, nil, err
	}
	return vdb, ldb, nil
}

func accountsList(c *cli.Context) error {
	e := getEnv(c)
	cfg, err := e.config(nil)
	if err != nil {
		return err
	}
	vdb, logDB, err := e.openMetadata(cfg)
	if err != nil {
		return err
	}
	defer vdb.Close()
	defer logDB.Close()
	now := time.Now()
	lines, err := requestlog.AccountLines(c.Context, vdb, logDB, now)
	if err != nil {
		return err
	}
	if c.Bool("json") {
		return writeNDJSON(e.stdout, lines)
	}
	tw := tabwriter.NewWriter(e.stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tKIND\tPRIORITY\tTIER\tSTATUS\tUNTIL\t5H\t7D\tOVERAGE\tTOKEN EXPIRES\tREQUESTS\tLAST USED")
	for _, a := range lines {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\n", printable(a.Name), printable(a.Kind), a.Priority, a.Tier,
			printable(stateWord(a.Status, a.Window, a.Family)), tableTime(a.UntilMS), pct(a.Utilization5h), pct(a.Utilization7d),
			printable(a.Overage), tableTime(a.TokenExpiresAtMS), a.Requests, tableTime(a.LastUsedMS))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, a := range lines {
		if a.Status == acctstate.NeedsLogin {
			fmt.Fprintf(e.stderr, "hint: %s needs a new login: %s\n", printable(a.Name), accounts.NeedsLoginHint(a.Name))
		}
	}
	return nil
}

// stateWord is a state word with its window or model family for a
// table: "limited (7d)", "limited_model (opus)".
func stateWord(word, window, family string) string {
	switch {
	case window != "":
		return word + " (" + window + ")"
	case family != "":
		return word + " (" + family + ")"
	}
	return word
}

// pct is a utilization as a percentage, "-" when unknown.
func pct(u *float64) string {
	if u == nil {
		return "-"
	}
	return strconv.Itoa(int(*u*100+0.5)) + "%"
}

// namedAccount is the NAME argument, the env, the vault database and the
// audit key for remove, pause and resume. They touch no secret, but the
// audit rows they write need the master key.
func namedAccount(c *cli.Context) (e *env, name string, vdb *store.DB, auditKey []byte, err error) {
	if name, err = oneName(c); err != nil {
		return nil, "", nil, nil, err
	}
	e = getEnv(c)
	if vdb, auditKey, err = e.openAuditedKeysDB(c.Context); err != nil {
		return nil, "", nil, nil, err
	}
	return e, name, vdb, auditKey, nil
}

func accountsRemove(c *cli.Context) error {
	e, name, vdb, auditKey, err := namedAccount(c)
	if err != nil {
		return err
	}
	defer vdb.Close()
	if _, err := store.GetAccount(c.Context, vdb, name); err != nil {
		return err
	}
	if !c.Bool("force") && isTerminal(e.stdin) {
		fmt.Fprintf(e.stderr, "Remove account %q and its tokens? [y/N] ", name)
		line, _ := readLine(e.stdin)
		if !strings.EqualFold(line, "y") && !strings.EqualFold(line, "yes") {
			return errors.New("not removed")
		}
	}
	if err := accounts.Remove(c.Context, vdb, auditKey, accounts.By{Actor: audit.CLIActor()}, name, time.Now()); err != nil {
		return err
	}
	e.say("account %q removed", name)
	return nil
}

func accountsEdit(c *cli.Context) error {
	var ed accounts.Edit
	if c.IsSet("priority") {
		n := c.Int("priority")
		ed.Priority = &n
	}
	if c.IsSet("tier") {
		n := c.Int("tier")
		ed.Tier = &n
	}
	if c.IsSet("rename") {
		n := c.String("rename")
		ed.Rename = &n
	}
	if c.IsSet("overage") {
		n := c.String("overage")
		ed.Overage = &n
		if err := accounts.CheckOverage(n); err != nil {
			return usagef("--overage: %v", err)
		}
	}
	if ed.Priority == nil && ed.Tier == nil && ed.Rename == nil && ed.Overage == nil {
		return usagef("accounts edit needs at least one of --priority, --tier, --rename, --overage")
	}
	if ed.Priority != nil && *ed.Priority < 0 {
		return usagef("--priority must be 0 or more")
	}
	if ed.Tier != nil && *ed.Tier != 1 && *ed.Tier != 5 && *ed.Tier != 20 {
		return usagef("--tier must be 1, 5 or 20")
	}
	if ed.Rename != nil {
		if err := vault.ValidateName(*ed.Rename); err != nil {
			return usageError{"--rename: " + err.Error()}
		}
	}
	e, name, vdb, auditKey, err := namedAccount(c)
	if err != nil {
		return err
	}
	defer vdb.Close()
	if err := accounts.EditAccount(c.Context, vdb, auditKey, accounts.By{Actor: audit.CLIActor()}, name, ed, time.Now()); err != nil {
		return err
	}
	e.say("account %q edited", name)
	return nil
}

func accountsSetPaused(c *cli.Context, paused bool) error {
	e, name, vdb, auditKey, err := namedAccount(c)
	if err != nil {
		return err
	}
	defer vdb.Close()
	if err := accounts.SetPaused(c.Context, vdb, auditKey, accounts.By{Actor: audit.CLIActor()}, name, paused, time.Now()); err != nil {
		return err
	}
	verb := map[bool]string{true: "paused", false: "resumed"}[paused]
	e.say("account %q %s", name, verb)
	return nil
}
