// Package accounts owns the changes a person makes to the pool of Claude
// accounts: pause, resume, remove, and the record of an account added or
// logged in again. Each does its change in vault.db and writes its audit
// row, so that the command line (commands) and the admin API (access)
// cannot drift apart. Adding an account, which needs the vault and an
// OAuth login, is done by the vault; Added records it.
package accounts

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/claudeflare/claudeflare/audit"
	"github.com/claudeflare/claudeflare/store"
)

// By says who makes a change, for its audit row.
type By struct {
	// Actor is the audit row's actor: audit.CLIActor(), audit.KeyActor...
	Actor string
	// Via is how the change came, when not from the command line: "the
	// admin API" makes the row say "account "x" paused through the
	// admin API".
	Via string
}

// AuditError is the error of an audit write after the change itself was
// made: the account was changed, but the audit log does not say so. Its
// text is the audit write's.
type AuditError struct{ Err error }

func (e *AuditError) Error() string { return e.Err.Error() }
func (e *AuditError) Unwrap() error { return e.Err }

// Pause takes the named account out of rotation (a running daemon sees
// it at its next poll) and records it. An unknown name is
// store.ErrNoAccount and changes nothing.
func Pause(ctx context.Context, db *store.DB, auditKey []byte, by By, name string, now time.Time) error {
	return SetPaused(ctx, db, auditKey, by, name, true, now)
}

// Resume puts the named account back into rotation and records it.
func Resume(ctx context.Context, db *store.DB, auditKey []byte, by By, name string, now time.Time) error {
	return SetPaused(ctx, db, auditKey, by, name, false, now)
}

// SetPaused is Pause or Resume.
func SetPaused(ctx context.Context, db *store.DB, auditKey []byte, by By, name string, paused bool, now time.Time) error {
	if err := audit.CheckKey(auditKey); err != nil {
		return err
	}
	if err := store.SetPaused(ctx, db, name, paused, now); err != nil {
		return err
	}
	action, verb := audit.ActionAccountResumed, "resumed"
	if paused {
		action, verb = audit.ActionAccountPaused, "paused"
	}
	return record(ctx, db, auditKey, by, now, action, name, verb)
}

// Remove deletes the named account and its sealed tokens and records it.
func Remove(ctx context.Context, db *store.DB, auditKey []byte, by By, name string, now time.Time) error {
	if err := audit.CheckKey(auditKey); err != nil {
		return err
	}
	if err := store.DeleteAccount(ctx, db, name); err != nil {
		return err
	}
	return record(ctx, db, auditKey, by, now, audit.ActionAccountRemoved, name, "removed")
}

// Added records that the named account was added (or logged in again:
// removed and added anew) through the vault.
func Added(ctx context.Context, db *store.DB, auditKey []byte, by By, name string, now time.Time) error {
	return record(ctx, db, auditKey, by, now, audit.ActionAccountAdded, name, "added")
}

// record writes the audit row of a change already made; it is written
// even when ctx has been cancelled since (the change stays either way).
func record(ctx context.Context, db *store.DB, auditKey []byte, by By, now time.Time, action, name, verb string) error {
	detail := fmt.Sprintf("account %q %s", name, verb)
	if by.Via != "" {
		detail += " through " + by.Via
	}
	if err := audit.WriteAt(context.WithoutCancel(ctx), db, auditKey, now, by.Actor, action, detail); err != nil {
		return &AuditError{Err: err}
	}
	return nil
}

// IsAuditError reports whether err is an AuditError: the change was made
// but not recorded.
func IsAuditError(err error) bool {
	var ae *AuditError
	return errors.As(err, &ae)
}
