package testutil

import (
	"os"
	"path/filepath"
	"runtime"
	"testing"
)

// FirstReleaseFile reads a file of testdata/upgrade/v1, what the first
// release made (see its README): "backup.age", "client-keys.txt",
// "data/vault.db", ...
func FirstReleaseFile(t testing.TB, name string) []byte {
	t.Helper()
	_, here, _, _ := runtime.Caller(0)
	b, err := os.ReadFile(filepath.Join(filepath.Dir(here), "..", "..", "testdata", "upgrade", "v1", filepath.FromSlash(name)))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// FirstReleaseDataDir copies the data dir made by the first release
// (testdata/upgrade/v1/data) to a new "data" dir under t.TempDir() with
// the private modes a data dir has (a git checkout gives them 0644) and
// returns its path.
func FirstReleaseDataDir(t testing.TB) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "data")
	CopyFirstRelease(t, dir)
	return dir
}

// CopyFirstRelease copies the first release's data dir into dir (made
// 0700 if absent; files 0600).
func CopyFirstRelease(t testing.TB, dir string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"vault.db", "log.db", "identity.txt"} {
		if err := os.WriteFile(filepath.Join(dir, f), FirstReleaseFile(t, "data/"+f), 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// WriteFirstReleaseFile writes a file of testdata/upgrade/v1 to dst, 0600.
func WriteFirstReleaseFile(t testing.TB, name, dst string) {
	t.Helper()
	if err := os.WriteFile(dst, FirstReleaseFile(t, name), 0o600); err != nil {
		t.Fatal(err)
	}
}
