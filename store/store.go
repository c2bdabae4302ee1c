// Package store opens claudeflare's SQLite databases and holds their typed
// queries. There are two files in the data directory: vault.db (accounts,
// sealed secrets, keys) and log.db (the request log and sealed payloads),
// kept apart so that log maintenance never blocks a token write.
package store

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/jmoiron/sqlx"
	_ "github.com/mattn/go-sqlite3" // registers the sqlite3 driver

	"github.com/claudeflare/claudeflare/internal/statefile"
)

//go:embed migrations
var migrations embed.FS

// File names inside the data directory.
const (
	VaultFile = "vault.db"
	LogFile   = "log.db"
)

// ErrTooNew is returned when a database was written by a newer claudeflare.
var ErrTooNew = errors.New("database schema is newer than this binary")

// DB is one SQLite file: a single writer connection and a read-only pool.
type DB struct {
	W    *sqlx.DB // the only connection that writes; BEGIN IMMEDIATE
	R    *sqlx.DB // read-only pool
	Path string
}

// OpenVault opens (creating if needed) <dataDir>/vault.db.
func OpenVault(dataDir string) (*DB, error) {
	return Open(filepath.Join(dataDir, VaultFile), "vault")
}

// OpenLog opens (creating if needed) <dataDir>/log.db.
func OpenLog(dataDir string) (*DB, error) {
	return Open(filepath.Join(dataDir, LogFile), "log")
}

// CGOEnabled reports whether the SQLite driver is usable (it needs cgo).
func CGOEnabled() bool { return cgoEnabled }

// Open opens the database at path with the named migration set, applying
// any pending migrations. The file is created with mode 0600.
func Open(path, schema string) (*DB, error) {
	if !CGOEnabled() {
		return nil, errors.New("sqlite driver unavailable: build with CGO_ENABLED=1")
	}
	if err := ensureFile(path); err != nil {
		return nil, err
	}
	common := url.Values{}
	common.Set("_busy_timeout", "10000")
	common.Set("_foreign_keys", "on")
	common.Set("_journal_mode", "WAL")
	common.Set("_synchronous", "NORMAL")
	if schema == "vault" {
		// A commit to the vault may hold a refresh token the endpoint
		// has just rotated: it must survive a power loss, not only a
		// crash of the process, so the WAL is synced at every commit.
		// Vault writes are rare; the request log keeps NORMAL (a power
		// loss may cost it its last commits, never its integrity).
		common.Set("_synchronous", "FULL")
		// A removed account's sealed tokens, a refresh token replaced by
		// a newer one, a revoked key's hash: SQLite would leave their
		// bytes in free pages and free space inside pages. secure_delete
		// overwrites them with zeros, on every connection of the vault.
		common.Set("_secure_delete", "on")
	}

	wv := url.Values{}
	for k, v := range common {
		wv[k] = v
	}
	wv.Set("_txlock", "immediate")
	w, err := sqlx.Open("sqlite3", "file:"+escapePath(path)+"?"+wv.Encode())
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	w.SetMaxOpenConns(1)
	w.SetMaxIdleConns(1)
	w.SetConnMaxLifetime(0)
	w.SetConnMaxIdleTime(0)
	if err := migrate(w, schema); err != nil {
		w.Close()
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	if schema == "vault" {
		scrubVault(w)
	}

	rv := url.Values{}
	for k, v := range common {
		rv[k] = v
	}
	rv.Set("mode", "ro")
	r, err := sqlx.Open("sqlite3", "file:"+escapePath(path)+"?"+rv.Encode())
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	r.SetMaxOpenConns(8)
	return &DB{W: w, R: r, Path: path}, nil
}

// Close closes both handles.
func (db *DB) Close() error {
	return errors.Join(db.R.Close(), db.W.Close())
}

func escapePath(p string) string {
	return strings.NewReplacer("?", "%3f", "#", "%23").Replace(p)
}

// ensureFile creates the database file 0600 so that SQLite never makes it
// with the process umask; the -wal and -shm files take the same mode.
// Before SQLite opens anything by name, the file, its -wal and its -shm
// are checked (statefile): no symbolic link, no file of another user,
// nothing open to group or others.
func ensureFile(path string) error {
	for _, p := range []string{path + "-wal", path + "-shm"} {
		if err := statefile.Check(p); err != nil {
			return err
		}
	}
	f, err := statefile.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		var se *statefile.Error
		if errors.As(err, &se) {
			return err
		}
		return fmt.Errorf("create database file: %w", err)
	}
	return f.Close()
}

