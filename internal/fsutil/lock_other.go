//go:build !unix

package fsutil

import (
	"errors"
	"os"
)

// ErrLocked is returned by TryLock when another process holds the lock.
var ErrLocked = errors.New("locked by another process")

// TryLock is a no-op where flock is not available.
func TryLock(f *os.File, exclusive bool) error { return nil }

// Unlock is a no-op where flock is not available.
func Unlock(f *os.File) {}
