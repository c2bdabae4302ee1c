//go:build !unix

package vault

// LockFileName is the lock a key rotation holds in the data dir.
const LockFileName = "key-rotate.lock"

// lockRotation is a no-op where flock is not available: run one key
// rotation at a time.
func lockRotation(dir string) (unlock func(), err error) {
	return func() {}, nil
}
