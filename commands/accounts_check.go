package commands

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/claudeflare/claudeflare/accounts"
	"github.com/claudeflare/claudeflare/audit"
	"github.com/claudeflare/claudeflare/config"
	"github.com/claudeflare/claudeflare/daemon"
	"github.com/claudeflare/claudeflare/internal/acctstate"
	"github.com/claudeflare/claudeflare/store"
	"github.com/claudeflare/claudeflare/upstream"
)

func accountsCheckCommand() *cli.Command {
	return &cli.Command{
		Name:      "check",
		Usage:     "probe accounts now with one cheap request each and report their state",
		ArgsUsage: "[NAME]",
		Description: "Every account, or the one named, gets one request of one token to the\n" +
			"smallest model (an expired access token is refreshed first; a setup token\n" +
			"never is). Paused accounts are reported, not probed. What a probe learns is\n" +
			"stored as the daemon would: an account that serves loses a block the answer\n" +
			"contradicts, a limited one keeps its limit until the reset, a refused key or\n" +
			"account gets key_refused or quarantined. States: " + strings.Join(acctstate.Words, ", ") + ".\n" +
			"Exits 1 when an account could not be checked (no answer, or an overloaded\n" +
			"or failing upstream).",
		Flags:  []cli.Flag{&cli.BoolFlag{Name: "json", Usage: "print NDJSON, one account a line: name, status, window, family, until, reason, http_status, detail"}},
		Action: accountsCheck,
	}
}

func accountsCheck(c *cli.Context) error {
	if c.NArg() > 1 {
		return usagef("accounts check takes at most one account NAME")
	}
	name := ""
	if c.NArg() == 1 {
		n, err := oneName(c)
		if err != nil {
			return err
		}
		name = n
	}
	e := getEnv(c)
	cfg, err := e.config(nil)
	if err != nil {
		return err
	}
	client, err := oauthClient(cfg)
	if err != nil {
		return err
	}
	probe, err := newProbe(cfg)
	if err != nil {
		return err
	}
	v, err := e.openVault(c.Context, cfg)
	if err != nil {
		return err
	}
	defer v.DB().Close()
	auditKey, err := e.openAudit(c.Context, v)
	if err != nil {
		return err
	}
	ch := &accounts.Checker{Vault: v, OAuth: client, Probe: probe, AuditKey: auditKey, By: accounts.By{Actor: audit.CLIActor()}}
	var results []accounts.CheckResult
	if name != "" {
		r, err := ch.Check(c.Context, name)
		if err != nil {
			return err
		}
		results = []accounts.CheckResult{r}
	} else if results, err = ch.CheckAll(c.Context); err != nil {
		return err
	}
	if err := printChecks(e, results, c.Bool("json")); err != nil {
		return err
	}
	failed := 0
	for _, r := range results {
		if r.Failed {
			failed++
		}
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d accounts could not be checked", failed, len(results))
	}
	return nil
}

// newProbe is the daemon's probe, through the daemon's upstream transport.
func newProbe(cfg *config.Config) (accounts.Probe, error) {
	transport, err := upstream.Transport(cfg)
	if err != nil {
		return nil, err
	}
	probe, err := daemon.AccountProbe(cfg, &http.Client{Transport: transport})
	if err != nil {
		return nil, usagef("%v", err)
	}
	return probe, nil
}

// keyCheckTimeout bounds the probe of a new API key.
const keyCheckTimeout = 15 * time.Second

// checkAPIKey probes a new API key once before it is stored: a key
// upstream refuses is an error (nothing is stored). A probe that gets no
// answer, or an answer about something else, does not stop the add: it
// is said on stderr, and the daemon finds the state out.
func checkAPIKey(c *cli.Context, e *env, key string) error {
	cfg, err := e.config(nil)
	if err != nil {
		return err
	}
	probe, err := newProbe(cfg)
	if err != nil {
		return err
	}
	// A machine without a route to the upstream must not hang the add:
	// the check gives up after keyCheckTimeout and the key goes in unchecked.
	ctx, cancel := context.WithTimeout(c.Context, keyCheckTimeout)
	defer cancel()
	r, err := probe(ctx, store.KindAPIKey, key, time.Now())
	switch {
	case err != nil:
		fmt.Fprintf(e.stderr, "claudeflare: warning: the API key could not be checked (%s); adding it unchecked\n", printable(err.Error()))
	case r.State.Word == acctstate.KeyRefused:
		return withHint(fmt.Errorf("upstream refused the API key (%d %s); nothing stored", r.Status, printable(r.Detail)),
			"check the key and run the command again with a working one")
	case r.State.Word != acctstate.OK && r.State.Word != "":
		fmt.Fprintf(e.stderr, "claudeflare: warning: upstream accepts the key but the account is %s\n", printable(r.State.String()))
	}
	return nil
}

func printChecks(e *env, results []accounts.CheckResult, asJSON bool) error {
	if asJSON {
		return writeNDJSON(e.stdout, results)
	}
	tw := tabwriter.NewWriter(e.stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tSTATUS\tUNTIL\tHTTP\tDETAIL")
	for _, r := range results {
		until, httpStatus := "-", "-"
		if r.Until != nil {
			if t, err := time.Parse(time.RFC3339, *r.Until); err == nil {
				until = tableTime(t.UnixMilli())
			}
		}
		if r.HTTPStatus != nil {
			httpStatus = fmt.Sprint(*r.HTTPStatus)
		}
		detail := r.Detail
		if r.Reason != "" && !strings.Contains(detail, r.Reason) {
			detail = strings.TrimPrefix(r.Reason+"; "+detail, "; ")
			detail = strings.TrimSuffix(detail, "; ")
		}
		if detail == "" {
			detail = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", printable(r.Name), printable(stateWord(r.Status, r.Window, r.Family)),
			until, httpStatus, printable(detail))
	}
	return tw.Flush()
}
