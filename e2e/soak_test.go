//go:build soak

package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/claudeflare/claudeflare/store"
)

// TestSoak runs ten minutes of steady traffic (CLAUDEFLARE_SOAK to change
// it) through a daemon with three OAuth accounts refreshing every couple
// of minutes and one API-key account: 16 clients, each sending a request
// (half of them half-second streams) 20 to 80 ms after the last one
// ended. Every 15 s it samples the daemon's memory, goroutines (from
// /metrics when served), threads and open files, the p50 and p99 of the
// JSON requests' durations and the p99 of every request's time to the
// status line. At the end:
// every request was answered in full, and memory, goroutines and open
// files are flat and p99 stable.
//
//	go test -tags soak -run TestSoak -timeout 30m -v ./e2e
func TestSoak(t *testing.T) {
	dur := envDuration("CLAUDEFLARE_SOAK", 10*time.Minute)
	const every = 15 * time.Second
	w := newWorld(t, `
lb_strategy = "round-robin"
[tokens]
refresh_margin = "30s"
`, "")
	w.fake.SetExpiresIn(2 * time.Minute)
	w.fake.SetStreamShape(25, 64)
	w.fake.SetEventDelay(20 * time.Millisecond)
	w.fake.SetMaxRecorded(0)
	for _, n := range []string{"alpha", "beta", "gamma"} {
		w.addOAuth(n)
	}
	w.addAPIKey("keyed")
	d := w.start()

	type window struct {
		at                time.Time
		ps                procStats
		goroutines        int
		n                 int
		p50, p99, ttfb99  time.Duration
		refreshes         int
		fails             int
		heapInuse, allocs float64
	}
	var (
		mu      sync.Mutex
		lat     []time.Duration
		ttfb    []time.Duration
		fails   int
		total   tally
		samples []window
	)
	ctx, cancel := context.WithTimeout(context.Background(), dur)
	defer cancel()
	c := newClient(60*time.Second, 16)
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(i), 7))
			for k := 0; ctx.Err() == nil; k++ {
				r := send(context.Background(), c, d.url, k%2 == 0)
				total.add(r)
				mu.Lock()
				if r.kind == kComplete {
					if !r.stream {
						lat = append(lat, r.dur())
					}
					ttfb = append(ttfb, r.ttfb)
				} else {
					fails++
				}
				mu.Unlock()
				time.Sleep(time.Duration(20+rng.IntN(60)) * time.Millisecond)
			}
		})
	}
	tick := time.NewTicker(every)
	for done := false; !done; {
		select {
		case <-ctx.Done():
			done = true
		case <-tick.C:
		}
		mu.Lock()
		l, f, tt := lat, fails, ttfb
		lat, ttfb, fails = nil, nil, 0
		mu.Unlock()
		sortDurations(l)
		sortDurations(tt)
		s := window{at: time.Now(), ps: d.proc(t), goroutines: d.goroutines(), n: len(l), fails: f,
			p50: percentile(l, 0.5), p99: percentile(l, 0.99), ttfb99: percentile(tt, 0.99), refreshes: w.fake.TotalRefreshes()}
		if m := d.metrics(); m != nil {
			s.heapInuse = m["go_memstats_heap_inuse_bytes"]
		}
		samples = append(samples, s)
		t.Logf("%5s  n=%5d fail=%d  json p50=%3dms p99=%3dms  ttfb p99=%3dms  rss=%s  goroutines=%d threads=%d fds=%d  refreshes=%d",
			s.at.Sub(samples[0].at).Round(time.Second), s.n, s.fails, s.p50.Milliseconds(), s.p99.Milliseconds(), s.ttfb99.Milliseconds(),
			mb(s.ps.RSS), s.goroutines, s.ps.Threads, s.ps.FDs, s.refreshes)
	}
	tick.Stop()
	wg.Wait()

	t.Logf("soak over %s: %s", dur, &total)
	if n := total.total() - total.n[kComplete]; n > 0 {
		t.Errorf("%d requests not answered in full: %v", n, total.examples)
	}
	if len(samples) < 6 {
		t.Fatalf("only %d samples", len(samples))
	}
	// Skip the first window (warm-up); compare the first third with the last.
	s := samples[1:]
	third := max(len(s)/3, 1)
	first, last := s[:third], s[len(s)-third:]
	med := func(ws []window, f func(window) float64) float64 {
		v := make([]float64, len(ws))
		for i, w := range ws {
			v[i] = f(w)
		}
		sort.Float64s(v)
		return v[len(v)/2]
	}
	maxOf := func(ws []window, f func(window) float64) float64 {
		m := 0.0
		for _, w := range ws {
			m = max(m, f(w))
		}
		return m
	}
	rss := func(w window) float64 { return float64(w.ps.RSS) }
	fds := func(w window) float64 { return float64(w.ps.FDs) }
	gor := func(w window) float64 { return float64(w.goroutines) }
	p99 := func(w window) float64 { return float64(w.p99) }
	report := fmt.Sprintf("rss median %s -> %s; fds max %g -> %g; goroutines max %g -> %g; p99 median %s -> %s",
		mb(int64(med(first, rss))), mb(int64(med(last, rss))), maxOf(first, fds), maxOf(last, fds),
		maxOf(first, gor), maxOf(last, gor), time.Duration(med(first, p99)), time.Duration(med(last, p99)))
	t.Log(report)
	if med(last, rss) > med(first, rss)*1.25+10<<20 {
		t.Errorf("memory grows: %s", report)
	}
	if maxOf(last, fds) > maxOf(first, fds)+8 {
		t.Errorf("open files grow: %s", report)
	}
	if samples[0].goroutines >= 0 && maxOf(last, gor) > maxOf(first, gor)+32 {
		t.Errorf("goroutines grow: %s", report)
	}
	if med(last, p99) > 2*med(first, p99)+float64(50*time.Millisecond) {
		t.Errorf("p99 drifts: %s", report)
	}

	// The log holds every request.
	if err := d.stop(t); err != nil {
		t.Errorf("daemon exit: %v", err)
	}
	ids, err := loggedIDs(filepath.Join(w.data, store.LogFile))
	if err != nil {
		t.Fatal(err)
	}
	if len(ids) < total.total() {
		t.Errorf("%d requests, %d in the log", total.total(), len(ids))
	}
	t.Logf("%d rows in the log; %d token refreshes", len(ids), w.fake.TotalRefreshes())
}
