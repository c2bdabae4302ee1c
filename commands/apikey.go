package commands

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/claudeflare/claudeflare/access"
	"github.com/claudeflare/claudeflare/audit"
	"github.com/claudeflare/claudeflare/config"
	"github.com/claudeflare/claudeflare/requestlog"
	"github.com/claudeflare/claudeflare/store"
	"github.com/claudeflare/claudeflare/vault"
)

func apikeyCommand() *cli.Command {
	return &cli.Command{
		Name:  "apikey",
		Usage: "create, update, list and revoke client API keys for the proxy",
		Description: "Once any client key exists, every request but /health and GET / needs one, as\n" +
			"x-api-key: KEY, Authorization: Bearer KEY or x-claudeflare-key: KEY (which alone\n" +
			"counts when present, and is never forwarded). Roles: api (/v1/*), viewer\n" +
			"(the read-only /api/ endpoints, the request log, /metrics), admin (all).\n" +
			"Only a hash of each key is stored; a running daemon sees changes within seconds.\n" +
			"Each key's row carries a MAC made with a key only the master key holder has: a\n" +
			"row added or changed in vault.db by anything but claudeflare (an admin key\n" +
			"inserted, a role raised, a revocation undone) authenticates nobody; the daemon\n" +
			"logs and audits it, apikey list shows it as tampered, doctor fails. Creating,\n" +
			"revoking and listing keys need the master key. Not covered: a row put back as\n" +
			"it was earlier (from an old copy of vault.db), and rows deleted.\n\n" +
			"Budgets: --budget AMOUNTUNIT/PERIOD, one word: 50usd/month, 5usd/week,\n" +
			"2000000tokens/day, 2Mtokens/day (k and M multiply). Periods are calendar periods\n" +
			"in UTC (a week starts on Monday). A key has at most one budget in usd and one in\n" +
			"tokens (repeat --budget). Tokens are all billed tokens: input, output, cache reads\n" +
			"and cache writes; usd is each request's cost_usd (a request of a model without a\n" +
			"price adds nothing). Once a key has used its budget, its API requests (/v1/*) get\n" +
			"a 429 (rate_limit_error, x-should-retry: false, retry-after until the period ends)\n" +
			"naming the budget, the use and the reset; a request already in flight finishes,\n" +
			"so a budget may be overshot by what was in flight. The row's MAC covers the\n" +
			"budgets: a budget edited in vault.db makes the key fail authentication.\n\n" +
			"Relay keys (--relay): for a team gateway where each developer keeps their own\n" +
			"Claude login or API key. The client sends the relay key in x-claudeflare-key\n" +
			"and its own credential in Authorization: Bearer or x-api-key; the request is\n" +
			"forwarded with that credential, never with a pool account's, and refused (401)\n" +
			"without one. It is logged under the key with account \"relay\"; budgets, limits\n" +
			"and capture apply as for pooled keys; the client's credential is never stored.\n" +
			"x-claudeflare-key works for every key and is never forwarded upstream.\n\n" +
			"Model allowlist (--models a,b): the models the key may ask for (names or\n" +
			"aliases; see [models] in claudeflare.toml(5)); --no-models allows any model.\n" +
			"The row's MAC covers the relay mark and the allowlist too.",
		Subcommands: []*cli.Command{
			{
				Name:      "create",
				Usage:     "create a key and print it, once, alone on stdout",
				ArgsUsage: "NAME",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "role", Value: string(access.RoleAPI), Usage: "`ROLE`: api, viewer or admin"},
					budgetFlag,
					relayFlag,
					modelsFlag,
				},
				Action: apikeyCreate,
			},
			{
				Name:      "update",
				Usage:     "change a live key's budgets, relay mark or model allowlist; a running daemon applies them within seconds",
				ArgsUsage: "NAME",
				Flags: []cli.Flag{
					budgetFlag,
					&cli.BoolFlag{Name: "no-budget", Usage: "remove every budget of the key"},
					relayFlag,
					&cli.BoolFlag{Name: "no-relay", Usage: "make the key a pooled key again (served by the pool's accounts)"},
					modelsFlag,
					&cli.BoolFlag{Name: "no-models", Usage: "remove the key's model allowlist (any model)"},
				},
				Action: apikeyUpdate,
			},
			{
				Name:  "list",
				Usage: "list client keys (never the keys themselves), each checked against its MAC with the master key; a row added or changed outside claudeflare is listed as tampered (the daemon refuses it, doctor fails)",
				Flags: []cli.Flag{&cli.BoolFlag{Name: "json", Usage: "print NDJSON, one key a line"}},
				Action: func(c *cli.Context) error {
					if c.NArg() > 0 {
						return usagef("apikey list takes no arguments")
					}
					return apikeyList(c)
				},
			},
			{
				Name:      "revoke",
				Usage:     "revoke a key; a running daemon refuses it within seconds",
				ArgsUsage: "NAME",
				Action:    apikeyRevoke,
			},
		},
	}
}

