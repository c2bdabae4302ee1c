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
