package daemon

import (
	"context"
	"log/slog"
	"net/http"
	"time"

	"github.com/claudeflare/claudeflare/access"
	"github.com/claudeflare/claudeflare/alerts"
	"github.com/claudeflare/claudeflare/config"
	"github.com/claudeflare/claudeflare/proxy"
)

// alertsCheckEvery is how often the alerts watcher reads the accounts'
// state and the recorder's counters, off the request path: the pool and
// utilization thresholds between account events, limits that ran out by
// time, the recorder's drops.
const alertsCheckEvery = 15 * time.Second

// alertsPart is the daemon's alerts: nil without webhooks.
type alertsPart struct {
	notifier *alerts.Notifier
	watcher  *alerts.Watcher
	stop     context.CancelFunc
	done     chan struct{}
}

// newAlerts builds the alerts from [[alerts.webhook]] and subscribes the
// watcher to srv's account events and guard's budgets; nil when no
// webhook is configured.
func newAlerts(cfg *config.Config, srv *proxy.Server, guard *access.Guard, log *slog.Logger, now func() time.Time, version string) *alertsPart {
	if len(cfg.Alerts.Webhook) == 0 {
		return nil
	}
	ua := "claudeflare"
	if version != "" {
		ua += "/" + version
	}
	n := alerts.New(alerts.Options{
		Webhooks: cfg.Alerts.Webhook, Logger: log.With("component", "alerts"), Now: now, UserAgent: ua,
		// The webhooks are not the upstream: the system's roots and
		// proxy settings, no pin.
		Client: &http.Client{Transport: http.DefaultTransport},
	})
	w := alerts.NewWatcher(n, func() alerts.Snapshot { return alertsSnapshot(srv) }, now)
	srv.Subscribe(func(e proxy.AccountEvent) {
		c := alerts.AccountChange{Account: e.Account, State: e.State.Word, Reason: e.Reason, Until: e.Until, At: e.At}
		switch e.Kind {
		case proxy.EventNeedsLogin:
			c.Kind = alerts.ChangeNeedsLogin
		case proxy.EventLimited, proxy.EventQuarantined, proxy.EventKeyRefused:
			c.Kind = alerts.ChangeBlocked
		case proxy.EventRecovered, proxy.EventUnblocked:
			c.Kind = alerts.ChangeRecovered
		default:
			return // a model family's limit: the account serves the others
		}
		w.AccountChanged(c)
	})
	guard.OnBudgetExceeded(func(e access.BudgetEvent) {
		w.BudgetExceeded(e.Key, e.Period, e.Unit, e.Limit, e.Used, e.At) // queues: never blocks
	})
	log.Info("alerts: webhooks configured", "webhooks", len(cfg.Alerts.Webhook))
	return &alertsPart{notifier: n, watcher: w}
}

// alertsSnapshot is srv's accounts and recorder losses, for the watcher.
func alertsSnapshot(srv *proxy.Server) alerts.Snapshot {
	accts := srv.Accounts()
	out := alerts.Snapshot{Accounts: make([]alerts.Account, len(accts))}
	for i, a := range accts {
		reason := a.State.Window
		if reason == "" {
			reason = a.State.Reason
		}
		out.Accounts[i] = alerts.Account{
			Name: a.Name, Paused: a.Paused, Usable: a.Usable, State: a.State.Word, Reason: reason, Until: a.State.Until,
			Util5h: a.Util5h, Util7d: a.Util7d, Reset5h: a.Reset5h, Reset7d: a.Reset7d,
		}
	}
	rs := srv.RecorderStats()
	out.DroppedRecords, out.DroppedPayloads = rs.DroppedRecords, rs.DroppedPayloads
	return out
}

// start runs the watcher's periodic check.
func (a *alertsPart) start() {
	if a == nil {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	a.stop, a.done = cancel, make(chan struct{})
	go func() { defer close(a.done); a.watcher.Run(ctx, alertsCheckEvery) }()
}

// shutdown stops the watcher and gives the queued alerts until ctx ends
// (at most 5 s) to go out.
func (a *alertsPart) shutdown(ctx context.Context) {
	if a == nil {
		return
	}
	if a.stop != nil {
		a.stop()
		<-a.done
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	a.notifier.Close(ctx)
}
