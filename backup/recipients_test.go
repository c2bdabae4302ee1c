package backup_test

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"filippo.io/age"

	"github.com/claudeflare/claudeflare/backup"
	"github.com/claudeflare/claudeflare/vault"
)

// Issue 11 item 2/5: a recipient added to vault.db after the vault was
// opened with the master key (between the command's open and the backup)
// is not trusted: the backup reads the recipients through the vault, which
// checks their MAC, and writes nothing encrypted to the stranger.
func TestBackupRefusesRecipientAddedAfterOpen(t *testing.T) {
	ctx := context.Background()
	d := newDataDir(t, "")
	stranger, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.vdb.W.Exec(`UPDATE master SET recipients = recipients || char(10) || ? WHERE id = 1`, stranger.Recipient().String()); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		master *vault.Vault
	}{{"the vault opened before", d.v}, {"the vault opened by Create", nil}} {
		opts := d.options()
		opts.Master = tc.master
		var buf bytes.Buffer
		_, err := backup.Create(ctx, &buf, opts)
		if !errors.Is(err, vault.ErrTampered) {
			t.Fatalf("%s: backup with a planted recipient: %v", tc.name, err)
		}
		if buf.Len() != 0 {
			t.Fatalf("%s: %d bytes written", tc.name, buf.Len())
		}
	}
}
