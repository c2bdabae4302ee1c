package e2e

import (
	"bytes"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/claudeflare/claudeflare/internal/testutil"
)

// Issue 16's goals, measured on processes against the bare proxy in the
// same run (docs/BENCHMARKS.md has the figures and the commands):
//
//   - CPU per request and throughput: BenchmarkThroughput/{json,sse,200k}
//     (cpu_ratio, ratio)
//   - peak and idle resident size: BenchmarkPeakRSS
//   - single-request p99 time to first byte: BenchmarkLatency/json
//     (delta_ttfb99_us)
//
// CLAUDEFLARE_E2E_CPUPROFILE=DIR makes both processes write a CPU
// profile of their whole life to DIR/{daemon,bare}.pprof (the benchmarks
// stop them with SIGTERM at the end so that it is written).

// benchLoad is what a benchmark sends.
type benchLoad struct {
	name    string
	body    []byte
	session bool // send X-Claude-Code-Session-Id, as Claude Code does
}

var (
	loadJSON = benchLoad{name: "json", body: []byte(jsonBody)}
	loadSSE  = benchLoad{name: "sse", body: []byte(streamBody)}
	// load200K is a Claude Code-like request of 200 KB (its answer
	// streamed), with Claude Code's session header. Each tool result
	// holds 6 KB of real source (Go's net/http, as a Read would return
	// it) besides the generator's repetitive handlers, so that the body
	// compresses about as much as a real session's (the payload log
	// compresses what it stores).
	load200K = sync.OnceValue(func() benchLoad {
		src := goSource()
		const piece = 6 << 10
		extra := func(i int) string {
			if len(src) < piece {
				return ""
			}
			off := (i * piece) % (len(src) - piece)
			return src[off : off+piece]
		}
		return benchLoad{name: "200k", body: testutil.ClaudeCodeBody(200<<10, extra), session: true}
	})
)

// goSource is some real source text: Go's net/http, from GOROOT ("" when
// it is not there).
func goSource() string {
	var b strings.Builder
	for _, f := range []string{"server.go", "transport.go", "request.go"} {
		src, _ := os.ReadFile(filepath.Join(runtime.GOROOT(), "src", "net", "http", f))
		b.Write(src)
	}
	return b.String()
}

// settleBench waits for what the proxies do after the answers (the daemon's
// recorder writes its batches every log.flush_interval, 250 ms by
// default), so that CPU counted up to now includes it.
func settleBench() { time.Sleep(time.Second) }

// clockTick is the unit of utime and stime in /proc/<pid>/stat (USER_HZ,
// 100 on Linux).
const clockTick = 10 * time.Millisecond

// cpuTime is the CPU time (user + system, all threads, in 10 ms ticks)
// process pid has used so far. CPU time, unlike wall time, does not count
// the time other processes held the cores.
func cpuTime(b testing.TB, pid int) time.Duration {
	b.Helper()
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatalf("read CPU time: %v", err)
	}
	// The fields after the command name (which may hold spaces) in
	// parentheses: state is field 3, utime 14, stime 15.
	f := strings.Fields(string(raw[bytes.LastIndexByte(raw, ')')+1:]))
	if len(f) < 13 {
		b.Fatalf("read CPU time: short /proc/%d/stat", pid)
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		b.Fatalf("read CPU time: /proc/%d/stat: %q %q", pid, f[11], f[12])
	}
	return time.Duration(ut+st) * clockTick
}

// runFor sends l from conc clients, each sending its next request as soon
// as its last answer ended, for d; it returns the number of answers.
func (e *benchEnv) runFor(b *testing.B, base string, l benchLoad, conc int, d time.Duration) int64 {
	var n atomic.Int64
	end := time.Now().Add(d)
	var wg sync.WaitGroup
	for range conc {
		wg.Go(func() {
			for time.Now().Before(end) {
				if _, err := e.one(base, l); err != nil {
					b.Error(err)
					return
				}
				n.Add(1)
			}
		})
	}
	wg.Wait()
	return n.Load()
}

// rssDuration is how long BenchmarkPeakRSS loads each proxy:
// CLAUDEFLARE_E2E_RSS_DURATION (a Go duration), one minute by default.
func rssDuration(b *testing.B) time.Duration {
	v := os.Getenv("CLAUDEFLARE_E2E_RSS_DURATION")
	if v == "" {
		return time.Minute
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		b.Fatalf("CLAUDEFLARE_E2E_RSS_DURATION=%q: not a duration", v)
	}
	return d
}

