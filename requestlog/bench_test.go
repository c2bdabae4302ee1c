package requestlog_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/metrics"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/claudeflare/claudeflare/internal/logtest"
	"github.com/claudeflare/claudeflare/requestlog"
	"github.com/claudeflare/claudeflare/store"
	"github.com/claudeflare/claudeflare/vault"
)

// Run with CLAUDEFLARE_BENCH_ROWS=1000000 for the figures:
//
//	CLAUDEFLARE_BENCH_ROWS=1000000 go test -run '^$' -bench Export -benchtime 1x ./requestlog

// benchLog writes a log of n requests whose payloads are sealed with a
// real vault's payload key, and returns it with the vault.
func benchLog(b *testing.B, n int) (*store.DB, *vault.Vault) {
	b.Helper()
	dir := b.TempDir()
	vdb, err := store.OpenVault(dir)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { vdb.Close() })
	v, err := vault.Open(context.Background(), vdb, vault.KeySource{DataDir: dir}, vault.Options{Create: true})
	if err != nil {
		b.Fatal(err)
	}
	db, err := store.OpenLog(dir)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { db.Close() })
	start := time.Now()
	if err := logtest.Fill(context.Background(), db, logtest.Options{N: n, Start: t0, Step: time.Second, Seal: v.SealPayload, Batch: 5000}); err != nil {
		b.Fatal(err)
	}
	if err := logtest.Checkpoint(db); err != nil {
		b.Fatal(err)
	}
	var size int64
	db.R.Get(&size, `SELECT page_count * page_size FROM pragma_page_count, pragma_page_size`)
	b.Logf("generated %d rows (%d MB) in %s", n, size>>20, time.Since(start).Round(time.Millisecond))
	return db, v
}

// heapSampler records the peak HeapInuse while it runs.
type heapSampler struct {
	peak atomic.Uint64
	stop chan struct{}
	done chan struct{}
}

func sampleHeap() *heapSampler {
	s := &heapSampler{stop: make(chan struct{}), done: make(chan struct{})}
	// runtime/metrics, unlike ReadMemStats, does not stop the world.
	samples := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}, {Name: "/memory/classes/heap/unused:bytes"}}
	go func() {
		defer close(s.done)
		t := time.NewTicker(2 * time.Millisecond)
		defer t.Stop()
		for {
			metrics.Read(samples)
			inuse := samples[0].Value.Uint64() + samples[1].Value.Uint64()
			if inuse > s.peak.Load() {
				s.peak.Store(inuse)
			}
			select {
			case <-s.stop:
				return
			case <-t.C:
			}
		}
	}()
	return s
}

func (s *heapSampler) end() uint64 {
	close(s.stop)
	<-s.done
	return s.peak.Load()
}

// BenchmarkExport exports every row of a generated log as the payload
// export command does (open, convert, one line per row into a buffered
// writer) and reports rows/s, the peak heap in use during the export, and
// the bytes allocated per row. Flat memory means the peak does not grow
// with the row count: compare CLAUDEFLARE_BENCH_ROWS=50000 with 1000000.
func BenchmarkExport(b *testing.B) {
	n := logtest.BenchRows(50_000)
	db, v := benchLog(b, n)
	for _, workers := range []int{1, runtime.GOMAXPROCS(0)} {
		b.Run(fmt.Sprintf("rows=%d/workers=%d", n, workers), func(b *testing.B) {
			var rows int64
			var took time.Duration
			var peak, rss uint64
			var bytesOut int64
			runtime.GC()
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			cpu0 := cpuTime()
			for b.Loop() {
				cw := &countWriter{}
				w := bufio.NewWriterSize(cw, 256<<10)
				s := sampleHeap()
				resetPeakRSS()
				start := time.Now()
				k, err := requestlog.WriteNDJSON(context.Background(), db, requestlog.Filter{}, v.OpenPayload, w, workers)
				if err == nil {
					err = w.Flush()
				}
				took += time.Since(start)
				peak = max(peak, s.end())
				rss = max(rss, peakRSS())
				if err != nil {
					b.Fatal(err)
				}
				rows += k
				bytesOut += cw.n
			}
			cpu := cpuTime() - cpu0
			runtime.ReadMemStats(&after)
			b.ReportMetric(float64(rows)/took.Seconds(), "rows/s")
			b.ReportMetric(float64(rows)/cpu.Seconds(), "rows/cpu-s")
			b.ReportMetric(float64(peak)/(1<<20), "peak-heap-MB")
			if rss > 0 {
				b.ReportMetric(float64(rss)/(1<<20), "peak-rss-MB")
			}
			b.ReportMetric(float64(after.TotalAlloc-before.TotalAlloc)/float64(rows), "alloc-B/row")
			b.ReportMetric(float64(bytesOut)/float64(rows), "out-B/row")
		})
	}
}

type countWriter struct{ n int64 }

func (c *countWriter) Write(p []byte) (int, error) { c.n += int64(len(p)); return len(p), nil }

var _ io.Writer = (*countWriter)(nil)

// BenchmarkList streams every request of a generated log (requests list).
func BenchmarkList(b *testing.B) {
	n := logtest.BenchRows(50_000)
	db, _ := benchLog(b, n)
	b.Run(fmt.Sprintf("rows=%d", n), func(b *testing.B) {
		var rows int64
		start := time.Now()
		for b.Loop() {
			enc := json.NewEncoder(io.Discard)
			if err := requestlog.List(context.Background(), db, requestlog.Filter{}, func(r *store.Request) error {
				rows++
				return enc.Encode(r)
			}); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(rows)/time.Since(start).Seconds(), "rows/s")
	})
}

// cpuTime is the user and system CPU time of this process so far: on a
// busy machine, rows per CPU second is steadier than rows per second.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// resetPeakRSS resets the kernel's peak resident set size of this process
// (Linux: clear_refs 5), so that peakRSS measures from here.
func resetPeakRSS() { os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) }

// peakRSS is VmHWM, the peak resident set size, in bytes (0 if unknown):
// Go heap, SQLite's page cache and everything else.
func peakRSS() uint64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseUint(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}
