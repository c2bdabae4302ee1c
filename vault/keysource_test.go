package vault

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"filippo.io/age"
)

// TestKeySourceOrder sets every master key source at once, then drops
// them from the top one by one: each time the highest one left is the
// key used (CONTRACT.md: --identity, CLAUDEFLARE_ENCRYPTION_KEY,
// CLAUDEFLARE_IDENTITY_FILE, CLAUDEFLARE_PASSPHRASE, the systemd
// credential, then the config file's identity_file or identity.txt).
func TestKeySourceOrder(t *testing.T) {
	dir := t.TempDir()
	dataDir := filepath.Join(dir, "data")
	credDir := filepath.Join(dir, "creds")
	newFile := func(path string) string {
		t.Helper()
		r, err := GenerateIdentityFile(path, false)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	flagR := newFile(filepath.Join(dir, "flag.txt"))
	envID, _ := age.GenerateX25519Identity()
	envFileR := newFile(filepath.Join(dir, "envfile.txt"))
	credR := newFile(filepath.Join(credDir, CredentialName))
	configR := newFile(filepath.Join(dir, "config.txt"))
	defaultR := newFile(filepath.Join(dataDir, IdentityFileName))

	steps := []struct {
		name      string
		set       func(*KeySource)
		recipient string // "" for the passphrase
		where     string
	}{
		{"--identity", func(ks *KeySource) { ks.IdentityFlag = filepath.Join(dir, "flag.txt") }, flagR, "flag.txt"},
		{"CLAUDEFLARE_ENCRYPTION_KEY", func(ks *KeySource) { ks.EncryptionKey = envID.String() }, envID.Recipient().String(), "CLAUDEFLARE_ENCRYPTION_KEY"},
		{"CLAUDEFLARE_IDENTITY_FILE", func(ks *KeySource) { ks.IdentityFile = filepath.Join(dir, "envfile.txt") }, envFileR, "envfile.txt"},
		{"CLAUDEFLARE_PASSPHRASE", func(ks *KeySource) { ks.Passphrase = "correct horse battery" }, "", "CLAUDEFLARE_PASSPHRASE"},
		{"credential", func(ks *KeySource) { ks.CredentialsDir = credDir }, credR, CredentialName},
		{"config identity_file", func(ks *KeySource) { ks.ConfigIdentityFile = filepath.Join(dir, "config.txt") }, configR, "config.txt"},
		{"identity.txt", func(ks *KeySource) {}, defaultR, IdentityFileName},
	}
	for i, want := range steps {
		ks := KeySource{DataDir: dataDir}
		for _, s := range steps[i:] {
			s.set(&ks)
		}
		m, err := ks.load(false, false)
		if err != nil {
			t.Fatalf("from %s on: %v", want.name, err)
		}
		if !strings.Contains(m.where, want.where) {
			t.Errorf("from %s on: key from %q, want %s", want.name, m.where, want.where)
		}
		got := strings.Join(m.recipientStrings(), ",")
		if got != want.recipient || (want.recipient == "") != (m.kind() == MasterPassphrase) {
			t.Errorf("from %s on: recipient %q (%s), want %q", want.name, got, m.kind(), want.recipient)
		}
		// Identities, which opens backups, follows the same order.
		ids, err := ks.Identities()
		if err != nil || len(ids) == 0 {
			t.Fatalf("from %s on: Identities: %v", want.name, err)
		}
	}
}

// Resolve keeps only the source that wins, so callers that look at the
// fields (is the key a passphrase?) see the one in use.
func TestResolveKeepsTheWinner(t *testing.T) {
	credDir := t.TempDir()
	full := KeySource{IdentityFlag: "/flag", EncryptionKey: "AGE-SECRET-KEY-1X", IdentityFile: "/env",
		Passphrase: "p", CredentialsDir: credDir, ConfigIdentityFile: "/config", DataDir: "/data"}
	if got := full.Resolve(); got != (KeySource{IdentityFile: "/flag", DataDir: "/data"}) {
		t.Errorf("with --identity: %+v", got)
	}
	full.IdentityFlag = ""
	if got := full.Resolve(); got != (KeySource{EncryptionKey: "AGE-SECRET-KEY-1X", DataDir: "/data"}) {
		t.Errorf("with the env key: %+v", got)
	}
	// A credentials directory without our credential is no source.
	low := KeySource{CredentialsDir: credDir, ConfigIdentityFile: "/config", DataDir: "/data"}
	if got := low.Resolve(); got != (KeySource{IdentityFile: "/config", DataDir: "/data"}) {
		t.Errorf("no credential: %+v", got)
	}
	if err := os.WriteFile(filepath.Join(credDir, CredentialName), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if got := low.Resolve(); got != (KeySource{CredentialsDir: credDir, DataDir: "/data"}) {
		t.Errorf("credential: %+v", got)
	}
	if got := (KeySource{DataDir: "/data"}).Resolve(); got != (KeySource{DataDir: "/data"}) {
		t.Errorf("nothing set: %+v", got)
	}
}
