package store

import "testing"

// TestSynchronous: the vault syncs its write-ahead log at every commit (a
// rotated refresh token must survive a power loss); the request log does
// not need to.
func TestSynchronous(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		open func(string) (*DB, error)
		want int
	}{{OpenVault, 2}, {OpenLog, 1}} {
		db, err := c.open(dir)
		if err != nil {
			t.Fatal(err)
		}
		var got int
		if err := db.W.Get(&got, "PRAGMA synchronous"); err != nil {
			t.Fatal(err)
		}
		if got != c.want {
			t.Errorf("%s: synchronous = %d, want %d", db.Path, got, c.want)
		}
		db.Close()
	}
}
