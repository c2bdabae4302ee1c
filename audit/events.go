package audit

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/claudeflare/claudeflare/proxy"
	"github.com/claudeflare/claudeflare/store"
)

// AccountEvents is the audit log's subscriber to the proxy's account
// events (proxy.Server.Subscribe): an account that newly needs a login
// gets an account.needs_login row by the daemon, at the time the proxy
// marked it. Other events write nothing. A row that cannot be written is
// logged as an error (the account's status in vault.db still says it).
func AccountEvents(db *store.DB, key []byte, log *slog.Logger) func(proxy.AccountEvent) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return func(ev proxy.AccountEvent) {
		if ev.Kind != proxy.EventNeedsLogin {
			return
		}
		detail := fmt.Sprintf("account %q needs a new login", ev.Account)
		if ev.Reason != "" {
			detail += ": " + ev.Reason
		}
		if err := WriteAt(context.Background(), db, key, ev.At, ActorDaemon, ActionAccountNeedsLogin, detail); err != nil {
			log.Error("write audit log", "account", ev.Account, "action", ActionAccountNeedsLogin, "err", err)
		}
	}
}
