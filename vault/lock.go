package vault

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/claudeflare/claudeflare/internal/fsutil"
)

// LockFileName is the lock a key rotation holds in the data dir. It stays
// on disk; the lock is the flock on it, which a crash releases.
const LockFileName = "key-rotate.lock"

// lockRotation takes the rotation lock in dir without waiting.
func lockRotation(dir string) (unlock func(), err error) {
	f, err := os.OpenFile(filepath.Join(dir, LockFileName), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open rotation lock: %w", err)
	}
	if err := fsutil.TryLock(f, true); err != nil {
		f.Close()
		if errors.Is(err, fsutil.ErrLocked) {
			return nil, ErrRotationRunning
		}
		return nil, fmt.Errorf("take rotation lock: %w", err)
	}
	return func() {
		fsutil.Unlock(f)
		f.Close()
	}, nil
}
