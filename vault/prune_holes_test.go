package vault_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/claudeflare/claudeflare/store"
	"github.com/claudeflare/claudeflare/vault"
)

// TestRetiredKeyKeptForGrace: a data key retired by `key rotate --data`
// is kept for RetiredKeyGrace even when nothing refers to it yet: a
// daemon that has not noticed the new key may still seal a payload with
// it, which must stay readable. Only once the grace period is over does a
// rotation destroy it.
func TestRetiredKeyKeptForGrace(t *testing.T) {
	ctx := context.Background()
	s := newHolesSetup(t)
	ldb, clk := s.ldb, s.clk
	open := func() *vault.Vault { return s.open(t) }
	cli := open()
	if _, err := cli.AddAccount(ctx, vault.NewAccount{Name: "work", Kind: store.KindAPIKey, Tier: 1}, vault.Secrets{APIKey: "sk-ant-api03-test"}); err != nil {
		t.Fatal(err)
	}
	// A daemon seals a payload with the current key; its recorder has
	// not written it to the request log yet.
	daemon := open()
	oldKey, sealed, err := daemon.SealPayload("queued", []byte("queued payload"))
	if err != nil {
		t.Fatal(err)
	}
	res, err := cli.Rotate(ctx, vault.RotateOptions{Data: true, LogDB: ldb})
	if err != nil {
		t.Fatal(err)
	}
	if res.DataKeyID == oldKey || slices.Contains(res.DeletedKeys, oldKey) {
		t.Fatalf("rotate --data destroyed the key it just retired: %+v", res)
	}
	// A master rotation a little later, still within the grace period:
	// the retired key, which nothing refers to, is kept.
	clk.Add(vault.RetiredKeyGrace - time.Minute)
	res, err = cli.Rotate(ctx, vault.RotateOptions{Master: true, LogDB: ldb})
	if err != nil {
		t.Fatal(err)
	}
	if slices.Contains(res.DeletedKeys, oldKey) {
		t.Fatalf("a data key retired %s ago was destroyed (grace %s)", vault.RetiredKeyGrace-time.Minute, vault.RetiredKeyGrace)
	}
	// The queued payload, written now, still opens.
	if plain, err := open().OpenPayload(oldKey, "queued", sealed); err != nil || string(plain) != "queued payload" {
		t.Fatalf("a payload sealed with the retired key within the grace period: %v", err)
	}
	// Past the grace period, the next rotation destroys it.
	clk.Add(2 * time.Minute)
	res, err = cli.Rotate(ctx, vault.RotateOptions{Master: true, LogDB: ldb})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(res.DeletedKeys, oldKey) {
		t.Fatalf("an unused data key retired past the grace period was kept: deleted %v", res.DeletedKeys)
	}
}
