package fsutil

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// onlyFiles fails unless dir holds exactly the names given (no temp file left).
func onlyFiles(t *testing.T, dir string, names ...string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range ents {
		got = append(got, e.Name())
	}
	if strings.Join(got, ",") != strings.Join(names, ",") {
		t.Fatalf("dir holds %v, want %v", got, names)
	}
}

func TestWriteFileReplacesWithModeAndLeavesNoTemp(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "f")
	if err := os.WriteFile(p, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := WriteFile(p, []byte("new"), 0o600); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(p)
	fi, _ := os.Stat(p)
	if string(b) != "new" || fi.Mode().Perm() != 0o600 {
		t.Fatalf("got %q mode %o", b, fi.Mode().Perm())
	}
	onlyFiles(t, dir, "f")
}

func TestWriteFileExclusiveRefusesExisting(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "f")
	if err := WriteFileExclusive(p, []byte("one"), 0o600); err != nil {
		t.Fatal(err)
	}
	err := WriteFileExclusive(p, []byte("two"), 0o600)
	if err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Fatalf("second write: %v, want already exists", err)
	}
	if b, _ := os.ReadFile(p); string(b) != "one" {
		t.Fatalf("existing file changed to %q", b)
	}
	onlyFiles(t, dir, "f")
}

func TestAbortLeavesTargetUntouched(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "f")
	f, err := Create(p, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("half")
	f.Abort()
	f.Abort() // twice is fine
	onlyFiles(t, dir)
}

func TestTryLockConflicts(t *testing.T) {
	p := filepath.Join(t.TempDir(), "lock")
	a, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if err := TryLock(a, true); err != nil {
		t.Fatal(err)
	}
	if err := TryLock(b, false); !errors.Is(err, ErrLocked) {
		t.Fatalf("shared lock while held exclusively: %v, want ErrLocked", err)
	}
	Unlock(a)
	if err := TryLock(b, false); err != nil {
		t.Fatalf("after unlock: %v", err)
	}
}
