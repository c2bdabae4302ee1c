package commands_test

import (
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"filippo.io/age"

	"github.com/claudeflare/claudeflare/store"
)

// Issue 11 item 14, with a master rotation the previous release left half
// done: key rotate finishes it, and the audit log made by that release is
// then keyed (not reported as replaced or wiped), and its client keys
// keep working.
func TestUpgradeV1InterruptedRotationKeepsAuditLog(t *testing.T) {
	c := newCLI(t)
	c.copyV1Data()
	next, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	// What the previous release's `key rotate` left when it stopped after
	// recording the incoming master (no wraps to it yet).
	db, err := store.OpenVault(filepath.Join(c.dir, "data"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.W.Exec(`UPDATE master SET next_kind = 'identity', next_recipients = ? WHERE id = 1`, next.Recipient().String()); err != nil {
		t.Fatal(err)
	}
	db.Close()

	_, errs, code := c.Run("", "key", "rotate")
	if code != 0 || !strings.Contains(errs, "finished an interrupted key rotation first") {
		t.Fatalf("key rotate: exit %d\n%s", code, errs)
	}
	for _, bad := range []string{"tampered", "replaced", "failed authentication", "restarted"} {
		if strings.Contains(errs, bad) {
			t.Errorf("key rotate says %q:\n%s", bad, errs)
		}
	}
	if !strings.Contains(errs, "the audit log made by an earlier release (3 entries) verified as a plain hash chain; it is now keyed") {
		t.Errorf("the legacy log was not keyed:\n%s", errs)
	}
	out, errs, code := c.Run("", "audit", "--verify")
	if code != 0 {
		t.Fatalf("audit --verify: exit %d\n%s\n%s", code, out, errs)
	}
	out = c.MustRun("", "apikey", "list")
	for _, re := range []string{`(?m)^laptop\s+\S+\s+api\s+live\s`, `(?m)^viewer1\s+\S+\s+viewer\s+live\s`} {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Errorf("apikey list does not match %s:\n%s", re, out)
		}
	}
	if out, _, code := c.Run("", "doctor"); code != 0 {
		t.Fatalf("doctor: exit %d\n%s", code, out)
	}
}