// budgetFlag is --budget of create and update.
var budgetFlag = &cli.StringSliceFlag{Name: "budget", Usage: "a budget `SPEC` such as 50usd/month, 5usd/week or 2000000tokens/day (UTC calendar periods, a week from Monday); repeat for one in usd and one in tokens"}

// relayFlag is --relay of create and update.
var relayFlag = &cli.BoolFlag{Name: "relay", Usage: "a relay key: sent in x-claudeflare-key, its requests go upstream with the client's own Authorization or x-api-key, never a pool account's"}

// modelsFlag is --models of create and update.
var modelsFlag = &cli.StringSliceFlag{Name: "models", Usage: "the key's model allowlist, `MODEL,...` (names or aliases; a trailing * matches a prefix)"}

// modelsArg parses --models: nil when not given; a bad list is a usage
// error.
func modelsArg(c *cli.Context) ([]string, error) {
	if !c.IsSet("models") {
		return nil, nil
	}
	ms, err := access.ParseModels(c.StringSlice("models"))
	if err != nil {
		return nil, usagef("--models: %v", err)
	}
	return ms, nil
}

// budgetsFlag parses --budget; a bad spec is a usage error.
func budgetsFlag(c *cli.Context) ([]access.Budget, error) {
	bs, err := access.ParseBudgets(c.StringSlice("budget"))
	if err != nil {
		return nil, usagef("--budget: %v", err)
	}
	return bs, nil
}

// keyName returns the single NAME argument of an apikey command.
func keyName(c *cli.Context) (string, error) {
	if c.NArg() != 1 {
		return "", usagef("%s needs exactly one key NAME", c.Command.FullName())
	}
	name := c.Args().First()
	if err := access.ValidateKeyName(name); err != nil {
		return "", usageError{err.Error()}
	}
	return name, nil
}

// openKeysDB opens vault.db to read the audit log: no master key is
// needed, since it is not encrypted (writing audit rows needs it:
// openAuditedKeysDB; so does checking the client keys' MACs).
func (e *env) openKeysDB() (*store.DB, error) {
	cfg, err := e.config(nil)
	if err != nil {
		return nil, err
	}
	if err := vault.EnsureDataDir(cfg.DataDir); err != nil {
		return nil, err
	}
	db, err := store.OpenVault(cfg.DataDir)
	if err != nil {
		return nil, fmt.Errorf("open vault: %w", err)
	}
	return db, nil
}

// openAuditedKeysDB opens the vault with the master key, for create and
// revoke: they write audit rows, which need the vault's audit key.
func (e *env) openAuditedKeysDB(ctx context.Context) (*store.DB, []byte, error) {
	v, key, err := e.openAuditedVault(ctx)
	if err != nil {
		return nil, nil, err
	}
	return v.DB(), key, nil
}

