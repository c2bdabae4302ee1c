package e2e

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/claudeflare/claudeflare/internal/logtest"
	"github.com/claudeflare/claudeflare/retention"
	"github.com/claudeflare/claudeflare/store"
)

// BenchmarkCleanupPacing separates the cleanup's raw deletion speed from
// its pacing: retention rests between two transactions as long as the
// last one took (so that the daemon's recorder, in another process or on
// another connection, finds the write lock free), which halves the
// wall-clock rate by design. Same generated log as retention's
// benchmarks; rows/s counts request rows plus payload rows.
//
//	CLAUDEFLARE_BENCH_ROWS=1000000 go test -run '^$' -bench CleanupPacing -benchtime 1x ./e2e
func BenchmarkCleanupPacing(b *testing.B) {
	n := logtest.BenchRows(100_000)
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	seal := func(_ string, p []byte) (int64, []byte, error) { return 1, append([]byte(nil), p...), nil }
	dir := b.TempDir()
	db, err := store.OpenLog(dir)
	if err != nil {
		b.Fatal(err)
	}
	if err := logtest.Fill(context.Background(), db, logtest.Options{N: n, Start: t0, Step: time.Second, Seal: seal, Batch: 5000}); err != nil {
		b.Fatal(err)
	}
	if err := logtest.Checkpoint(db); err != nil {
		b.Fatal(err)
	}
	db.Close()
	tmpl := filepath.Join(dir, store.LogFile)
	for _, c := range []struct {
		name  string
		pause time.Duration
	}{{"paced", 0}, {"unpaced", -1}} {
		b.Run(fmt.Sprintf("rows=%d/%s", n, c.name), func(b *testing.B) {
			var took time.Duration
			var reqs, pays, batches int64
			for range b.N {
				d := b.TempDir()
				if err := logtest.CopyDB(tmpl, filepath.Join(d, store.LogFile)); err != nil {
					b.Fatal(err)
				}
				db, err := store.OpenLog(d)
				if err != nil {
					b.Fatal(err)
				}
				start := time.Now()
				res, err := retention.Cleanup(context.Background(), db, retention.Options{Type: retention.All, Before: t0.Add(time.Duration(n) * time.Second), Pause: c.pause})
				took += time.Since(start)
				db.Close()
				if err != nil {
					b.Fatal(err)
				}
				reqs, pays, batches = reqs+res.Requests, pays+res.Payloads, batches+int64(res.Batches)
			}
			b.ReportMetric(float64(reqs)/took.Seconds(), "requests/s")
			b.ReportMetric(float64(reqs+pays)/took.Seconds(), "rows/s")
			b.ReportMetric(float64(batches)/float64(b.N), "batches")
			b.ReportMetric(0, "ns/op")
		})
	}
}
