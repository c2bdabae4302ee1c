package commands

import (
	"testing"
	"time"

	"github.com/claudeflare/claudeflare/requestlog"
)

// The status line's text: the session's account with the fuller window's
// reset and a state that is not ok; else the account with most headroom.
func TestFormatStatusLine(t *testing.T) {
	now := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	f := func(v float64) *float64 { return &v }
	at := func(d time.Duration) *string { s := now.Add(d).Format(time.RFC3339); return &s }
	name := func(s string) *string { return &s }
	st := requestlog.Status{Accounts: []requestlog.StatusAccount{
		{Name: "work", State: "ok", Tier: 1, Utilization5h: f(0.42), Reset5h: at(72 * time.Minute), Utilization7d: f(0.18), Reset7d: at(50 * time.Hour)},
		{Name: "big", State: "limited", Window: "7d", Until: at(30 * time.Hour), Tier: 20, Utilization5h: f(0.1), Reset5h: at(time.Hour),
			Utilization7d: f(1), Reset7d: at(30 * time.Hour)},
		{Name: "team", State: "ok", Tier: 5, Utilization5h: f(0.6), Reset5h: at(3 * time.Hour)},
		{Name: "new", State: "ok", Tier: 1},
	}, Pool: requestlog.StatusPool{Usable: 3, Total: 4}}
	for _, c := range []struct {
		session *string
		with    bool
		want    string
	}{
		{name("work"), true, "claudeflare: work · 5h 42% · 7d 18% · resets 1h12m"},
		{name("big"), true, "claudeflare: big · 5h 10% · 7d 100% · resets 1d06h · limited (7d) 1d06h left"},
		{name("gone"), true, "claudeflare: gone (removed)"},
		// No request of the session yet: team has 5 x 0.4 of headroom.
		{nil, true, "claudeflare: new session · next team · 5h 60% · resets 3h00m"},
		{nil, false, "claudeflare: next team · 5h 60% · resets 3h00m"},
	} {
		st.Session = &requestlog.SessionStatus{Session: "0123456789ab", Account: c.session}
		if got := formatStatusLine(st, c.with, now); got != c.want {
			t.Errorf("session %v: %q, want %q", c.session, got, c.want)
		}
	}
	st.Session, st.Pool.Usable = nil, 0
	for i := range st.Accounts {
		st.Accounts[i].State = "paused"
	}
	if got := formatStatusLine(st, true, now); got != "claudeflare: new session · no usable account (0 of 4)" {
		t.Errorf("none usable: %q", got)
	}
}
