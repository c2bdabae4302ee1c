// Package accounts owns the changes a person makes to the pool of Claude
// accounts: pause, resume, remove, edit (priority, tier, name, overage
// policy), unblock, new credentials (Login, LoginWith), the record of an
// account added, and the check that probes accounts now and stores what
// it learns (Checker). Each does its change in vault.db and writes its
// audit row, so that the command line (commands) and the admin API
// (access) cannot drift apart. Adding an account, which needs the vault
// and an OAuth login, is done by the vault; Added records it. The probe
// itself is the proxy's (proxy.Probe), handed in as a Probe by the caller.
package accounts

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/claudeflare/claudeflare/audit"
	"github.com/claudeflare/claudeflare/cloud"
	"github.com/claudeflare/claudeflare/store"
	"github.com/claudeflare/claudeflare/vault"
)

// Audit actions of the changes only this package makes.
const (
	ActionLoggedIn = "account.logged_in"
	ActionEdited   = "account.edited"
)

// ErrKindMismatch is returned by Login when the new credential is not of
// the account's kind (an API key for an OAuth account, or the reverse).
var ErrKindMismatch = errors.New("the credential is not of the account's kind")

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

// Added records that the named account was added through the vault.
func Added(ctx context.Context, db *store.DB, auditKey []byte, by By, name string, now time.Time) error {
	return record(ctx, db, auditKey, by, now, audit.ActionAccountAdded, name, "added")
}

// Login replaces the named account's credentials with s (sealed and
// bound to the account's row by the vault, as a new secret version, so a
// running daemon uses them at its next poll) and records it. The
// account keeps its id, name, priority, tier, pause and history; a
// needs-login status is cleared. OAuth credentials without a refresh
// token are a long-lived setup token (mode store.ModeSetupToken). An unknown name is store.ErrNoAccount
// and changes nothing; so is a credential of the wrong kind
// (ErrKindMismatch).
func Login(ctx context.Context, v *vault.Vault, auditKey []byte, by By, name string, s vault.Secrets, now time.Time) error {
	if err := audit.CheckKey(auditKey); err != nil {
		return err
	}
	a, err := store.GetAccount(ctx, v.DB(), name)
	if err != nil {
		return err
	}
	if cloud.Is(a.Kind) != (s.CloudKey != "") {
		return fmt.Errorf("%w: %q is a%s %s account", ErrKindMismatch, name, article(a.Kind), a.Kind)
	}
	if (a.Kind == store.KindAPIKey) != (s.APIKey != "") {
		return fmt.Errorf("%w: %q is an %s account", ErrKindMismatch, name, map[bool]string{true: "API-key", false: "OAuth"}[a.Kind == store.KindAPIKey])
	}
	if err := v.ReplaceSecrets(ctx, a.ID, s); err != nil {
		return err
	}
	// A setup token and a refresh token replace one another: the mode
	// says which the account holds now.
	if a.Kind == store.KindOAuth {
		mode := a.Mode
		switch {
		case s.RefreshToken == "":
			mode = store.ModeSetupToken
		case a.Mode == store.ModeSetupToken:
			mode = "max"
		}
		if mode != a.Mode {
			if err := store.UpdateAccount(ctx, v.DB(), a.ID, store.AccountEdit{Mode: &mode}, now); err != nil {
				return err
			}
		}
	}
	return record(ctx, v.DB(), auditKey, by, now, ActionLoggedIn, name, "logged in again")
}

// Edit is a change of an account's settings; a nil field is kept.
type Edit struct {
	Priority *int
	Tier     *int
	Rename   *string
	Overage  *string // store.OverageAvoid or store.OverageAllow
}

// ErrNoChange is returned (as a BadInput) by EditAccount for an edit that
// changes nothing.
var ErrNoChange = errors.New("nothing to change")

// EditAccount changes the named account's settings and records it. The
// new values are checked as `accounts add` checks them; a taken new name
// is store.ErrAccountExists; a bad value is a BadInput. Nothing is
// changed on error.
func EditAccount(ctx context.Context, db *store.DB, auditKey []byte, by By, name string, e Edit, now time.Time) error {
	if err := audit.CheckKey(auditKey); err != nil {
		return err
	}
	if err := e.check(); err != nil {
		return err
	}
	a, err := store.GetAccount(ctx, db, name)
	if err != nil {
		return err
	}
	var parts []string
	if e.Priority != nil {
		parts = append(parts, fmt.Sprintf("priority %d -> %d", a.Priority, *e.Priority))
	}
	if e.Tier != nil {
		parts = append(parts, fmt.Sprintf("tier %d -> %d", a.Tier, *e.Tier))
	}
	if e.Overage != nil {
		parts = append(parts, fmt.Sprintf("overage %s -> %s", a.Overage, *e.Overage))
	}
	if e.Rename != nil {
		parts = append(parts, fmt.Sprintf("renamed to %q", *e.Rename))
	}
	if err := store.UpdateAccount(ctx, db, a.ID, store.AccountEdit{Name: e.Rename, Priority: e.Priority, Tier: e.Tier, Overage: e.Overage}, now); err != nil {
		if errors.Is(err, store.ErrNoAccount) {
			return fmt.Errorf("%w: %q", store.ErrNoAccount, name)
		}
		return err
	}
	return record(ctx, db, auditKey, by, now, ActionEdited, name, "edited: "+strings.Join(parts, ", "))
}

// check refuses an edit that changes nothing or holds a bad value.
func (e Edit) check() error {
	if e.Priority == nil && e.Tier == nil && e.Rename == nil && e.Overage == nil {
		return &BadInput{Msg: ErrNoChange.Error(), err: ErrNoChange}
	}
	if e.Overage != nil {
		if err := CheckOverage(*e.Overage); err != nil {
			return err
		}
	}
	if e.Priority != nil && *e.Priority < 0 {
		return badInput("priority must be 0 or more")
	}
	if e.Tier != nil && *e.Tier != 1 && *e.Tier != 5 && *e.Tier != 20 {
		return badInput("tier must be 1, 5 or 20")
	}
	if e.Rename != nil {
		if err := vault.ValidateName(*e.Rename); err != nil {
			return &BadInput{Msg: err.Error(), err: err}
		}
	}
	return nil
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
