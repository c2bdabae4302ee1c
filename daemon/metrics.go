package daemon

import (
	"github.com/claudeflare/claudeflare/metrics"
	"github.com/claudeflare/claudeflare/proxy"
)

// *metrics.Metrics is what the proxy reports requests, failovers and
// refreshes to.
var _ proxy.Observer = (*metrics.Metrics)(nil)

// watchProxy points the scrape-time collectors at srv: the accounts'
// rate-limit state and the recorder queue.
func watchProxy(m *metrics.Metrics, srv *proxy.Server) {
	m.SetSources(metrics.Sources{
		Accounts: func() []metrics.AccountState {
			accts := srv.Accounts()
			out := make([]metrics.AccountState, len(accts))
			for i, a := range accts {
				out[i] = metrics.AccountState{
					Name: a.Name, Paused: a.Paused, NeedsLogin: a.NeedsLogin, Usable: a.Usable,
					RateLimitStatus: a.RateLimitStatus, Util5h: a.Util5h, Util7d: a.Util7d,
					Reset: a.Reset, Reset5h: a.Reset5h, Reset7d: a.Reset7d,
					BlockedUntil: a.BlockedUntil, InFlight: a.InFlight, State: a.State.Word,
				}
			}
			return out
		},
		QueueDepth:      func() int { return srv.RecorderStats().Queued },
		QueueCapacity:   func() int { return srv.RecorderStats().Capacity },
		DroppedPayloads: func() int64 { return srv.RecorderStats().DroppedPayloads },
		DroppedRecords:  func() int64 { return srv.RecorderStats().DroppedRecords },
		FailedRecords:   func() int64 { return srv.RecorderStats().FailedRecords },
	})
}
