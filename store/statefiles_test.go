package store

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestOpenRefusesUnsafeFiles: before SQLite opens anything by name, the
// database file and its -wal and -shm are checked: a symbolic link is
// refused and its target left byte-identical, a file open to group or
// others is refused (not silently fixed), another user's file is refused
// (issue 11, item 7).
func TestOpenRefusesUnsafeFiles(t *testing.T) {
	target := func(t *testing.T) (string, []byte) {
		p := filepath.Join(t.TempDir(), "elsewhere")
		orig := []byte("someone else's file\n")
		if err := os.WriteFile(p, orig, 0o600); err != nil {
			t.Fatal(err)
		}
		return p, orig
	}
	oneLine := func(t *testing.T, err error, want string) {
		t.Helper()
		if err == nil {
			t.Fatal("opened")
		}
		if strings.Contains(err.Error(), "\n") || !strings.Contains(err.Error(), want) {
			t.Errorf("error %q: want one line with %q", err, want)
		}
	}

	for _, name := range []string{VaultFile, VaultFile + "-wal", VaultFile + "-shm"} {
		t.Run("link "+name, func(t *testing.T) {
			dir := t.TempDir()
			victim, orig := target(t)
			if err := os.Symlink(victim, filepath.Join(dir, name)); err != nil {
				t.Fatal(err)
			}
			db, err := OpenVault(dir)
			if err == nil {
				db.Close()
			}
			oneLine(t, err, filepath.Join(dir, name)+" is a symbolic link")
			if got, _ := os.ReadFile(victim); !bytes.Equal(got, orig) {
				t.Errorf("the link's target changed: %q", got)
			}
			for _, suffix := range []string{"-wal", "-shm", "-journal"} {
				if _, err := os.Stat(victim + suffix); err == nil {
					t.Errorf("SQLite made %s next to the link's target", victim+suffix)
				}
			}
		})
	}

	t.Run("open to others", func(t *testing.T) {
		dir := t.TempDir()
		db, err := OpenVault(dir)
		if err != nil {
			t.Fatal(err)
		}
		db.Close()
		p := filepath.Join(dir, VaultFile)
		os.Chmod(p, 0o644)
		db, err = OpenVault(dir)
		if err == nil {
			db.Close()
		}
		oneLine(t, err, p+" is open to group or others (mode 0644)")
		if st, _ := os.Stat(p); st.Mode().Perm() != 0o644 {
			t.Errorf("mode silently changed to %04o", st.Mode().Perm())
		}
	})

	t.Run("another user's", func(t *testing.T) {
		dir := t.TempDir()
		db, err := OpenLog(dir)
		if err != nil {
			t.Fatal(err)
		}
		db.Close()
		p := filepath.Join(dir, LogFile)
		if err := os.Chown(p, 65534, 65534); err != nil {
			if os.Geteuid() != 0 {
				t.Skip("not root and chown failed: cannot make a file of another user")
			}
			t.Fatal(err)
		}
		db, err = OpenLog(dir)
		if err == nil {
			db.Close()
		}
		oneLine(t, err, p+" is owned by ")
		if !strings.Contains(err.Error(), "uid 65534") {
			t.Errorf("error %q does not name the owner", err)
		}
	})
}
