package commands_test

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"filippo.io/age"
)

// Restoring an older backup after key rotate --keep-old is tested as a
// transcript in testdata/script/restore_rotated.txtar, the first release's
// backup in first_release.txtar.

// forgeBackup builds what the attacker built: an archive holding
// their own vault.db and identity.txt and no request log, with a manifest
// of the given format (and no MAC: they cannot make one), encrypted to
// the victim's public recipient.
func forgeBackup(t *testing.T, attackerData, recipient, format string) string {
	t.Helper()
	snap := filepath.Join(t.TempDir(), "vault.db")
	db, err := sql.Open("sqlite3", filepath.Join(attackerData, "vault.db"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`VACUUM INTO ?`, snap); err != nil {
		t.Fatal(err)
	}
	db.Close()
	files := map[string][]byte{}
	files["vault.db"], _ = os.ReadFile(snap)
	files["identity.txt"], _ = os.ReadFile(filepath.Join(attackerData, "identity.txt"))
	type file struct {
		Name   string `json:"name"`
		Size   int64  `json:"size"`
		SHA256 string `json:"sha256"`
	}
	m := struct {
		Format     string    `json:"format"`
		CreatedAt  time.Time `json:"created_at"`
		MasterKind string    `json:"master_kind"`
		Files      []file    `json:"files"`
	}{Format: format, CreatedAt: time.Now().UTC(), MasterKind: "identity"}
	names := []string{"vault.db", "identity.txt"}
	for _, n := range names {
		s := sha256.Sum256(files[n])
		m.Files = append(m.Files, file{n, int64(len(files[n])), hex.EncodeToString(s[:])})
	}
	mb, _ := json.Marshal(m)
	r, err := age.ParseX25519Recipient(recipient)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	aw, _ := age.Encrypt(&out, r)
	tw := tar.NewWriter(aw)
	put := func(name string, b []byte) {
		tw.WriteHeader(&tar.Header{Name: name, Mode: 0o600, Size: int64(len(b)), Typeflag: tar.TypeReg})
		tw.Write(b)
	}
	put("manifest.json", mb)
	for _, n := range names {
		put(n, files[n])
	}
	tw.Close()
	aw.Close()
	path := filepath.Join(t.TempDir(), "forged.age")
	if err := os.WriteFile(path, out.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// dirState is what a restore must not change: the identity, whether the
// request log is there, and the client keys.
func dirState(t *testing.T, c *runner) string {
	t.Helper()
	id, _ := os.ReadFile(filepath.Join(c.dir, "data", "identity.txt"))
	_, logErr := os.Stat(filepath.Join(c.dir, "data", "log.db"))
	return string(id) + "|log " + map[bool]string{true: "present", false: "absent"}[logErr == nil] + "|" + c.MustRun("", "apikey", "list", "--json")
}

// Issue 11 item 5: an archive built by someone else and encrypted to the
// public recipient no longer restores (even with --force), installs no
// identity or client key, and removes nothing.
func TestRestoreRefusesForgedBackup(t *testing.T) {
	c := newCLI(t)
	c.MustRun("", "init")
	c.MustRun("", "apikey", "create", "laptop")
	c.MustRun("", "accounts", "list") // the request log exists
	recipient := strings.TrimSpace(c.MustRun("", "key", "recipient"))

	attacker := newCLI(t)
	attacker.MustRun("", "init")
	attacker.MustRun("", "apikey", "create", "mallory", "--role", "admin")
	before := dirState(t, c)

	forged := forgeBackup(t, filepath.Join(attacker.dir, "data"), recipient, "claudeflare-backup/2")
	_, errs, code := c.Run("", "restore", "--force", forged)
	if code != 1 || !strings.Contains(errs, "claudeflare: the backup is not authenticated by the master key") ||
		!strings.Contains(errs, "hint: do not restore it") {
		t.Fatalf("forged backup: exit %d %s", code, errs)
	}
	// Dressed as a backup of the first release: refused without the flag ...
	old := forgeBackup(t, filepath.Join(attacker.dir, "data"), recipient, "claudeflare-backup/1")
	_, errs, code = c.Run("", "restore", "--force", old)
	if code != 1 || !strings.Contains(errs, "made by an earlier release and carries no authentication") ||
		!strings.Contains(errs, "hint: ") || !strings.Contains(errs, "--allow-unauthenticated") {
		t.Fatalf("forged old-format backup: exit %d %s", code, errs)
	}
	// ... and even with it, its identity does not replace the data dir's.
	_, errs, code = c.Run("", "restore", "--force", "--allow-unauthenticated", old)
	if code != 1 || !strings.Contains(errs, "different from the data dir's identity.txt") || !strings.Contains(errs, "--replace-identity") {
		t.Fatalf("forged old-format backup with the flag: exit %d %s", code, errs)
	}
	if after := dirState(t, c); after != before {
		t.Fatalf("a refused restore changed the data dir:\n%s\n%s", before, after)
	}
	// A genuine backup still restores over it with --force.
	file := filepath.Join(c.dir, "real.age")
	c.MustRun("", "backup", file)
	if _, errs, code := c.Run("", "restore", "--force", file); code != 0 || !strings.Contains(errs, "master recipients: "+recipient) {
		t.Fatalf("genuine backup: exit %d %s", code, errs)
	}
}
