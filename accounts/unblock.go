package accounts

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/claudeflare/claudeflare/audit"
	"github.com/claudeflare/claudeflare/internal/acctstate"
	"github.com/claudeflare/claudeflare/store"
)

// ActionUnblocked is the audit action of `accounts unblock` (and of a
// check that found a blocked account serving).
const ActionUnblocked = "account.unblocked"

// Unblock clears every block the named account carries (store.Unblock: a
// limit, model-scoped limits, the extra-usage mark, a quarantined or
// key_refused status) and records it. A running daemon drops the blocks
// it holds in memory when it sees unblocked_at move. It returns the row
// as it was (Blocks(before, now) says what was cleared; a needs_login
// status is kept). An unknown name is store.ErrNoAccount and changes
// nothing.
func Unblock(ctx context.Context, db *store.DB, auditKey []byte, by By, name string, now time.Time) (before store.Account, err error) {
	if err := audit.CheckKey(auditKey); err != nil {
		return before, err
	}
	if before, err = store.Unblock(ctx, db, name, now); err != nil {
		return before, err
	}
	return before, record(ctx, db, auditKey, by, now, ActionUnblocked, name, "unblocked (was "+Blocks(before, now)+")")
}

// Blocks describes the blocks an account's row carries at now, as
// Unblock clears them: "limited (7d) until ...; model limits: opus until
// ...", or "not blocked". A needs_login status, which Unblock keeps, is
// not a block here (NeedsLoginHint names its cure).
func Blocks(a store.Account, now time.Time) string {
	st := acctstate.Of(a, now)
	var parts []string
	switch st.Word {
	case acctstate.Limited, acctstate.KeyRefused, acctstate.Quarantined:
		parts = append(parts, st.String())
	}
	// A limit or status hidden behind pause or needs_login is cleared too.
	if st.Word != acctstate.Limited && a.RateLimitedUntil > store.ToMS(now) {
		parts = append(parts, fmt.Sprintf("limited (%s) until %s", acctstate.WindowOf(a.RLStatus), store.FromMS(a.RateLimitedUntil).UTC().Format(time.RFC3339)))
	}
	if len(st.Models) > 0 {
		parts = append(parts, "model limits: "+modelList(st.Models))
	}
	if !st.Overage.IsZero() {
		parts = append(parts, "on extra usage until "+st.Overage.UTC().Format(time.RFC3339))
	}
	if len(parts) == 0 {
		return "not blocked"
	}
	return strings.Join(parts, "; ")
}

// NeedsLoginHint is the one hint for an account that needs a new login.
func NeedsLoginHint(name string) string {
	return "run `claudeflare accounts login " + name + "` to give it new credentials"
}

func modelList(m map[string]time.Time) string {
	fams := make([]string, 0, len(m))
	for f := range m {
		fams = append(fams, f)
	}
	sort.Strings(fams)
	for i, f := range fams {
		fams[i] = f + " until " + m[f].UTC().Format(time.RFC3339)
	}
	return strings.Join(fams, ", ")
}

// ErrBadOverage is returned for an overage policy other than avoid or allow.
var ErrBadOverage = errors.New("overage must be avoid or allow")

// CheckOverage checks an overage policy's word.
func CheckOverage(s string) error {
	if s != store.OverageAvoid && s != store.OverageAllow {
		return &BadInput{Msg: fmt.Sprintf("%v, not %q", ErrBadOverage, s), err: ErrBadOverage}
	}
	return nil
}