// openAuditedVault opens the vault with the master key and its audit
// key, for the commands that change it and write audit rows. The caller
// closes the vault's database.
func (e *env) openAuditedVault(ctx context.Context) (*vault.Vault, []byte, error) {
	cfg, err := e.config(nil)
	if err != nil {
		return nil, nil, err
	}
	v, err := e.openVault(ctx, cfg)
	if err != nil {
		return nil, nil, err
	}
	key, err := e.openAudit(ctx, v)
	if err != nil {
		v.DB().Close()
		return nil, nil, err
	}
	return v, key, nil
}

func apikeyCreate(c *cli.Context) error {
	name, err := keyName(c)
	if err != nil {
		return err
	}
	role, err := access.ParseRole(c.String("role"))
	if err != nil {
		return usagef("--role: %v", err)
	}
	budgets, err := budgetsFlag(c)
	if err != nil {
		return err
	}
	models, err := modelsArg(c)
	if err != nil {
		return err
	}
	set := access.KeySettings{Budgets: budgets, Relay: c.Bool("relay"), Models: models}
	e := getEnv(c)
	db, auditKey, err := e.openAuditedKeysDB(c.Context)
	if err != nil {
		return err
	}
	defer db.Close()
	key, info, err := access.CreateKeyWith(c.Context, db, auditKey, name, role, set, audit.CLIActor(), time.Now())
	if errors.Is(err, store.ErrClientKeyExists) {
		return withHint(err, "choose another name, or revoke the old key first with `claudeflare apikey revoke "+name+"`")
	}
	if err != nil {
		return err
	}
	if _, err := fmt.Fprintln(e.stdout, key); err != nil {
		return fmt.Errorf("print key: %w", err)
	}
	withBudgets := ""
	if len(budgets) > 0 {
		withBudgets = " and budgets " + access.FormatBudgets(budgets)
	}
	if set.Relay {
		withBudgets += ", relay (send it in x-claudeflare-key with the client's own credentials)"
	}
	if models != nil {
		withBudgets += ", models " + access.FormatModels(models)
	}
	fmt.Fprintf(e.stderr, "claudeflare: client key %q (%s...) created with role %s%s; it is shown only this once\n", name, info.Prefix, role, withBudgets)
	return nil
}

// apikeyUpdate sets or removes a live key's budgets, relay mark and
// model allowlist.
func apikeyUpdate(c *cli.Context) error {
	name, err := keyName(c)
	if err != nil {
		return err
	}
	budgets, err := budgetsFlag(c)
	if err != nil {
		return err
	}
	models, err := modelsArg(c)
	if err != nil {
		return err
	}
	switch {
	case c.Bool("no-budget") && len(budgets) > 0:
		return usagef("give --budget or --no-budget, not both")
	case c.Bool("relay") && c.Bool("no-relay"):
		return usagef("give --relay or --no-relay, not both")
	case c.IsSet("models") && c.Bool("no-models"):
		return usagef("give --models or --no-models, not both")
	}
	var u access.KeyUpdate
	var said []string
	if c.Bool("no-budget") || len(budgets) > 0 {
		u.Budgets = &budgets
		said = append(said, "budgets: "+access.FormatBudgets(budgets))
	}
	if c.Bool("relay") || c.Bool("no-relay") {
		relay := c.Bool("relay")
		u.Relay = &relay
		said = append(said, "relay: "+map[bool]string{true: "on", false: "off"}[relay])
	}
	if c.IsSet("models") || c.Bool("no-models") {
		u.Models = &models
		said = append(said, "models: "+access.FormatModels(models))
	}
	if len(said) == 0 {
		return usagef("apikey update needs --budget SPEC (repeatable), --no-budget, --relay, --no-relay, --models LIST or --no-models")
	}
	e := getEnv(c)
	db, auditKey, err := e.openAuditedKeysDB(c.Context)
	if err != nil {
		return err
	}
	defer db.Close()
	if _, err := access.UpdateKey(c.Context, db, auditKey, name, u, audit.CLIActor(), time.Now()); err != nil {
		switch {
		case errors.Is(err, store.ErrNoClientKey):
			return withHint(err, "see `claudeflare apikey list`")
		case errors.Is(err, access.ErrTamperedKey):
			return withHint(err, "revoke it with `claudeflare apikey revoke "+name+"` and run `claudeflare doctor`")
		}
		return err
	}
	e.say("client key %q %s", name, strings.Join(said, "; "))
	return nil
}

