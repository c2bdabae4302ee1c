package fakeapi

import (
	"testing"
	"time"
)

// A budget reports its utilization rising with each message, refuses the
// message past it with a rejected 5h window until the reset, then serves
// a fresh window. Other accounts are not charged.
func TestBudget(t *testing.T) {
	s := newServer(t)
	now := time.Now().Truncate(time.Second)
	s.SetNow(func() time.Time { return now })
	a := s.NewAPIKey("a")
	b := s.NewAPIKey("b")
	s.SetBudget("a", 4, time.Minute)
	reset := unix(now.Add(time.Minute))
	for i, want := range []string{"0.2500", "0.5000", "0.7500", "1.0000"} {
		resp, body := do(t, s, msgReq(t, s, msgBody, apiKey(a)))
		if resp.StatusCode != 200 || resp.Header.Get(UnifiedPrefix+"5h-utilization") != want ||
			resp.Header.Get(UnifiedPrefix+"5h-reset") != reset {
			t.Fatalf("message %d: %d %v %s", i+1, resp.StatusCode, resp.Header, body)
		}
	}
	resp, body := do(t, s, msgReq(t, s, msgBody, apiKey(a)))
	if typ, _ := apiError(t, body); resp.StatusCode != 429 || typ != "rate_limit_error" ||
		resp.Header.Get(UnifiedPrefix+"status") != "rejected" || resp.Header.Get(UnifiedPrefix+"5h-status") != "rejected" ||
		resp.Header.Get(UnifiedPrefix+"reset") != reset {
		t.Fatalf("past the budget: %d %v", resp.StatusCode, resp.Header)
	}
	if got := s.BudgetUsed("a"); got != 4 {
		t.Fatalf("used %d", got)
	}
	if resp, _ := do(t, s, msgReq(t, s, msgBody, apiKey(b))); resp.StatusCode != 200 {
		t.Fatalf("b: %d", resp.StatusCode)
	}
	now = now.Add(time.Minute)
	resp, _ = do(t, s, msgReq(t, s, msgBody, apiKey(a)))
	if resp.StatusCode != 200 || resp.Header.Get(UnifiedPrefix+"5h-utilization") != "0.2500" {
		t.Fatalf("after the reset: %d %v", resp.StatusCode, resp.Header)
	}
}
