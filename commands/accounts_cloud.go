package commands

import (
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/claudeflare/claudeflare/accounts"
	"github.com/claudeflare/claudeflare/audit"
	"github.com/claudeflare/claudeflare/cloud"
	"github.com/claudeflare/claudeflare/store"
)

// cloudHelp is what add and login say of the cloud kinds.
const cloudHelp = "\n\nWith --bedrock, an Amazon Bedrock account: stdin holds the AWS keys as JSON,\n" +
	"{\"access_key_id\": ..., \"secret_access_key\": ..., \"session_token\": ...} (the\n" +
	"session token optional); requests are signed with SigV4 for the service\n" +
	"bedrock in --region, at https://bedrock-runtime.REGION.amazonaws.com unless\n" +
	"--endpoint names another base URL.\n" +
	"With --vertex, a Google Vertex AI account: stdin holds a service-account key\n" +
	"file (JSON); access tokens come from its token_uri (JWT bearer grant) and are\n" +
	"cached until shortly before they expire; requests go to project --project in\n" +
	"--region, at https://REGION-aiplatform.googleapis.com unless --endpoint.\n" +
	"A cloud account serves /v1/messages, streamed or not (Bedrock also\n" +
	"count_tokens); other requests go to another account. Its credentials are\n" +
	"checked for shape (one clear error, nothing stored on bad input) and sealed in\n" +
	"the vault like every other secret; the region, project and endpoint are not\n" +
	"secret and show in `accounts list --json`."

// cloudFlags are the cloud account flags of add and login.
func cloudFlags() []cli.Flag {
	return []cli.Flag{
		&cli.BoolFlag{Name: "bedrock", Usage: "an Amazon Bedrock account: read its AWS keys as JSON from stdin"},
		&cli.BoolFlag{Name: "vertex", Usage: "a Google Vertex AI account: read its service-account key file from stdin"},
		&cli.StringFlag{Name: "region", Usage: "`REGION` of a cloud account (us-east-1, europe-west1, ...)"},
		&cli.StringFlag{Name: "project", Usage: "`PROJECT` id of a Vertex account"},
		&cli.StringFlag{Name: "endpoint", Usage: "`URL` that replaces the provider's regional base URL (https://)"},
	}
}

// cloudArgs reads the cloud flags: kind is "" when neither --bedrock nor
// --vertex is given (then no other cloud flag may be).
func cloudArgs(c *cli.Context) (kind string, st cloud.Settings, err error) {
	return cloudArgsFor(c, false)
}

// cloudArgsFor is cloudArgs; for a login (login), the settings are
// checked later, once the stored ones fill in those not given.
func cloudArgsFor(c *cli.Context, login bool) (kind string, st cloud.Settings, err error) {
	st = cloud.Settings{Region: c.String("region"), Project: c.String("project"), Endpoint: c.String("endpoint")}
	switch {
	case c.Bool("bedrock") && c.Bool("vertex"):
		return "", st, usagef("--bedrock and --vertex exclude each other")
	case c.Bool("bedrock"):
		kind = store.KindBedrock
	case c.Bool("vertex"):
		kind = store.KindVertex
	}
	if kind == "" {
		for _, f := range []string{"region", "project", "endpoint"} {
			if c.IsSet(f) {
				return "", st, usagef("--%s is for a cloud account: add --bedrock or --vertex", f)
			}
		}
		return "", st, nil
	}
	for _, f := range []string{"refresh-token-stdin", "api-key-stdin", "setup-token-stdin", "mode"} {
		if c.IsSet(f) {
			return "", st, usagef("--%s and --%s exclude each other", kind, f)
		}
	}
	if login {
		return kind, st, nil
	}
	if err := st.Check(kind); err != nil {
		return "", st, usagef("%v", err)
	}
	return kind, st, nil
}

// readCloudDoc reads a cloud account's credential document from stdin.
func readCloudDoc(r io.Reader, kind string) ([]byte, error) {
	what := map[string]string{store.KindBedrock: "AWS keys", store.KindVertex: "service-account key"}[kind]
	b, err := io.ReadAll(io.LimitReader(r, cloud.MaxKeyBytes+1))
	if err != nil {
		return nil, fmt.Errorf("read the %s from stdin: %w", what, err)
	}
	if _, err := cloud.CheckKey(kind, b); err != nil {
		return nil, usagef("%v", err)
	}
	return b, nil
}

// accountsAddCloud is `accounts add NAME --bedrock|--vertex`.
func accountsAddCloud(c *cli.Context, a addArgs, kind string, st cloud.Settings) error {
	e := getEnv(c)
	doc, err := readCloudDoc(e.stdin, kind)
	if err != nil {
		return err
	}
	v, auditKey, err := e.openAuditedVault(c.Context)
	if err != nil {
		return err
	}
	defer v.DB().Close()
	ctx := c.Context
	err = accounts.AddCloud(ctx, v, a.name, a.priority, a.tier, accounts.CloudCredential{Kind: kind, Settings: st, Doc: doc})
	if accounts.IsBadInput(err) {
		return usagef("%v", err)
	}
	if err != nil {
		return err
	}
	if err := setOverage(ctx, v.DB(), a.name, a.overage); err != nil {
		return err
	}
	if err := accounts.Added(ctx, v.DB(), auditKey, accounts.By{Actor: audit.CLIActor()}, a.name, time.Now()); err != nil {
		return err
	}
	e.say("account %q added (%s, %s)", a.name, kind, st.Region)
	return nil
}

// accountsLoginCloud is `accounts login NAME --bedrock|--vertex`.
func accountsLoginCloud(c *cli.Context, name, kind string, st cloud.Settings) error {
	e := getEnv(c)
	doc, err := readCloudDoc(e.stdin, kind)
	if err != nil {
		return err
	}
	v, auditKey, err := e.openAuditedVault(c.Context)
	if err != nil {
		return err
	}
	defer v.DB().Close()
	// The settings not given stay as stored.
	if a, err := store.GetAccount(c.Context, v.DB(), name); err == nil && a.Kind == kind {
		old, _ := cloud.ParseSettings(a.Upstream)
		for _, f := range []struct {
			flag     string
			dst, was *string
		}{{"region", &st.Region, &old.Region}, {"project", &st.Project, &old.Project}, {"endpoint", &st.Endpoint, &old.Endpoint}} {
			if !c.IsSet(f.flag) {
				*f.dst = *f.was
			}
		}
	}
	err = accounts.LoginCloud(c.Context, v, auditKey, accounts.By{Actor: audit.CLIActor()}, name,
		accounts.CloudCredential{Kind: kind, Settings: st, Doc: doc}, time.Now())
	switch {
	case errors.Is(err, store.ErrNoAccount):
		return withHint(err, "to add a new account, run `claudeflare accounts add "+name+" --"+kind+" ...`")
	case accounts.IsBadInput(err):
		return usagef("%v", err)
	case err != nil:
		return err
	}
	e.say("account %q logged in", name)
	return nil
}
