package vault_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/claudeflare/claudeflare/store"
	"github.com/claudeflare/claudeflare/vault"
)

// TestRotateDestroysUnusedRetiredKeys: `key rotate --data` retires the
// data key; a later rotation destroys a retired key once the grace period
// is over and no payload in the request log needs it any more, and keeps
// it while one does.
func TestRotateDestroysUnusedRetiredKeys(t *testing.T) {
	ctx := context.Background()
	s := newHolesSetup(t)
	vdb, ldb, clk := s.vdb, s.ldb, s.clk
	v := s.open(t)
	if _, err := v.AddAccount(ctx, vault.NewAccount{Name: "work", Kind: store.KindAPIKey, Tier: 1}, vault.Secrets{APIKey: "sk-ant-api03-test"}); err != nil {
		t.Fatal(err)
	}
	// A payload sealed under the first data key.
	oldKey, sealed, err := v.SealPayload("req-1", []byte("payload"))
	if err != nil {
		t.Fatal(err)
	}
	now := clk.Now().UnixMilli()
	if err := store.InsertRequests(ctx, ldb, []store.Request{{ID: "req-1", TS: now, Method: "POST", Path: "/v1/messages", Status: 200}},
		[]store.Payload{{RequestID: "req-1", TS: now, KeyID: oldKey, Sealed: sealed}}); err != nil {
		t.Fatal(err)
	}
	keyExists := func(id int64) bool {
		var n int
		if err := vdb.R.Get(&n, `SELECT count(*) FROM data_keys WHERE id = ?`, id); err != nil {
			t.Fatal(err)
		}
		return n == 1
	}

	res, err := v.Rotate(ctx, vault.RotateOptions{Data: true, LogDB: ldb})
	if err != nil {
		t.Fatal(err)
	}
	if res.DataKeyID == oldKey || !keyExists(oldKey) {
		t.Fatalf("rotate --data: new key %d, old %d kept %v", res.DataKeyID, oldKey, keyExists(oldKey))
	}

	// Past the grace period, but a payload still needs the old key.
	clk.Add(vault.RetiredKeyGrace + time.Minute)
	res, err = v.Rotate(ctx, vault.RotateOptions{Master: true, LogDB: ldb})
	if err != nil {
		t.Fatal(err)
	}
	if slices.Contains(res.DeletedKeys, oldKey) || !keyExists(oldKey) {
		t.Fatal("a retired data key a payload still needs was destroyed")
	}
	if plain, err := v.OpenPayload(oldKey, "req-1", sealed); err != nil || string(plain) != "payload" {
		t.Fatalf("payload under the retired key: %v", err)
	}

	// The payload is cleaned up: the next rotation destroys the key.
	if _, err := ldb.W.Exec(`DELETE FROM payloads`); err != nil {
		t.Fatal(err)
	}
	res, err = v.Rotate(ctx, vault.RotateOptions{Master: true, LogDB: ldb})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(res.DeletedKeys, oldKey) || keyExists(oldKey) {
		t.Fatalf("an unused retired data key was kept: deleted %v", res.DeletedKeys)
	}
	// The account still opens.
	accts, err := store.ListAccounts(ctx, vdb)
	if err != nil || len(accts) != 1 {
		t.Fatalf("accounts %v %v", accts, err)
	}
	if s, err := v.Secrets(ctx, accts[0].ID); err != nil || s.APIKey != "sk-ant-api03-test" {
		t.Fatalf("secret after the rotations: %v", err)
	}
}
