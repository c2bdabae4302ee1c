package store

import (
	"context"
	"errors"
	"net/url"
	"strings"

	"github.com/jmoiron/sqlx"
)

// OpenReadOnly opens the database at path with one read-only handle
// (mode=ro) that never creates, migrates or writes anything: for checking
// a database (doctor, a backup, an unpacked restore) that may be damaged,
// of another version, or in use by a daemon. W and R are that handle.
func OpenReadOnly(path string) (*DB, error) {
	if !CGOEnabled() {
		return nil, errors.New("sqlite driver unavailable: build with CGO_ENABLED=1")
	}
	v := url.Values{}
	v.Set("mode", "ro")
	v.Set("_busy_timeout", "10000")
	db, err := sqlx.Open("sqlite3", "file:"+escapePath(path)+"?"+v.Encode())
	if err != nil {
		return nil, err
	}
	db.SetMaxOpenConns(1)
	if err := db.Ping(); err != nil {
		db.Close()
		return nil, err
	}
	return &DB{W: db, R: db, Path: path}, nil
}

// IntegrityCheck runs PRAGMA integrity_check. It returns nil for a sound
// database, and an error listing (in one line) what SQLite found wrong.
func (db *DB) IntegrityCheck(ctx context.Context) error {
	var rows []string
	if err := db.R.SelectContext(ctx, &rows, "PRAGMA integrity_check"); err != nil {
		return err
	}
	if len(rows) == 1 && rows[0] == "ok" {
		return nil
	}
	return &IntegrityError{Problems: rows}
}

// IntegrityError lists the problems PRAGMA integrity_check found.
type IntegrityError struct {
	Problems []string
}

func (e *IntegrityError) Error() string {
	return "integrity check: " + strings.Join(e.Problems, "; ")
}
