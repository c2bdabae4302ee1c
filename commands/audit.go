package commands

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/claudeflare/claudeflare/access"
	"github.com/claudeflare/claudeflare/store"
)

func auditCommand() *cli.Command {
	return &cli.Command{
		Name:  "audit",
		Usage: "show or verify the audit log (account, key and access events)",
		Description: "The audit log records accounts added, removed, paused, resumed or needing a\n" +
			"new login, master key rotations, client keys created, revoked or used from a\n" +
			"new address, failed authentications (one row per address and minute) and\n" +
			"config reloads. Rows are hash-chained: --verify checks the whole chain and\n" +
			"exits 1 naming the first row that was edited, inserted or deleted.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "since", Usage: "only entries since `WHEN` (a duration back from now, or an RFC 3339 time)"},
			&cli.BoolFlag{Name: "json", Usage: "print NDJSON, one entry a line"},
			&cli.BoolFlag{Name: "verify", Usage: "verify the hash chain instead of listing"},
		},
		Action: runAudit,
	}
}

// auditOut is one line of `audit --json`.
type auditOut struct {
	ID     int64  `json:"id"`
	Time   string `json:"time"`
	Actor  string `json:"actor"`
	Action string `json:"action"`
	Detail string `json:"detail"`
	Hash   string `json:"hash"`
}

// auditVerifyOut is the line `audit --verify --json` prints on success.
type auditVerifyOut struct {
	Verified bool `json:"verified"`
	Entries  int  `json:"entries"`
}

func runAudit(c *cli.Context) error {
	if c.NArg() > 0 {
		return usagef("audit takes no arguments")
	}
	var since time.Time
	if s := c.String("since"); s != "" {
		var err error
		if since, err = parseWhen("since", s, time.Now()); err != nil {
			return err
		}
	}
	if c.Bool("verify") && c.IsSet("since") {
		return usagef("--verify checks the whole log; it does not take --since")
	}
	e := getEnv(c)
	db, err := e.openKeysDB()
	if err != nil {
		return err
	}
	defer db.Close()

	if c.Bool("verify") {
		n, err := access.VerifyAudit(c.Context, db)
		if err != nil {
			if errors.Is(err, access.ErrTampered) {
				return withHint(err, "restore vault.db from a backup to see what was changed")
			}
			return err
		}
		if c.Bool("json") {
			return newNDJSON(e.stdout).write(auditVerifyOut{Verified: true, Entries: n})
		}
		_, err = fmt.Fprintf(e.stdout, "audit log verified: %d entries\n", n)
		return err
	}

	if c.Bool("json") {
		out := newNDJSON(e.stdout)
		return access.ListAudit(c.Context, db, since, func(en access.Entry) error {
			return out.write(auditOut{
				ID: en.ID, Time: en.Time().Format(time.RFC3339), Actor: en.Actor, Action: en.Action,
				Detail: en.Detail, Hash: hex.EncodeToString(en.Hash),
			})
		})
	}
	tw := tabwriter.NewWriter(e.stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tTIME\tACTOR\tACTION\tDETAIL")
	err = access.ListAudit(c.Context, db, since, func(en access.Entry) error {
		_, err := fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\n", en.ID, en.Time().Format(time.RFC3339), printable(en.Actor), printable(en.Action),
			printable(en.Detail))
		return err
	})
	if err != nil {
		return err
	}
	return tw.Flush()
}

// auditAccount records in the audit log that the person at the command
// line added, removed, paused or resumed an account.
func auditAccount(ctx context.Context, db *store.DB, verb, name string) error {
	action := map[string]string{
		"added": access.ActionAccountAdded, "removed": access.ActionAccountRemoved,
		"paused": access.ActionAccountPaused, "resumed": access.ActionAccountResumed,
	}[verb]
	if action == "" {
		return fmt.Errorf("audit: unknown account action %q", verb)
	}
	return access.Audit(context.WithoutCancel(ctx), db, access.CLIActor(), action, fmt.Sprintf("account %q %s", name, verb))
}
