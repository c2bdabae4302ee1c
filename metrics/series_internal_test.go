package metrics

import (
	"fmt"
	"testing"
)

// TestSeriesCacheIsBounded: the hot path's series cache holds one entry
// per label combination, not one per model a request named, so a client
// sending endless distinct models cannot grow the daemon's memory.
func TestSeriesCacheIsBounded(t *testing.T) {
	m := New(Options{NoProcess: true})
	for i := 0; i < 1000; i++ {
		m.ObserveRequest(Request{Account: "work", Status: 200, Model: fmt.Sprintf("junk %d", i)})
		m.ObserveRequest(Request{Account: "work", Status: 200, Model: fmt.Sprintf("claude-junk-%d", i)})
	}
	m.ObserveRequest(Request{Account: "work", Status: 200})
	m.mu.RLock()
	series, models := len(m.series), len(m.models)
	m.mu.RUnlock()
	if want := MaxModels + 2; series != want || models != MaxModels { // the ids, other, none
		t.Fatalf("%d cached series and %d models after 2001 requests; want %d and %d", series, models, want, MaxModels)
	}
}
