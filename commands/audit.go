package commands

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/claudeflare/claudeflare/audit"
	"github.com/claudeflare/claudeflare/vault"
)

func auditCommand() *cli.Command {
	return &cli.Command{
		Name:  "audit",
		Usage: "show or verify the audit log (account, key and access events)",
		Description: "The audit log records accounts added, removed, paused, resumed, edited, logged\n" +
			"in again or needing a new login, master key rotations, client keys created, revoked or used from a\n" +
			"new address, failed authentications (one row per address and minute) and\n" +
			"config reloads. Listing it needs no key.\n" +
			"\n" +
			"Rows are chained with HMAC-SHA256 under the vault's audit key, a random key\n" +
			"stored wrapped to the master key (and carried across `key rotate`, so older\n" +
			"rows and anchored heads stay valid). Every command that writes audit rows,\n" +
			"and the daemon, therefore needs the master key. --verify (with the master\n" +
			"key) exits 1 naming the first bad row when a row was edited, inserted,\n" +
			"deleted or re-chained, when ids are not contiguous from 1, when the head\n" +
			"record does not match the last row, and when the log was deleted or replaced\n" +
			"although the vault's authenticated metadata says it has an audit key.\n" +
			"\n" +
			"What --verify alone cannot see: the newest rows cut off together with the\n" +
			"head moved back (the log then looks as it did earlier), or vault.db replaced\n" +
			"by an older copy of itself. Anchor the head elsewhere (--head, e.g. from cron\n" +
			"to another machine) and check it with --verify --expect-head H: H must be the\n" +
			"hash of a row of the chain (the head when anchored; rows written since follow\n" +
			"it), so rows cut from before the anchor are found; rows written after the\n" +
			"last anchor are not protected.\n" +
			"\n" +
			"A log made by an earlier release (plain SHA-256 links) is verified and keyed\n" +
			"by the first command that opens the vault with the master key, which says so.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "since", Usage: "only entries since `WHEN` (a duration back from now, or an RFC 3339 time)"},
			&cli.BoolFlag{Name: "json", Usage: "print NDJSON, one entry a line"},
			&cli.BoolFlag{Name: "verify", Usage: "verify the keyed chain instead of listing (needs the master key)"},
			&cli.BoolFlag{Name: "head", Usage: "verify, then print the hash of the last row (the head) alone, to anchor elsewhere"},
			&cli.StringFlag{Name: "expect-head", Usage: "with --verify: fail unless `H` (a head printed by --head) is the head or a row of the chain"},
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
	Verified bool   `json:"verified"`
	Entries  int    `json:"entries"`
	LastID   int64  `json:"last_id"`
	Head     string `json:"head"`
	// LegacyEntries were made by an earlier release (plain hashes),
	// covered by the first keyed row.
	LegacyEntries int `json:"legacy_entries"`
	// ExpectedHeadAt is the row whose hash --expect-head named.
	ExpectedHeadAt int64 `json:"expected_head_at,omitempty"`
}

// auditHeadOut is the line `audit --head --json` prints.
type auditHeadOut struct {
	Head    string `json:"head"`
	LastID  int64  `json:"last_id"`
	Entries int    `json:"entries"`
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
	verify, head := c.Bool("verify"), c.Bool("head")
	if (verify || head) && c.IsSet("since") {
		return usagef("--verify and --head check the whole log; they do not take --since")
	}
	var expect []byte
	if c.IsSet("expect-head") {
		if !verify {
			return usagef("--expect-head goes with --verify")
		}
		var err error
		if expect, err = hex.DecodeString(strings.TrimSpace(c.String("expect-head"))); err != nil || len(expect) != sha256.Size {
			return usagef("--expect-head: want the 64 hex digits printed by `claudeflare audit --head`")
		}
	}
	e := getEnv(c)
	if verify || head {
		return auditVerify(c, e, expect, head)
	}
	db, err := e.openKeysDB()
	if err != nil {
		return err
	}
	defer db.Close()

	if c.Bool("json") {
		out := newNDJSON(e.stdout)
		return audit.List(c.Context, db, since, func(en audit.Entry) error {
			return out.write(auditOut{
				ID: en.ID, Time: en.Time().Format(time.RFC3339), Actor: en.Actor, Action: en.Action,
				Detail: en.Detail, Hash: hex.EncodeToString(en.Hash),
			})
		})
	}
	tw := tabwriter.NewWriter(e.stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tTIME\tACTOR\tACTION\tDETAIL")
	err = audit.List(c.Context, db, since, func(en audit.Entry) error {
		_, err := fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\n", en.ID, tableTime(en.Time().UnixMilli()), printable(en.Actor), printable(en.Action),
			printable(en.Detail))
		return err
	})
	if err != nil {
		return err
	}
	return tw.Flush()
}

// auditVerify is audit --verify / --head: the whole chain, with the
// master key (to get the audit key), after audit.Prepare has keyed a log
// made by an earlier release.
func auditVerify(c *cli.Context, e *env, expect []byte, printHead bool) error {
	cfg, err := e.config(nil)
	if err != nil {
		return err
	}
	e.audit.quiet = true // a problem is this command's error
	v, err := e.openVaultWith(c.Context, cfg, vault.Options{Logger: e.log}, true)
	if err != nil {
		return err
	}
	defer v.DB().Close()
	p, err := e.prepareAudit(c.Context, v, false)
	if err != nil {
		return err
	}
	if p.Problem != nil {
		return tamperHint(p.Problem)
	}
	st, err := audit.Verify(c.Context, v.DB(), p.Key, expect)
	if err != nil {
		var ce *audit.ChainError
		if errors.As(err, &ce) && ce.Anchor {
			return withHint(err, "the chain verifies up to its head (row "+fmt.Sprint(st.LastID)+"), but not to the head you anchored: rows were cut from its end, or vault.db was replaced by an older copy; restore vault.db from a backup to see what was removed")
		}
		return tamperHint(err)
	}
	head := hex.EncodeToString(st.Head)
	if printHead {
		if c.Bool("json") {
			return newNDJSON(e.stdout).write(auditHeadOut{Head: head, LastID: st.LastID, Entries: st.Entries})
		}
		_, err := fmt.Fprintln(e.stdout, head)
		return err
	}
	if c.Bool("json") {
		return newNDJSON(e.stdout).write(auditVerifyOut{Verified: true, Entries: st.Entries, LastID: st.LastID, Head: head,
			LegacyEntries: st.Legacy, ExpectedHeadAt: st.ExpectedAt})
	}
	msg := fmt.Sprintf("audit log verified: %d entries, head %s (row %d)", st.Entries, head, st.LastID)
	if st.Legacy > 0 {
		msg += fmt.Sprintf("; rows 1 to %d were made by an earlier release (plain hashes) and are covered by the keyed rows after them", st.Legacy)
	}
	if expect != nil {
		msg += fmt.Sprintf("; the expected head is row %d", st.ExpectedAt)
	}
	_, err = fmt.Fprintln(e.stdout, msg)
	return err
}

func tamperHint(err error) error {
	if errors.Is(err, audit.ErrTampered) {
		return withHint(err, "restore vault.db from a backup to see what was changed")
	}
	return err
}

// auditNotes is what the audit log told this command, so that each thing
// is said once.
type auditNotes struct {
	warned bool // a problem was reported
	quiet  bool // audit --verify reports problems as its error
}

// prepareAudit gets the audit key for a command that opened the vault
// with the master key, keying a log made by an earlier release first, and
// says on stderr what it did or found. openVaultWith calls it for every
// command that opens the vault with the master key; commands that write
// audit rows call it again (openAudit, with write) for the key.
func (e *env) prepareAudit(ctx context.Context, v *vault.Vault, write bool) (audit.Prep, error) {
	p, err := audit.Prepare(context.WithoutCancel(ctx), v, time.Now(), audit.CLIActor(), write)
	if err != nil {
		return p, err
	}
	if p.Sealed && p.State.Legacy > 0 {
		fmt.Fprintf(e.stderr, "claudeflare: the audit log made by an earlier release (%d %s) verified as a plain hash chain; it is now keyed with the vault's audit key (row %d)\n",
			p.State.Legacy, map[bool]string{true: "entry", false: "entries"}[p.State.Legacy == 1], p.State.LastID)
	}
	if p.Problem != nil && !e.audit.quiet && (!e.audit.warned || p.Restarted) {
		e.audit.warned = true
		msg := p.Problem.Error()
		if p.Restarted {
			msg += fmt.Sprintf("; the chain was restarted at row %d, which `claudeflare audit --verify` reports from now on", p.State.LastID)
		}
		fmt.Fprintf(e.stderr, "claudeflare: warning: %s\nhint: run `claudeflare audit --verify`; restore vault.db from a backup to see what was changed\n", msg)
	}
	return p, nil
}

// openAudit is prepareAudit for a command about to write audit rows: it
// returns the audit key.
func (e *env) openAudit(ctx context.Context, v *vault.Vault) ([]byte, error) {
	p, err := e.prepareAudit(ctx, v, true)
	if err != nil {
		return nil, err
	}
	return p.Key, nil
}
