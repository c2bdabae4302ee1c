//go:build !cgo

package store

const cgoEnabled = false

// IsUnique reports whether err is a UNIQUE constraint violation.
func IsUnique(err error) bool { return false }

// IsBusy reports whether err is SQLite's "database is locked" or "busy".
func IsBusy(err error) bool { return false }
