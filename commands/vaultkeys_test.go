package commands_test

import (
	"database/sql"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"filippo.io/age"
	_ "github.com/mattn/go-sqlite3"

	"github.com/claudeflare/claudeflare/commands"
	"github.com/claudeflare/claudeflare/internal/testutil"
)

// tamper runs SQL on the vault file, as someone with write access to the
// data dir but without the master key could.
func (c *runner) tamper(query string, args ...any) {
	c.t.Helper()
	db, err := sql.Open("sqlite3", "file:"+filepath.Join(c.dir, "data", "vault.db")+"?_busy_timeout=5000")
	if err != nil {
		c.t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(query, args...); err != nil {
		c.t.Fatal(err)
	}
}

func fileHash(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// A recipient appended to the vault's master record with plain SQL: every
// command that opens the vault fails with one clear line (exit 1) and
// writes nothing; key rotate --data and backup refuse; doctor reports it.
func TestTamperedRecipientIsRefused(t *testing.T) {
	c := newCLI(t)
	c.MustRun("", "init")
	c.MustRun("sk-ant-api03-TESTONLY-vaultmac-0000000000\n", "accounts", "add", "pool", "--api-key-stdin")
	stranger, _ := age.GenerateX25519Identity()
	c.tamper(`UPDATE master SET recipients = recipients || char(10) || ?`, stranger.Recipient().String())
	vaultFile := filepath.Join(c.dir, "data", "vault.db")
	before := fileHash(t, vaultFile)

	for _, args := range [][]string{
		{"key", "rotate", "--data", "--yes"},
		{"key", "rotate", "--data-only", "--yes"},
		{"payload", "export"},
		{"key", "recipient"},
		{"init"},
	} {
		out, errs, code := c.Run("", args...)
		lines := strings.Split(strings.TrimSpace(errs), "\n")
		if code != 1 || !strings.HasPrefix(lines[0], "claudeflare: ") || !strings.Contains(lines[0], "vault metadata failed authentication") {
			t.Fatalf("%v: exit %d, stderr %q", args, code, errs)
		}
		if strings.Contains(out, stranger.Recipient().String()) {
			t.Fatalf("%v printed the stranger's recipient: %q", args, out)
		}
	}
	backupFile := filepath.Join(c.dir, "backup.age")
	_, errs, code := c.Run("", "backup", backupFile)
	if code != 1 || !strings.Contains(errs, "vault metadata failed authentication") {
		t.Fatalf("backup of a tampered vault: exit %d, %q", code, errs)
	}
	if _, err := os.Stat(backupFile); err == nil {
		t.Fatal("a backup file was written")
	}
	if fileHash(t, vaultFile) != before {
		t.Fatal("vault.db changed")
	}
	out, _, code := c.Run("", "doctor")
	if code != 1 || !strings.Contains(out, "vault_mac") || !strings.Contains(out, "failed authentication") {
		t.Fatalf("doctor: exit %d\n%s", code, out)
	}
}

// A legitimate rotation of each kind keeps the vault's MACs valid.
func TestRotationsKeepVaultMAC(t *testing.T) {
	c := newCLI(t)
	c.MustRun("", "init")
	glass, _ := age.GenerateX25519Identity()
	c.MustRun("", "key", "rotate", "--yes", "--data")
	c.MustRun("", "key", "rotate", "--yes", "--add-recipient", glass.Recipient().String())
	c.MustRun("", "key", "rotate", "--yes", "--data-only")
	out, _, code := c.Run("", "doctor")
	if code != 0 || !strings.Contains(out, "vault_mac") {
		t.Fatalf("doctor: exit %d\n%s", code, out)
	}
}

// key rotate warns that older backups need the old key; --keep-old FILE
// writes it (0600), refusing an existing FILE before anything changes.
func TestKeyRotateKeepOld(t *testing.T) {
	c := newCLI(t)
	c.MustRun("", "init")
	idFile := filepath.Join(c.dir, "data", "identity.txt")
	_, errs, code := c.Run("", "key", "rotate", "--yes")
	if code != 0 || !strings.Contains(errs, "backups made before this rotation") || !strings.Contains(errs, "--keep-old") {
		t.Fatalf("exit %d, stderr %q", code, errs)
	}

	old := fileHash(t, idFile)
	taken := filepath.Join(c.dir, "taken.txt")
	os.WriteFile(taken, []byte("mine"), 0o600)
	if _, errs, code := c.Run("", "key", "rotate", "--yes", "--keep-old", taken); code == 0 || !strings.Contains(errs, "already exists") {
		t.Fatalf("existing file: exit %d, %q", code, errs)
	}
	if fileHash(t, idFile) != old || fileHash(t, taken) != "mine" {
		t.Fatal("a refused rotation changed a file")
	}
	if _, errs, code := c.Run("", "key", "rotate", "--yes", "--data-only", "--keep-old", filepath.Join(c.dir, "x")); code != 2 {
		t.Fatalf("--data-only --keep-old: exit %d, %q", code, errs)
	}

	keep := filepath.Join(c.dir, "old-identity.txt")
	_, errs, code = c.Run("", "key", "rotate", "--yes", "--keep-old", keep)
	if code != 0 || !strings.Contains(errs, keep) {
		t.Fatalf("exit %d, stderr %q", code, errs)
	}
	st, err := os.Stat(keep)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("kept identity: %v", err)
	}
	secret := old[strings.Index(old, "AGE-SECRET-KEY-"):]
	if !strings.Contains(fileHash(t, keep), strings.TrimSpace(secret)) {
		t.Fatal("the kept file does not hold the previous identity")
	}
}

// New passphrases must be strong enough; nothing is made otherwise.
func TestWeakNewPassphrase(t *testing.T) {
	c := newCLI(t)
	env := c.Env
	c.Env = append(env, "CLAUDEFLARE_PASSPHRASE=hunter2")
	_, errs, code := c.Run("", "init")
	if code != 2 || !strings.Contains(errs, "too weak") || strings.Contains(errs, "hunter2") {
		t.Fatalf("init: exit %d, %q", code, errs)
	}
	if _, err := os.Stat(filepath.Join(c.dir, "data", "identity.txt")); err == nil {
		t.Fatal("an identity was made")
	}
	c.Env = env
	c.MustRun("", "init")
	c.Env = append(env, "CLAUDEFLARE_PASSPHRASE_NEW=aaaaaaaaaaaaaaaaaaaa")
	if _, errs, code := c.Run("", "key", "rotate", "--yes", "--to-passphrase"); code != 2 || !strings.Contains(errs, "too weak") {
		t.Fatalf("rotate: exit %d, %q", code, errs)
	}
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

// A data dir made by the previous release opens with this one: the first
// command that opens the vault adds its MACs and says so on stderr with
// the recipients it sealed; later ones say nothing; doctor is content.
func TestUpgradeV1VaultMAC(t *testing.T) {
	c := newCLI(t)
	recipient := c.copyV1Data()

	out, errs, code := c.Run("", "init")
	if code != 0 || strings.TrimSpace(out) != recipient {
		t.Fatalf("init: exit %d, stdout %q, stderr %q", code, out, errs)
	}
	if !strings.Contains(errs, "earlier release") || !strings.Contains(errs, "recipients sealed: "+recipient) {
		t.Fatalf("first open does not say it sealed the vault: %q", errs)
	}
	if _, errs, _ := c.Run("", "init"); strings.Contains(errs, "earlier release") {
		t.Fatalf("second open: %q", errs)
	}
	out, _, code = c.Run("", "doctor")
	if code != 0 || !strings.Contains(out, "vault_mac") {
		t.Fatalf("doctor: exit %d\n%s", code, out)
	}
	c.MustRun("", "key", "rotate", "--yes", "--data")
	out, _, code = c.Run("", "doctor")
	if code != 0 {
		t.Fatalf("doctor after key rotate --data: exit %d\n%s", code, out)
	}
}

// A break-glass recipient's key cannot run the proxy's commands (it cannot
// check the vault's MACs) but can replace a lost master key.
func TestBreakGlassKeyRecovers(t *testing.T) {
	c := newCLI(t)
	c.MustRun("", "init")
	glass, _ := age.GenerateX25519Identity()
	c.MustRun("", "key", "rotate", "--yes", "--add-recipient", glass.Recipient().String())
	os.Remove(filepath.Join(c.dir, "data", "identity.txt"))
	env := c.Env
	c.Env = append(env, "CLAUDEFLARE_ENCRYPTION_KEY="+glass.String())
	_, errs, code := c.Run("", "payload", "export")
	if code != 1 || !strings.Contains(errs, "break-glass") || !strings.Contains(errs, "hint: ") {
		t.Fatalf("export with the break-glass key: exit %d, %q", code, errs)
	}
	newID := filepath.Join(c.dir, "new-identity.txt")
	if _, errs, code := c.Run("", "key", "rotate", "--yes", "--data", "--to-identity", newID); code != 0 {
		t.Fatalf("recovery: exit %d, %q", code, errs)
	}
	c.Env = append(env, "CLAUDEFLARE_IDENTITY_FILE="+newID)
	out, errs, code := c.Run("", "doctor")
	if code != 0 || !strings.Contains(out, "vault_mac") {
		t.Fatalf("doctor after recovery: exit %d\n%s\n%s", code, out, errs)
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