// vaultScrubbed is the application_id of a vault whose free space has
// been overwritten once ("cfsd"): a vault made before secure_delete was
// on keeps the bytes of what was deleted until then.
const vaultScrubbed = 0x63667364

// scrubVault rewrites a vault that has never been scrubbed with VACUUM,
// which leaves no free space behind, and marks it. It is best effort: a
// vault busy in another process or a full disk leave it for the next open.
func scrubVault(db *sqlx.DB) {
	var id int64
	if err := db.Get(&id, "PRAGMA application_id"); err != nil || id == vaultScrubbed {
		return
	}
	if _, err := db.Exec("VACUUM"); err != nil {
		return
	}
	db.Exec(fmt.Sprintf("PRAGMA application_id = %d", vaultScrubbed))
}

// SchemaVersion returns the migration count for the named schema.
func SchemaVersion(schema string) int {
	names, _ := migrationNames(schema)
	return len(names)
}

func migrationNames(schema string) ([]string, error) {
	entries, err := fs.ReadDir(migrations, "migrations/"+schema)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".sql") {
			names = append(names, e.Name())
		}
	}
	sort.Strings(names)
	return names, nil
}

// migrate applies pending migrations in one transaction that reads and sets
// PRAGMA user_version.
func migrate(db *sqlx.DB, schema string) error {
	names, err := migrationNames(schema)
	if err != nil {
		return fmt.Errorf("read migrations: %w", err)
	}
	ctx := context.Background()
	// auto_vacuum must be chosen before the first table exists; setting it
	// on every open would rewrite the header (and change the file) each time.
	var tables int
	if err := db.GetContext(ctx, &tables, `SELECT count(*) FROM sqlite_master`); err != nil {
		return fmt.Errorf("read schema: %w", err)
	}
	if tables == 0 {
		if _, err := db.ExecContext(ctx, `PRAGMA auto_vacuum = INCREMENTAL; VACUUM`); err != nil {
			return fmt.Errorf("set auto_vacuum: %w", err)
		}
	}
	tx, err := db.BeginTxx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin migration: %w", err)
	}
	defer tx.Rollback()
	var version int
	if err := tx.Get(&version, "PRAGMA user_version"); err != nil {
		return fmt.Errorf("read schema version: %w", err)
	}
	if version > len(names) {
		return fmt.Errorf("%w (schema %d, binary knows %d): upgrade claudeflare", ErrTooNew, version, len(names))
	}
	if version == len(names) {
		return nil
	}
	for _, name := range names[version:] {
		body, err := migrations.ReadFile("migrations/" + schema + "/" + name)
		if err != nil {
			return err
		}
		if _, err := tx.Exec(string(body)); err != nil {
			return fmt.Errorf("apply migration %s: %w", name, err)
		}
	}
	if _, err := tx.Exec(fmt.Sprintf("PRAGMA user_version = %d", len(names))); err != nil {
		return fmt.Errorf("set schema version: %w", err)
	}
	return tx.Commit()
}

// UserVersion reads PRAGMA user_version.
func (db *DB) UserVersion(ctx context.Context) (int, error) {
	var v int
	err := db.R.GetContext(ctx, &v, "PRAGMA user_version")
	return v, err
}

// ToMS converts a time to unix milliseconds; the zero time is 0.
func ToMS(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

// FromMS converts unix milliseconds to a UTC time; 0 is the zero time.
func FromMS(ms int64) time.Time {
	if ms == 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms).UTC()
}

// IsNotFound reports whether err is sql.ErrNoRows.
func IsNotFound(err error) bool { return errors.Is(err, sql.ErrNoRows) }
