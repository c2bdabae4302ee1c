//go:build unix

package vault

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
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
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, ErrRotationRunning
		}
		return nil, fmt.Errorf("take rotation lock: %w", err)
	}
	return func() {
		syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}, nil
}
