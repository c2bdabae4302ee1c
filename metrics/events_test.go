package metrics_test

import (
	"testing"

	"github.com/claudeflare/claudeflare/metrics"
)

// Account events are counted by account and event; an unknown event
// name is counted as "other", so nothing else becomes a label value.
func TestAccountEvents(t *testing.T) {
	m := metrics.New(metrics.Options{NoProcess: true})
	m.AccountEvent("work", "needs_login")
	m.AccountEvent("work", "limited")
	m.AccountEvent("work", "limited")
	m.AccountEvent("home", "recovered")
	m.AccountEvent("home", "sk-ant-secret")
	var nilM *metrics.Metrics
	nilM.AccountEvent("work", "limited") // does nothing
	f := scrape(t, m.Handler())
	for _, c := range []struct {
		labels []string
		want   float64
	}{
		{[]string{"account=work", "event=needs_login"}, 1},
		{[]string{"account=work", "event=limited"}, 2},
		{[]string{"account=home", "event=recovered"}, 1},
		{[]string{"account=home", "event=other"}, 1},
	} {
		if got := value(t, f, "claudeflare_account_events_total", c.labels...); got != c.want {
			t.Errorf("%v = %v, want %v", c.labels, got, c.want)
		}
	}
	if _, ok := lookup(f, "claudeflare_account_events_total", "event=sk-ant-secret"); ok {
		t.Error("an unknown event name became a label value")
	}
}
