package doctor_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/claudeflare/claudeflare/doctor"
)

// TestFilesOwnershipLinksAndModes: doctor reports, one result each, a
// state file that is a symbolic link, one open to others, one of another
// user, and a data dir of another user (issue 11, item 7); a healthy data
// dir gets one ok.
func TestFilesOwnershipLinksAndModes(t *testing.T) {
	dir := setup(t)
	rs := run(t, doctor.Options{DataDir: dir})
	expect(t, rs, "files", doctor.OK, "not links, not open to others", "")

	victim := filepath.Join(t.TempDir(), "victim")
	os.WriteFile(victim, []byte("x"), 0o600)
	lock := filepath.Join(dir, "daemon.lock")
	if err := os.Symlink(victim, lock); err != nil {
		t.Fatal(err)
	}
	logDB := filepath.Join(dir, "log.db")
	os.Chmod(logDB, 0o644)
	rs = run(t, doctor.Options{DataDir: dir})
	if doctor.Problems(rs) == 0 {
		t.Fatalf("problems not reported:\n%s", dump(rs))
	}
	expect(t, rs, "files", doctor.Error, lock+" is a symbolic link", "rm "+lock)
	expect(t, rs, "files", doctor.Error, logDB+" is open to group or others (mode 0644)", "chmod 600 "+logDB)
	if b, _ := os.ReadFile(victim); string(b) != "x" {
		t.Errorf("the link's target changed: %q", b)
	}

	vaultDB := filepath.Join(dir, "vault.db")
	if err := os.Chown(vaultDB, 65534, 65534); err != nil {
		if os.Geteuid() != 0 {
			t.Skip("not root and chown failed: cannot make a file of another user")
		}
		t.Fatal(err)
	}
	if err := os.Chown(dir, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	rs = run(t, doctor.Options{DataDir: dir})
	expect(t, rs, "files", doctor.Error, "data dir "+dir+" is owned by ", "the data dir is owned by ")
	expect(t, rs, "files", doctor.Error, vaultDB+" is owned by ", "vault.db is owned by ")
	for _, r := range find(rs, "files") {
		if r.Status == doctor.Error && r.Hint == "" {
			t.Errorf("no hint: %+v", r)
		}
	}
}