// apikeyOut is one line of `apikey list --json`.
type apikeyOut struct {
	Name       string  `json:"name"`
	Prefix     string  `json:"prefix"`
	Role       string  `json:"role"`
	Status     string  `json:"status"` // live | revoked | tampered
	CreatedAt  *string `json:"created_at"`
	LastUsedAt *string `json:"last_used_at"`
	RevokedAt  *string `json:"revoked_at"`
	// Budgets are the key's budgets, each with its use in the current
	// period (used null for a revoked or tampered key, or when the request
	// log cannot be read).
	Budgets []budgetOut `json:"budgets"`
	// Relay: a relay key (the client's own credentials go upstream).
	Relay bool `json:"relay"`
	// Models is the key's model allowlist; null = any model.
	Models []string `json:"models"`
}

// budgetOut is one budget in `apikey list --json`.
type budgetOut struct {
	Amount      float64  `json:"amount"`
	Unit        string   `json:"unit"`
	Period      string   `json:"period"`
	Used        *float64 `json:"used"`
	PeriodStart string   `json:"period_start"`
	ResetsAt    string   `json:"resets_at"`
	Exceeded    bool     `json:"exceeded"`
}

// keyBudgets is a key's budgets as listed: with their use where known.
func keyBudgets(k access.KeyInfo, used map[string][]access.BudgetUse, now time.Time) []budgetOut {
	out := []budgetOut{}
	uses := used[k.Name]
	for i, b := range k.Budgets {
		start, end := access.PeriodBounds(b.Period, now)
		o := budgetOut{Amount: b.Amount, Unit: b.Unit, Period: b.Period,
			PeriodStart: start.UTC().Format(time.RFC3339), ResetsAt: end.UTC().Format(time.RFC3339)}
		if i < len(uses) && uses[i].Budget == b {
			u := uses[i].Used
			o.Used, o.Exceeded = &u, uses[i].Exceeded
		}
		out = append(out, o)
	}
	return out
}

// budgetCells are the BUDGET and USED cells of a key's table line.
func budgetCells(bs []budgetOut) (string, string) {
	if len(bs) == 0 {
		return "-", "-"
	}
	var budget, used []string
	for _, b := range bs {
		budget = append(budget, access.Budget{Amount: b.Amount, Unit: b.Unit, Period: b.Period}.String())
		over := ""
		if b.Exceeded {
			over = ", over"
		}
		switch {
		case b.Used == nil:
			used = append(used, "-")
		case b.Unit == access.UnitUSD:
			used = append(used, fmt.Sprintf("%.2f usd (%.0f%%%s)", *b.Used, 100**b.Used/b.Amount, over))
		default:
			used = append(used, fmt.Sprintf("%.0f tokens (%.0f%%%s)", *b.Used, 100**b.Used/b.Amount, over))
		}
	}
	return strings.Join(budget, ", "), strings.Join(used, ", ")
}

func keyStatus(k access.KeyInfo) string {
	if k.Tampered {
		return "tampered"
	}
	if k.RevokedAt.IsZero() {
		return "live"
	}
	return "revoked"
}