// BenchmarkPeakRSS: the resident size of each process idle after start
// (no request served yet), then its peak (VmHWM, reset first) over a
// closed-loop run of 32 clients sending Claude Code-like 200 KB bodies
// for CLAUDEFLARE_E2E_RSS_DURATION (default 1m), the bare proxy first,
// then claudeflare; b.N runs each (the peak is the highest). Issue 16's
// goals: cf_peak_MB <= 64, cf_idle_MB < 24. cf_dropped_payloads is how
// many payloads the daemon's recorder dropped to stay within
// log.queue_bytes meanwhile (the goal is met with the payloads kept).
// CLAUDEFLARE_E2E_BENCH_CONFIG is TOML for the daemon, as for
// BenchmarkLatency and BenchmarkThroughput.
func BenchmarkPeakRSS(b *testing.B) {
	e := newBenchEnv(b, os.Getenv("CLAUDEFLARE_E2E_BENCH_CONFIG"))
	l := load200K()
	d := rssDuration(b)
	// Idle after start: what the processes hold before any request, once
	// their start-up work is done.
	time.Sleep(2 * time.Second)
	bareIdle, cfIdle := e.bare.proc(b).RSS, e.d.proc(b).RSS
	var barePeak, cfPeak, bareAfter, cfAfter int64
	var bareN, cfN int64
	var bareCPU, cfCPU time.Duration
	b.ResetTimer()
	for range b.N {
		c0 := cpuTime(b, e.bare.pid)
		p := peakRSS(b, e.bare, func() { bareN += e.runFor(b, e.bare.url, l, 32, d) })
		barePeak, bareAfter = max(barePeak, p), e.bare.proc(b).RSS
		settleBench()
		bareCPU += cpuTime(b, e.bare.pid) - c0
		c0 = cpuTime(b, e.d.pid)
		p = peakRSS(b, e.d, func() { cfN += e.runFor(b, e.d.url, l, 32, d) })
		cfPeak, cfAfter = max(cfPeak, p), e.d.proc(b).RSS
		settleBench()
		cfCPU += cpuTime(b, e.d.pid) - c0
	}
	b.StopTimer()
	h := e.d.health(b)
	b.ReportMetric(mbf(bareIdle), "bare_idle_MB")
	b.ReportMetric(mbf(cfIdle), "cf_idle_MB")
	b.ReportMetric(mbf(barePeak), "bare_peak_MB")
	b.ReportMetric(mbf(cfPeak), "cf_peak_MB")
	b.ReportMetric(mbf(bareAfter), "bare_after_MB")
	b.ReportMetric(mbf(cfAfter), "cf_after_MB")
	b.ReportMetric(float64(bareN)/d.Seconds()/float64(b.N), "bare_req/s")
	b.ReportMetric(float64(cfN)/d.Seconds()/float64(b.N), "cf_req/s")
	b.ReportMetric(float64(bareCPU.Microseconds())/float64(bareN), "bare_cpu_us/req")
	b.ReportMetric(float64(cfCPU.Microseconds())/float64(cfN), "cf_cpu_us/req")
	b.ReportMetric(float64(h.recorderCount("dropped_payloads")), "cf_dropped_payloads")
	b.ReportMetric(float64(h.recorderCount("dropped_records")), "cf_dropped_records")
	b.ReportMetric(0, "ns/op")
	e.stopForProfile(b)
}

// peakRSS is the peak resident size (VmHWM, reset first) of d while fn
// runs. Unlike peak it does not scrape /metrics meanwhile: that would add
// to the daemon's CPU time.
func peakRSS(b *testing.B, d *daemon, fn func()) int64 {
	if err := d.resetPeak(); err != nil {
		b.Logf("cannot reset the peak RSS (%v): the figure includes earlier peaks", err)
	}
	fn()
	return d.proc(b).HWM
}

// profileEnv is the environment that makes a process profile itself
// (CLAUDEFLARE_E2E_CPUPROFILE), as name, or nil.
func profileEnv(name string) []string {
	dir := os.Getenv("CLAUDEFLARE_E2E_CPUPROFILE")
	if dir == "" {
		return nil
	}
	return []string{"CLAUDEFLARE_E2E_CPUPROFILE=" + filepath.Join(dir, name+".pprof")}
}

// stopForProfile ends both processes with SIGTERM when they profile
// themselves, so that their profiles are written.
func (e *benchEnv) stopForProfile(b *testing.B) {
	if os.Getenv("CLAUDEFLARE_E2E_CPUPROFILE") == "" {
		return
	}
	if err := e.d.stop(b); err != nil {
		b.Logf("daemon: %v", err)
	}
	if err := e.bare.stop(b); err != nil {
		b.Logf("bare: %v", err)
	}
}

// profiled runs a process of this test binary (run: the daemon or the
// bare proxy) with a CPU profile of its whole life written to
// $CLAUDEFLARE_E2E_CPUPROFILE, stopped when run returns or at SIGTERM.
func profiled(run func() int) int {
	path := os.Getenv("CLAUDEFLARE_E2E_CPUPROFILE")
	if path == "" {
		return run()
	}
	f, err := os.Create(path)
	if err != nil {
		fmt.Fprintln(os.Stderr, "cpu profile:", err)
		return 1
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		fmt.Fprintln(os.Stderr, "cpu profile:", err)
		return 1
	}
	var once sync.Once
	stop := func() { once.Do(func() { pprof.StopCPUProfile(); f.Close() }) }
	if os.Getenv("CLAUDEFLARE_E2E_BARE") == "1" {
		// The bare proxy serves until killed: SIGTERM ends it here.
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGTERM)
		go func() { <-sig; stop(); os.Exit(0) }()
	}
	code := run()
	stop()
	return code
}
