package commands

import (
	"fmt"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/claudeflare/claudeflare/accounts"
	"github.com/claudeflare/claudeflare/audit"
	"github.com/claudeflare/claudeflare/store"
)

func accountsUnblockCommand() *cli.Command {
	return &cli.Command{
		Name:      "unblock",
		Usage:     "clear an account's rate-limit, model-limit, extra-usage, quarantine or refused-key block",
		ArgsUsage: "NAME",
		Description: "For a block that is wrong or no longer true. A running daemon drops the\n" +
			"blocks it holds for the account within a few seconds. A needs_login status\n" +
			"is not a block: `accounts login NAME` cures it. Prints what was cleared.",
		Action: accountsUnblock,
	}
}

func accountsUnblock(c *cli.Context) error {
	e, name, vdb, auditKey, err := namedAccount(c)
	if err != nil {
		return err
	}
	defer vdb.Close()
	now := time.Now()
	before, err := accounts.Unblock(c.Context, vdb, auditKey, accounts.By{Actor: audit.CLIActor()}, name, now)
	if err != nil {
		return err
	}
	e.log.Info("account unblocked", "account", name)
	fmt.Fprintf(e.stdout, "unblocked %s: was %s\n", printable(name), printable(accounts.Blocks(before, now)))
	if before.Status == store.StatusNeedsLogin {
		fmt.Fprintf(e.stderr, "hint: %s still needs a new login: %s\n", printable(name), accounts.NeedsLoginHint(name))
	}
	return nil
}
