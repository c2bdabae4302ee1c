package daemon

import (
	"time"

	"github.com/claudeflare/claudeflare/metrics"
	"github.com/claudeflare/claudeflare/proxy"
)

// watchAccountEvents subscribes to the proxy's account events: metrics
// counts every one; the audit log (needsLogin: audit.NeedsLogin) records
// an account that needs a new login. They are delivered off the request
// path (proxy.Server.Subscribe).
func watchAccountEvents(srv *proxy.Server, m *metrics.Metrics, needsLogin func(account, reason string, at time.Time)) {
	srv.Subscribe(func(e proxy.AccountEvent) {
		m.AccountEvent(e.Account, string(e.Kind))
		if e.Kind == proxy.EventNeedsLogin {
			needsLogin(e.Account, e.Reason, e.At)
		}
	})
}
