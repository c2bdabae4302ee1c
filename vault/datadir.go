package vault

import (
	"fmt"
	"os"
)

// EnsureDataDir creates dir with mode 0700 if needed and tightens it if it
// is more open.
func EnsureDataDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create data dir: %w", err)
	}
	st, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("stat data dir: %w", err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		if err := os.Chmod(dir, 0o700); err != nil {
			return fmt.Errorf("restrict data dir: %w", err)
		}
	}
	return nil
}
