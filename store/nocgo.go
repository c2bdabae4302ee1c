//go:build !cgo

package store

const cgoEnabled = false

// IsUnique reports whether err is a UNIQUE constraint violation.
func IsUnique(err error) bool { return false }
