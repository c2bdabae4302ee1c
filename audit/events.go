package audit

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/claudeflare/claudeflare/store"
)

// NeedsLogin is the audit log's subscriber to the proxy's needs-login
// events (proxy.EventNeedsLogin; package daemon wires it, so that audit
// and whatever imports it, such as access, know nothing of the proxy):
// an account that newly needs a login gets an account.needs_login row by
// the daemon, at the time the proxy marked it. A row that cannot be
// written is logged as an error (the account's status in vault.db still
// says it).
func NeedsLogin(db *store.DB, key []byte, log *slog.Logger) func(account, reason string, at time.Time) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return func(account, reason string, at time.Time) {
		detail := fmt.Sprintf("account %q needs a new login", account)
		if reason != "" {
			detail += ": " + reason
		}
		if err := WriteAt(context.Background(), db, key, at, ActorDaemon, ActionAccountNeedsLogin, detail); err != nil {
			log.Error("write audit log", "account", account, "action", ActionAccountNeedsLogin, "err", err)
		}
	}
}
