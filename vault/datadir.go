package vault

import (
	"github.com/claudeflare/claudeflare/internal/statefile"
)

// EnsureDataDir creates dir with mode 0700 if needed and tightens it if it
// is more open, then checks it as ssh checks ~/.ssh: the directory,
// identity.txt and daemon.lock must belong to the user running
// claudeflare, and a file must be a regular file, not a symbolic link
// (and daemon.lock not open to group or others; the key's mode is checked
// where it is read). The databases and their -wal and -shm get the same
// checks when store.Open opens them. A problem is a *statefile.Error with
// a hint; nothing is changed then.
func EnsureDataDir(dir string) error {
	if err := statefile.EnsureDir(dir); err != nil {
		return err
	}
	return statefile.CheckFiles(dir)
}
