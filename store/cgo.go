//go:build cgo

package store

import (
	"errors"

	"github.com/mattn/go-sqlite3"
)

const cgoEnabled = true

// IsUnique reports whether err is a UNIQUE constraint violation.
func IsUnique(err error) bool {
	var se sqlite3.Error
	return errors.As(err, &se) && se.ExtendedCode == sqlite3.ErrConstraintUnique
}

// IsBusy reports whether err is SQLite's "database is locked" or "busy":
// another connection held the lock past the busy timeout.
func IsBusy(err error) bool {
	var se sqlite3.Error
	return errors.As(err, &se) && (se.Code == sqlite3.ErrBusy || se.Code == sqlite3.ErrLocked)
}
