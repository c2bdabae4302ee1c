package statefile

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"github.com/claudeflare/claudeflare/internal/fsutil"
)

// LockName is the file in the data dir a running daemon holds an
// exclusive flock on (and a restore takes, to refuse a running daemon).
const LockName = "daemon.lock"

// ErrLocked: another process (a daemon) holds the data dir's lock.
var ErrLocked = fsutil.ErrLocked

// LockDataDir takes the exclusive lock on <dir>/daemon.lock without
// waiting, opening the file as OpenFile does (never through a link).
// It returns ErrLocked when another process holds it. Closing the
// returned file releases the lock.
func LockDataDir(dir string) (*os.File, error) {
	f, err := OpenFile(filepath.Join(dir, LockName), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open lock file: %w", err)
	}
	if err := fsutil.TryLock(f, true); err != nil {
		f.Close()
		if errors.Is(err, ErrLocked) {
			return nil, ErrLocked
		}
		return nil, fmt.Errorf("lock data dir: %w", err)
	}
	return f, nil
}

// DataDirLocked reports whether a process holds <dir>/daemon.lock.
// It creates nothing.
func DataDirLocked(dir string) (bool, error) {
	f, err := os.OpenFile(filepath.Join(dir, LockName), os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	defer f.Close()
	err = fsutil.TryLock(f, false)
	if errors.Is(err, ErrLocked) {
		return true, nil
	}
	if err != nil {
		return false, err
	}
	fsutil.Unlock(f)
	return false, nil
}
