package backup_test

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/claudeflare/claudeflare/backup"
)

// TestLockDataDirRefusesALink: a daemon.lock planted as a symbolic link is
// refused, and the file it points to is left byte-identical (issue 11,
// item 7).
func TestLockDataDirRefusesALink(t *testing.T) {
	dir := t.TempDir()
	victim := filepath.Join(t.TempDir(), "victim")
	orig := []byte("precious\n")
	os.WriteFile(victim, orig, 0o600)
	lock := filepath.Join(dir, backup.LockFile)
	if err := os.Symlink(victim, lock); err != nil {
		t.Fatal(err)
	}
	unlock, err := backup.LockDataDir(dir)
	if err == nil {
		unlock()
		t.Fatal("locked through a symbolic link")
	}
	if strings.Contains(err.Error(), "\n") || !strings.Contains(err.Error(), lock+" is a symbolic link") {
		t.Errorf("error %q", err)
	}
	if b, _ := os.ReadFile(victim); !bytes.Equal(b, orig) {
		t.Errorf("the link's target changed: %q", b)
	}
	// Without the link it locks.
	os.Remove(lock)
	unlock, err = backup.LockDataDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	unlock()
	if st, _ := os.Lstat(lock); !st.Mode().IsRegular() || st.Mode().Perm() != 0o600 {
		t.Errorf("lock file %v", st.Mode())
	}
}
