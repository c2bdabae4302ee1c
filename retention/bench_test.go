package retention_test

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/claudeflare/claudeflare/internal/logtest"
	"github.com/claudeflare/claudeflare/retention"
	"github.com/claudeflare/claudeflare/store"
)

// Run with CLAUDEFLARE_BENCH_ROWS=1000000 for the figures:
//
//	CLAUDEFLARE_BENCH_ROWS=1000000 go test -run '^$' -bench . -benchtime 1x ./retention

// template writes a log of n requests with payloads (about 1.5 KB sealed
// each) once, and returns the path of its checkpointed file.
func template(b *testing.B, n int) string {
	b.Helper()
	dir := b.TempDir()
	db, err := store.OpenLog(dir)
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	o := logtest.Options{N: n, Start: t0, Step: time.Second, Seal: plainSeal, Batch: 5000}
	start := time.Now()
	if err := logtest.Fill(context.Background(), db, o); err != nil {
		b.Fatal(err)
	}
	if err := logtest.Checkpoint(db); err != nil {
		b.Fatal(err)
	}
	b.Logf("generated %d rows in %s", n, time.Since(start).Round(time.Millisecond))
	return filepath.Join(dir, store.LogFile)
}

// fresh copies the template into a new data dir and opens it.
func fresh(b *testing.B, tmpl string) (*store.DB, string) {
	b.Helper()
	dir := b.TempDir()
	if err := logtest.CopyDB(tmpl, filepath.Join(dir, store.LogFile)); err != nil {
		b.Fatal(err)
	}
	db, err := store.OpenLog(dir)
	if err != nil {
		b.Fatal(err)
	}
	return db, dir
}

// BenchmarkCleanup deletes every request (and its payload) of a generated
// log; rows/s counts requests plus payloads.
func BenchmarkCleanup(b *testing.B) {
	n := logtest.BenchRows(100_000)
	tmpl := template(b, n)
	for _, vacuum := range []bool{false, true} {
		b.Run(fmt.Sprintf("rows=%d/vacuum=%v", n, vacuum), func(b *testing.B) {
			var total time.Duration
			var rows int64
			for b.Loop() {
				b.StopTimer()
				db, _ := fresh(b, tmpl)
				b.StartTimer()
				start := time.Now()
				res, err := retention.Cleanup(context.Background(), db, retention.Options{Type: retention.All, Before: t0.Add(time.Duration(n) * time.Second), Vacuum: vacuum})
				if err != nil {
					b.Fatal(err)
				}
				total += time.Since(start)
				rows += res.Requests
				b.StopTimer()
				if res.Requests != int64(n) {
					b.Fatalf("deleted %d of %d", res.Requests, n)
				}
				db.Close()
				b.StartTimer()
			}
			b.ReportMetric(float64(rows)/total.Seconds(), "requests/s")
		})
	}
}

// writer inserts a batch of requests with payloads every interval, as the
// daemon's recorder does under load, and records each write's latency.
type writer struct {
	db    *store.DB
	every time.Duration
	batch int
	mu    sync.Mutex
	lat   []time.Duration
	errs  int
}

func (w *writer) run(ctx context.Context, prefix string) {
	o := logtest.Options{Start: time.Now(), Seal: plainSeal, IDPrefix: prefix}
	t := time.NewTicker(w.every)
	defer t.Stop()
	for i := 0; ; i++ {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		reqs := make([]store.Request, w.batch)
		pays := make([]store.Payload, w.batch)
		for j := range reqs {
			k := i*w.batch + j
			reqs[j] = logtest.Request(o, k)
			reqs[j].TS = store.ToMS(time.Now())
			plain, _ := store.MarshalCapture(logtest.Capture(o, k))
			pays[j] = store.Payload{RequestID: reqs[j].ID, TS: reqs[j].TS, KeyID: 1, Sealed: plain}
		}
		start := time.Now()
		err := store.InsertRequests(context.Background(), w.db, reqs, pays)
		d := time.Since(start)
		w.mu.Lock()
		w.lat = append(w.lat, d)
		if err != nil {
			w.errs++
		}
		w.mu.Unlock()
	}
}

func (w *writer) p(q float64) time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	s := slices.Clone(w.lat)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	return s[min(len(s)-1, int(q*float64(len(s))))]
}

// BenchmarkWriterLatencyDuringCleanup measures the latency of the
// daemon's log writes (a batch of 8 requests with payloads every 5ms) while
// idle and while a cleanup deletes the whole generated log, both from
// another connection (cron running `claudeflare cleanup`) and from the
// daemon's own handle (the sweeper). Reported: p50 and p99 of each, and
// the p99 ratio (target: within 2x).
func BenchmarkWriterLatencyDuringCleanup(b *testing.B) {
	n := logtest.BenchRows(100_000)
	tmpl := template(b, n)
	for _, mode := range []string{"other-process", "same-handle"} {
		b.Run(fmt.Sprintf("rows=%d/%s", n, mode), func(b *testing.B) {
			var idle99, busy99, idle50, busy50 time.Duration
			var cleanupRate float64
			iters := 0
			for b.Loop() {
				iters++
				db, dir := fresh(b, tmpl)
				daemon := db
				if mode == "other-process" {
					var err error
					if daemon, err = store.OpenLog(dir); err != nil {
						b.Fatal(err)
					}
				}
				// Idle: writes alone for 5s (1000 writes, for a steady p99).
				idle := &writer{db: daemon, every: 5 * time.Millisecond, batch: 8}
				ctx, stop := context.WithTimeout(context.Background(), 5*time.Second)
				idle.run(ctx, fmt.Sprintf("idle-%d-", iters))
				stop()

				busy := &writer{db: daemon, every: 5 * time.Millisecond, batch: 8}
				ctx, stop = context.WithCancel(context.Background())
				done := make(chan struct{})
				go func() { busy.run(ctx, fmt.Sprintf("busy-%d-", iters)); close(done) }()
				start := time.Now()
				res, err := retention.Cleanup(context.Background(), db, retention.Options{Type: retention.All, Before: t0.Add(time.Duration(n) * time.Second)})
				took := time.Since(start)
				stop()
				<-done
				if err != nil {
					b.Fatal(err)
				}
				if idle.errs+busy.errs > 0 {
					b.Fatalf("%d writes failed", idle.errs+busy.errs)
				}
				idle99, busy99 = idle99+idle.p(0.99), busy99+busy.p(0.99)
				idle50, busy50 = idle50+idle.p(0.5), busy50+busy.p(0.5)
				cleanupRate += float64(res.Requests) / took.Seconds()
				b.Logf("idle: %d writes p50 %s p99 %s; during cleanup (%s, %d batches): %d writes p50 %s p99 %s max %s",
					len(idle.lat), idle.p(0.5), idle.p(0.99), took.Round(time.Millisecond), res.Batches,
					len(busy.lat), busy.p(0.5), busy.p(0.99), busy.p(1))
				if daemon != db {
					daemon.Close()
				}
				db.Close()
			}
			k := float64(iters)
			b.ReportMetric(float64(idle50.Microseconds())/k/1000, "idle-p50-ms")
			b.ReportMetric(float64(idle99.Microseconds())/k/1000, "idle-p99-ms")
			b.ReportMetric(float64(busy50.Microseconds())/k/1000, "cleanup-p50-ms")
			b.ReportMetric(float64(busy99.Microseconds())/k/1000, "cleanup-p99-ms")
			b.ReportMetric(float64(busy99)/float64(idle99), "p99-ratio")
			b.ReportMetric(cleanupRate/k, "requests/s")
		})
	}
}
