package accounts_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/claudeflare/claudeflare/accounts"
	"github.com/claudeflare/claudeflare/cloud"
	"github.com/claudeflare/claudeflare/store"
)

const awsSecret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"

func awsDoc(secret string) []byte {
	return []byte(`{"access_key_id": "AKIAIOSFODNN7EXAMPLE", "secret_access_key": "` + secret + `"}`)
}

// AddCloud seals the credentials and keeps the settings; bad input stores
// nothing and its error names no secret; LoginCloud replaces both and
// refuses another kind.
func TestCloudAddAndLogin(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	st := cloud.Settings{Region: "us-west-2"}
	for _, bad := range []accounts.CloudCredential{
		{Kind: store.KindBedrock, Settings: st, Doc: awsDoc(awsSecret + " trailing")},
		{Kind: store.KindBedrock, Settings: st, Doc: []byte(`{"secret_access_key": "` + awsSecret + `"}`)},
		{Kind: store.KindBedrock, Settings: cloud.Settings{Region: "nowhere"}, Doc: awsDoc(awsSecret)},
		{Kind: store.KindVertex, Settings: cloud.Settings{Region: "us-east5"}, Doc: awsDoc(awsSecret)},
	} {
		err := accounts.AddCloud(ctx, f.v, "bed", 1, 1, bad)
		if !accounts.IsBadInput(err) || strings.Contains(err.Error(), awsSecret) {
			t.Errorf("bad input %s: %v", bad.Doc, err)
		}
		if _, err := store.GetAccount(ctx, f.db, "bed"); !errors.Is(err, store.ErrNoAccount) {
			t.Fatalf("bad input stored an account: %v", err)
		}
	}
	if err := accounts.AddCloud(ctx, f.v, "bed", 2, 1, accounts.CloudCredential{Kind: store.KindBedrock, Settings: st, Doc: awsDoc(awsSecret)}); err != nil {
		t.Fatal(err)
	}
	a, err := store.GetAccount(ctx, f.db, "bed")
	if err != nil || a.Kind != store.KindBedrock || a.Priority != 2 || a.Upstream != `{"region":"us-west-2"}` {
		t.Fatalf("added %+v %v", a, err)
	}
	s, err := f.v.Secrets(ctx, a.ID)
	if err != nil || !strings.Contains(s.CloudKey, awsSecret) {
		t.Fatalf("sealed credentials: %v", err)
	}
	// The vault file holds the secret sealed only.
	raw, _ := os.ReadFile(filepath.Join(filepath.Dir(f.db.Path), store.VaultFile))
	if bytes.Contains(raw, []byte(awsSecret)) {
		t.Error("the AWS secret key is in vault.db in plaintext")
	}

	now := time.Now()
	by := accounts.By{Actor: "cli:test"}
	if err := accounts.LoginWith(ctx, f.v, nil, f.key, by, "bed", accounts.Credential{APIKey: "sk-ant-x"}, now); !errors.Is(err, accounts.ErrKindMismatch) {
		t.Errorf("an API key for a Bedrock account: %v", err)
	}
	if err := accounts.LoginCloud(ctx, f.v, f.key, by, "work", accounts.CloudCredential{Kind: store.KindBedrock, Settings: st, Doc: awsDoc(awsSecret)}, now); !errors.Is(err, accounts.ErrKindMismatch) {
		t.Errorf("AWS keys for an API-key account: %v", err)
	}
	st2 := cloud.Settings{Region: "eu-west-1", Endpoint: "https://bedrock.example.net"}
	if err := accounts.LoginCloud(ctx, f.v, f.key, by, "bed", accounts.CloudCredential{Kind: store.KindBedrock, Settings: st2, Doc: awsDoc("newsecret")}, now); err != nil {
		t.Fatal(err)
	}
	a2, _ := store.GetAccount(ctx, f.db, "bed")
	s2, _ := f.v.Secrets(ctx, a.ID)
	if a2.ID != a.ID || a2.Priority != 2 || a2.Upstream != st2.JSON() || a2.TokenVersion <= a.TokenVersion || !strings.Contains(s2.CloudKey, "newsecret") {
		t.Errorf("after login: %+v", a2)
	}
	if rows := f.rows(t); len(rows) != 1 || !strings.Contains(rows[0], `"bed" logged in again`) {
		t.Errorf("audit rows %q", rows)
	}
}

// accounts check leaves a cloud account alone: the probe speaks
// Anthropic's API, and a cloud account holds no OAuth token to refresh
// (without the guard it would be marked needs_login).
func TestCheckSkipsCloudAccounts(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	if err := accounts.AddCloud(ctx, f.v, "bed", 1, 1, accounts.CloudCredential{Kind: store.KindBedrock,
		Settings: cloud.Settings{Region: "us-east-1"}, Doc: awsDoc(awsSecret)}); err != nil {
		t.Fatal(err)
	}
	c := &accounts.Checker{Vault: f.v, AuditKey: f.key, Probe: func(context.Context, string, string, time.Time) (accounts.ProbeResult, error) {
		t.Fatal("a cloud account was probed")
		return accounts.ProbeResult{}, nil
	}}
	r, err := c.Check(ctx, "bed")
	if err != nil || r.Status != "ok" || !strings.Contains(r.Detail, "not probed") {
		t.Fatalf("check: %+v %v", r, err)
	}
	if a, _ := store.GetAccount(ctx, f.db, "bed"); a.Status != store.StatusOK {
		t.Errorf("status %s after a check", a.Status)
	}
}
