package commands_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/claudeflare/claudeflare/commands"
	"github.com/claudeflare/claudeflare/internal/testutil"
)

// The vault key commands' refusals, --keep-old, passphrase strength, the
// break-glass recovery and a tampered master record are tested as a
// transcript in testdata/script/vaultkeys.txtar, the previous release's
// data dir in first_release.txtar; what needs a daemon or this process's
// environment stays here.

// fileHash returns the contents of path (to compare before and after).
func fileHash(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// The master key variables are gone from the environment once read.
func TestMasterKeyVarsUnset(t *testing.T) {
	c := newCLI(t)
	for _, kv := range c.Env {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	const pass = "a long enough test passphrase"
	t.Setenv("CLAUDEFLARE_PASSPHRASE", pass)
	t.Setenv("CLAUDEFLARE_PASSPHRASE_NEW", "another long test passphrase")
	var out, errs strings.Builder
	if code := commands.Run([]string{"claudeflare", "init"}, strings.NewReader(""), &out, &errs); code != 0 {
		t.Fatalf("init: exit %d: %s", code, errs.String())
	}
	for _, k := range []string{"CLAUDEFLARE_PASSPHRASE", "CLAUDEFLARE_PASSPHRASE_NEW", "CLAUDEFLARE_ENCRYPTION_KEY"} {
		if v, ok := os.LookupEnv(k); ok {
			t.Errorf("%s is still set (%d bytes)", k, len(v))
		}
	}
	for _, kv := range os.Environ() {
		if strings.Contains(kv, pass) {
			t.Fatal("the passphrase is still in the environment")
		}
	}
}

// copyV1Data copies the data dir made by the previous release into the
// runner's data dir (private modes) and returns its master recipient.
func (c *runner) copyV1Data() string {
	c.t.Helper()
	dst := filepath.Join(c.dir, "data")
	testutil.CopyFirstRelease(c.t, dst)
	id := fileHash(c.t, filepath.Join(dst, "identity.txt"))
	_, recipient, _ := strings.Cut(id, "# public key: ")
	recipient, _, _ = strings.Cut(recipient, "\n")
	return recipient
}

// A daemon started on the previous release's data dir seals the vault's
// metadata and logs it, with the recipients sealed.
func TestUpgradeV1DaemonLogsVaultMAC(t *testing.T) {
	c := newCLI(t)
	recipient := c.copyV1Data()
	d := c.startDaemon()
	logs := d.logs()
	if !strings.Contains(logs, "earlier release") || !strings.Contains(logs, recipient) {
		t.Fatalf("daemon logs:\n%s", logs)
	}
	if err := d.stop(t, os.Interrupt); err != nil {
		t.Fatalf("daemon: %v\n%s", err, d.logs())
	}
	out, _, code := c.Run("", "doctor")
	if code != 0 || !strings.Contains(out, "vault_mac") {
		t.Fatalf("doctor: exit %d\n%s", code, out)
	}
}