// apikeyList lists the client keys, each checked against its MAC, so it
// needs the master key. A row that fails (added or changed outside
// claudeflare) is listed as tampered, with a warning on stderr; the
// listing still succeeds (doctor fails on it).
func apikeyList(c *cli.Context) error {
	e := getEnv(c)
	cfg, err := e.config(nil)
	if err != nil {
		return err
	}
	v, err := e.openVault(c.Context, cfg)
	if err != nil {
		return err
	}
	db := v.DB()
	defer db.Close()
	auditKey, err := v.AuditKey(c.Context)
	if err != nil {
		return fmt.Errorf("audit key: %w", err)
	}
	keys, err := access.ListKeys(c.Context, db, auditKey)
	if err != nil {
		return err
	}
	if n := countTampered(keys); n > 0 {
		fmt.Fprintf(e.stderr, "claudeflare: warning: %d client key %s failed authentication (added or changed outside claudeflare, listed as tampered); the daemon refuses %s\n"+
			"hint: revoke %s with `claudeflare apikey revoke NAME` and run `claudeflare doctor`\n",
			n, map[bool]string{true: "row", false: "rows"}[n == 1], map[bool]string{true: "it", false: "them"}[n == 1], map[bool]string{true: "it", false: "them"}[n == 1])
	}
	now := time.Now()
	used := e.budgetsUsed(c.Context, cfg, keys, now)
	if c.Bool("json") {
		out := newNDJSON(e.stdout)
		for _, k := range keys {
			if err := out.write(apikeyOut{
				Name: k.Name, Prefix: k.Prefix, Role: string(k.Role), Status: keyStatus(k),
				CreatedAt: requestlog.RFC3339(store.ToMS(k.CreatedAt)), LastUsedAt: requestlog.RFC3339(store.ToMS(k.LastUsedAt)), RevokedAt: requestlog.RFC3339(store.ToMS(k.RevokedAt)),
				Budgets: keyBudgets(k, used, now), Relay: k.Relay, Models: k.Models,
			}); err != nil {
				return err
			}
		}
		return nil
	}
	tw := tabwriter.NewWriter(e.stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tPREFIX\tROLE\tSTATUS\tCREATED\tLAST USED\tBUDGET\tUSED\tRELAY\tMODELS")
	for _, k := range keys {
		budget, use := budgetCells(keyBudgets(k, used, now))
		relay := map[bool]string{true: "yes", false: "no"}[k.Relay]
		fmt.Fprintf(tw, "%s\t%s...\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", printable(k.Name), printable(k.Prefix), printable(string(k.Role)), printable(keyStatus(k)),
			tableTime(store.ToMS(k.CreatedAt)), tableTime(store.ToMS(k.LastUsedAt)), budget, use, relay, printable(access.FormatModels(k.Models)))
	}
	return tw.Flush()
}

// budgetsUsed reads the use of the live keys' budgets in their current
// periods from the request log; when it cannot, it warns and the use is
// left unknown.
func (e *env) budgetsUsed(ctx context.Context, cfg *config.Config, keys []access.KeyInfo, now time.Time) map[string][]access.BudgetUse {
	some := false
	for _, k := range keys {
		some = some || len(k.Budgets) > 0
	}
	if !some {
		return nil
	}
	ldb, err := e.openLog(cfg)
	if err == nil {
		defer ldb.Close()
		var used map[string][]access.BudgetUse
		if used, err = access.BudgetsUsed(ctx, ldb, keys, now); err == nil {
			return used
		}
	}
	fmt.Fprintf(e.stderr, "claudeflare: warning: cannot read the budgets' use from the request log: %v\n", err)
	return nil
}

func countTampered(keys []access.KeyInfo) int {
	n := 0
	for _, k := range keys {
		if k.Tampered {
			n++
		}
	}
	return n
}

func apikeyRevoke(c *cli.Context) error {
	name, err := keyName(c)
	if err != nil {
		return err
	}
	e := getEnv(c)
	db, auditKey, err := e.openAuditedKeysDB(c.Context)
	if err != nil {
		return err
	}
	defer db.Close()
	if _, err := access.RevokeKey(c.Context, db, auditKey, name, audit.CLIActor(), time.Now()); err != nil {
		if errors.Is(err, store.ErrNoClientKey) {
			return withHint(err, "see `claudeflare apikey list`")
		}
		return err
	}
	e.say("client key %q revoked", name)
	if n, err := store.CountClientKeys(context.WithoutCancel(c.Context), db); err == nil && n == 0 {
		fmt.Fprintln(e.stderr, "claudeflare: warning: no client keys remain: the proxy now serves loopback clients without a key")
	}
	return nil
}
