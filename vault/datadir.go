package vault

import (
	"github.com/claudeflare/claudeflare/internal/statefile"
)

// EnsureDataDir creates dir with mode 0700 if needed and tightens it if it
// is more open, then checks it as ssh checks ~/.ssh: the directory and
// every state file in it (vault.db, log.db and their -wal and -shm,
// identity.txt, daemon.lock) must belong to the user running claudeflare;
// a state file must be a regular file, not a symbolic link, and not open
// to group or others. A problem is a *statefile.Error with a hint; nothing
// is changed then.
func EnsureDataDir(dir string) error {
	if err := statefile.EnsureDir(dir); err != nil {
		return err
	}
	return statefile.CheckFiles(dir)
}
