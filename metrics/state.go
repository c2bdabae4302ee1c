package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/claudeflare/claudeflare/internal/acctstate"
)

// Rate-limit status label values of claudeflare_account_rate_limit_status.
var rateLimitStatuses = []string{"allowed", "allowed_warning", "rejected", "unknown"}

var (
	descUsable = prometheus.NewDesc(Namespace+"_account_usable",
		"1 if the account could be picked now, else 0.", []string{"account"}, nil)
	descPaused = prometheus.NewDesc(Namespace+"_account_paused",
		"1 if the account is paused.", []string{"account"}, nil)
	descNeedsLogin = prometheus.NewDesc(Namespace+"_account_needs_login",
		"1 if the account's refresh token was refused and it needs a new login.", []string{"account"}, nil)
	descRLStatus = prometheus.NewDesc(Namespace+"_account_rate_limit_status",
		"1 for the account's last unified rate-limit status (allowed, allowed_warning, rejected, unknown), 0 for the others.",
		[]string{"account", "status"}, nil)
	descUtil = prometheus.NewDesc(Namespace+"_account_utilization_ratio",
		"Last utilisation the upstream reported for the account's rate-limit window (5h, 7d), 0..1.",
		[]string{"account", "window"}, nil)
	descReset = prometheus.NewDesc(Namespace+"_account_rate_limit_reset_seconds",
		"Seconds until the account's rate-limit window resets (unified, 5h, 7d); 0 when past or unknown.",
		[]string{"account", "window"}, nil)
	// Named claudeflare_account_quarantined and
	// claudeflare_account_quarantine_remaining_seconds before the state
	// words: "quarantined" is now the state of an account upstream
	// refused (claudeflare_account_state{state="quarantined"}), not a rest.
	descResting = prometheus.NewDesc(Namespace+"_account_resting",
		"1 if the whole account rests until a time: state limited (a rate limit, cooldown or the rest after an uncured 401) or refresh_blocked. "+
			"(Formerly claudeflare_account_quarantined; the quarantined state is claudeflare_account_state{state=\"quarantined\"}.)",
		[]string{"account"}, nil)
	descRestLeft = prometheus.NewDesc(Namespace+"_account_rest_remaining_seconds",
		"Seconds until the account's rest ends (claudeflare_account_resting); 0 when it does not rest. "+
			"(Formerly claudeflare_account_quarantine_remaining_seconds.)", []string{"account"}, nil)
	descState = prometheus.NewDesc(Namespace+"_account_state",
		"1 for the account's current state word (ok, paused, needs_login, key_refused, quarantined, refresh_blocked, limited, limited_model), 0 for the others.",
		[]string{"account", "state"}, nil)
	descInFlight = prometheus.NewDesc(Namespace+"_account_in_flight_requests",
		"Requests the account is serving now.", []string{"account"}, nil)
	descAccounts = prometheus.NewDesc(Namespace+"_accounts",
		"Accounts configured.", nil, nil)
	descQueue = prometheus.NewDesc(Namespace+"_recorder_queue_depth",
		"Records waiting to be written to the request log.", nil, nil)
	descQueueCap = prometheus.NewDesc(Namespace+"_recorder_queue_capacity",
		"Length of the recorder queue (log.queue_size).", nil, nil)
	descDroppedPayloads = prometheus.NewDesc(Namespace+"_recorder_dropped_payloads_total",
		"Payloads not stored because the recorder queue was full.", nil, nil)
	descDroppedRecords = prometheus.NewDesc(Namespace+"_recorder_dropped_records_total",
		"Request records not stored because the recorder queue was full.", nil, nil)
	descFailedRecords = prometheus.NewDesc(Namespace+"_recorder_failed_records_total",
		"Request records lost to a database error.", nil, nil)
)

// stateCollector reads the Sources at scrape time.
type stateCollector struct{ m *Metrics }

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descUsable, descPaused, descNeedsLogin, descRLStatus, descUtil, descReset,
		descResting, descRestLeft, descState, descInFlight, descAccounts, descQueue, descQueueCap,
		descDroppedPayloads, descDroppedRecords, descFailedRecords} {
		ch <- d
	}
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	src := c.m.sources.Load()
	if src == nil {
		return
	}
	now := c.m.now()
	if src.Accounts != nil {
		accts := src.Accounts()
		ch <- prometheus.MustNewConstMetric(descAccounts, prometheus.GaugeValue, float64(len(accts)))
		for _, a := range accts {
			collectAccount(ch, a, now)
		}
	}
	if src.QueueDepth != nil {
		ch <- prometheus.MustNewConstMetric(descQueue, prometheus.GaugeValue, float64(src.QueueDepth()))
	}
	if src.QueueCapacity != nil {
		ch <- prometheus.MustNewConstMetric(descQueueCap, prometheus.GaugeValue, float64(src.QueueCapacity()))
	}
	if src.DroppedPayloads != nil {
		ch <- prometheus.MustNewConstMetric(descDroppedPayloads, prometheus.CounterValue, float64(src.DroppedPayloads()))
	}
	if src.DroppedRecords != nil {
		ch <- prometheus.MustNewConstMetric(descDroppedRecords, prometheus.CounterValue, float64(src.DroppedRecords()))
	}
	if src.FailedRecords != nil {
		ch <- prometheus.MustNewConstMetric(descFailedRecords, prometheus.CounterValue, float64(src.FailedRecords()))
	}
}

func collectAccount(ch chan<- prometheus.Metric, a AccountState, now time.Time) {
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	gauge(descUsable, b2f(a.Usable), a.Name)
	gauge(descPaused, b2f(a.Paused), a.Name)
	gauge(descNeedsLogin, b2f(a.NeedsLogin), a.Name)
	status := a.RateLimitStatus
	known := false
	for _, s := range rateLimitStatuses {
		known = known || s == status
	}
	if !known {
		status = "unknown"
	}
	for _, s := range rateLimitStatuses {
		gauge(descRLStatus, b2f(s == status), a.Name, s)
	}
	if a.Util5h >= 0 {
		gauge(descUtil, a.Util5h, a.Name, "5h")
	}
	if a.Util7d >= 0 {
		gauge(descUtil, a.Util7d, a.Name, "7d")
	}
	gauge(descReset, until(a.Reset, now), a.Name, "unified")
	gauge(descReset, until(a.Reset5h, now), a.Name, "5h")
	gauge(descReset, until(a.Reset7d, now), a.Name, "7d")
	left := until(a.BlockedUntil, now)
	gauge(descResting, b2f(left > 0), a.Name)
	gauge(descRestLeft, left, a.Name)
	gauge(descInFlight, float64(a.InFlight), a.Name)
	if a.State != "" {
		for _, w := range acctstate.Words {
			gauge(descState, b2f(w == a.State), a.Name, w)
		}
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// until is the seconds from now to t, 0 when t is zero or past.
func until(t, now time.Time) float64 {
	if t.IsZero() || !t.After(now) {
		return 0
	}
	return t.Sub(now).Seconds()
}
