package accounts

import (
	"context"
	"fmt"
	"time"

	"github.com/claudeflare/claudeflare/cloud"
	"github.com/claudeflare/claudeflare/store"
	"github.com/claudeflare/claudeflare/vault"
)

// CloudCredential is a cloud account's credentials and settings, as
// `accounts add NAME --bedrock|--vertex` and `accounts login` take them:
// Doc is the credential document read from stdin (AWS keys JSON, or a
// service-account key file), never from argv.
type CloudCredential struct {
	Kind     string // store.KindBedrock or store.KindVertex
	Settings cloud.Settings
	Doc      []byte
}

// check checks c and returns its document compacted, or a BadInput whose
// text holds no part of the document.
func (c CloudCredential) check() (string, error) {
	if !cloud.Is(c.Kind) {
		return "", badInput("not a cloud account kind: %q", c.Kind)
	}
	if err := c.Settings.Check(c.Kind); err != nil {
		return "", &BadInput{Msg: err.Error(), err: err}
	}
	doc, err := cloud.CheckKey(c.Kind, c.Doc)
	if err != nil {
		return "", &BadInput{Msg: err.Error(), err: err}
	}
	return doc, nil
}

// AddCloud adds a cloud account: the credentials are checked (nothing is
// stored on bad input, a BadInput), sealed in the vault, and the settings
// kept in the row. A taken name is store.ErrAccountExists. The caller
// records it (Added).
func AddCloud(ctx context.Context, v *vault.Vault, name string, priority, tier int, c CloudCredential) error {
	doc, err := c.check()
	if err != nil {
		return err
	}
	_, err = v.AddAccount(ctx, vault.NewAccount{Name: name, Kind: c.Kind, Priority: priority, Tier: tier,
		Upstream: c.Settings.JSON()}, vault.Secrets{CloudKey: doc})
	return err
}

// LoginCloud gives the named cloud account new credentials and settings
// (region, project, endpoint; the ones given replace the stored ones) and
// records it. An account of another kind is ErrKindMismatch; bad input a
// BadInput; nothing is changed on error.
func LoginCloud(ctx context.Context, v *vault.Vault, auditKey []byte, by By, name string, c CloudCredential, now time.Time) error {
	a, err := store.GetAccount(ctx, v.DB(), name)
	if err != nil {
		return err
	}
	if a.Kind != c.Kind {
		return fmt.Errorf("%w: %q is a%s %s account", ErrKindMismatch, name, article(a.Kind), a.Kind)
	}
	doc, err := c.check()
	if err != nil {
		return err
	}
	// The settings first: a daemon that sees the new secret version
	// reads them with it.
	if err := store.SetUpstream(ctx, v.DB(), a.ID, c.Settings.JSON(), now); err != nil {
		return err
	}
	return Login(context.WithoutCancel(ctx), v, auditKey, by, name, vault.Secrets{CloudKey: doc}, now)
}

func article(kind string) string {
	switch kind {
	case store.KindOAuth, store.KindAPIKey:
		return "n"
	}
	return ""
}
