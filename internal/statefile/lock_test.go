package statefile

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// TestDataDirLock: one holder at a time; DataDirLocked sees the holder,
// and creates nothing when there is no lock file.
func TestDataDirLock(t *testing.T) {
	dir := t.TempDir()
	if held, err := DataDirLocked(dir); err != nil || held {
		t.Fatalf("no lock file: held=%v err=%v", held, err)
	}
	if _, err := os.Stat(filepath.Join(dir, LockName)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("DataDirLocked created the lock file: %v", err)
	}
	f, err := LockDataDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := LockDataDir(dir); !errors.Is(err, ErrLocked) {
		t.Fatalf("second lock: %v, want ErrLocked", err)
	}
	if held, err := DataDirLocked(dir); err != nil || !held {
		t.Fatalf("while held: held=%v err=%v", held, err)
	}
	f.Close()
	if held, err := DataDirLocked(dir); err != nil || held {
		t.Fatalf("after release: held=%v err=%v", held, err)
	}
	g, err := LockDataDir(dir)
	if err != nil {
		t.Fatalf("lock after release: %v", err)
	}
	g.Close()
}
