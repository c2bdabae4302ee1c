package proxy

import (
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/claudeflare/claudeflare/config"
)

// The benchmarks run the daemon's handler and a bare httputil.ReverseProxy
// against the same in-process fake API, in the same run, with recording and
// payload capture on:
//
//	go test -run '^$' -bench . -benchtime 3000x ./proxy/
//
// BenchmarkVsBare reports the requests/s of each, their ratio and the mean
// time to first byte; BenchmarkHandler reports allocations per request of
// each (the fake and the client allocate the same in both).

const benchConcurrency = 16

type benchEnv struct {
	h      *harness
	bare   string // base URL of the bare reverse proxy
	client *http.Client
	// bareErrors counts failed requests through the bare proxy: under
	// load it now and then loses an upstream connection mid-stream
	// ("use of closed network connection"); that is the baseline's
	// problem, reported as a metric. Any failure through claudeflare
	// fails the benchmark.
	bareErrors atomic.Int64
}

func newBenchEnv(b *testing.B) *benchEnv {
	h := newHarness(b, forBench, withConfig(func(c *config.Config) {
		c.Log.Payloads = config.PayloadsFull
		c.Log.FlushInterval = config.Duration(50 * time.Millisecond)
	}))
	h.addOAuth("work", 0, false)
	h.reload()
	h.api.SetMaxRecorded(16)
	// Warm the token cache.
	if rep := h.post(msgBody); rep.status != 200 {
		b.Fatal(rep.status)
	}
	tok := h.srv.tokens.slot(h.account("work").ID).Load().secret

	up, _ := url.Parse(h.api.URL)
	bare := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(up)
			r.Out.Host = ""
			r.Out.Header.Del("X-Api-Key")
			r.Out.Header.Set("Authorization", "Bearer "+tok)
			r.Out.Header.Set("Anthropic-Beta", OAuthBeta)
		},
		Transport:     &http.Transport{MaxIdleConnsPerHost: 256, ForceAttemptHTTP2: true},
		FlushInterval: -1,
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	bs := &http.Server{Handler: bare, ReadHeaderTimeout: 10 * time.Second}
	go bs.Serve(ln)
	b.Cleanup(func() { bs.Close() })
	return &benchEnv{
		h:    h,
		bare: "http://" + ln.Addr().String(),
		client: &http.Client{Transport: &http.Transport{
			MaxIdleConnsPerHost: 256, DisableCompression: true,
		}},
	}
}

// one sends a request and reads the whole response; it returns the time
// to the first body byte.
func (e *benchEnv) one(b *testing.B, base, body string) time.Duration {
	fail := func(err any) {
		if base == e.bare {
			e.bareErrors.Add(1)
			return
		}
		b.Error(err)
	}
	start := time.Now()
	req, _ := http.NewRequest(http.MethodPost, base+"/v1/messages?beta=true", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Anthropic-Version", "2023-06-01")
	resp, err := e.client.Do(req)
	if err != nil {
		fail(err)
		return 0
	}
	var one [1]byte
	if _, err := io.ReadFull(resp.Body, one[:]); err != nil {
		fail(err)
	}
	ttfb := time.Since(start)
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		fail(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		fail(resp.Status)
	}
	return ttfb
}

// run sends n requests from benchConcurrency goroutines; it returns the
// wall time and the mean time to first byte.
func (e *benchEnv) run(b *testing.B, base, body string, n int) (time.Duration, time.Duration) {
	return e.runC(b, base, body, n, benchConcurrency)
}

func (e *benchEnv) runC(b *testing.B, base, body string, n, conc int) (time.Duration, time.Duration) {
	var next, ttfbSum atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for range conc {
		wg.Go(func() {
			for next.Add(1) <= int64(n) {
				ttfbSum.Add(int64(e.one(b, base, body)))
			}
		})
	}
	wg.Wait()
	return time.Since(start), time.Duration(ttfbSum.Load() / int64(max(n, 1)))
}

func benchBodies() map[string]string {
	return map[string]string{"json": msgBody, "sse": streamBody}
}

// BenchmarkVsBare interleaves the two proxies request by request:
// benchConcurrency workers each send one request through the bare proxy,
// then one through claudeflare, and so on, adding up the time each
// request took from send to the last byte. At equal concurrency the
// throughput ratio is the inverse ratio of those sums; interleaving this
// finely keeps load from elsewhere on the machine from favouring either.
func BenchmarkVsBare(b *testing.B) {
	for _, kind := range []string{"json", "sse"} {
		b.Run(kind, func(b *testing.B) {
			e := newBenchEnv(b)
			body := benchBodies()[kind]
			e.run(b, e.bare, body, 200) // warm both connection pools
			e.run(b, e.h.url, body, 200)
			var next, bareSum, cfSum, bareTTFB, cfTTFB atomic.Int64
			var wg sync.WaitGroup
			b.ResetTimer()
			start := time.Now()
			for range benchConcurrency {
				wg.Go(func() {
					for next.Add(1) <= int64(b.N) {
						t0 := time.Now()
						bareTTFB.Add(int64(e.one(b, e.bare, body)))
						t1 := time.Now()
						cfTTFB.Add(int64(e.one(b, e.h.url, body)))
						bareSum.Add(int64(t1.Sub(t0)))
						cfSum.Add(int64(time.Since(t1)))
					}
				})
			}
			wg.Wait()
			wall := time.Since(start)
			b.StopTimer()
			n := float64(b.N)
			bareLat, cfLat := float64(bareSum.Load())/n, float64(cfSum.Load())/n // ns per request
			b.ReportMetric(benchConcurrency*1e9/bareLat, "bare_req/s")
			b.ReportMetric(benchConcurrency*1e9/cfLat, "claudeflare_req/s")
			b.ReportMetric(bareLat/cfLat, "ratio")
			b.ReportMetric(2*n/wall.Seconds(), "total_req/s")
			b.ReportMetric(float64(bareTTFB.Load())/n/1e3, "bare_ttfb_us")
			b.ReportMetric(float64(cfTTFB.Load())/n/1e3, "claudeflare_ttfb_us")
			b.ReportMetric(float64(e.bareErrors.Load()), "bare_errors")
			b.ReportMetric(0, "ns/op")
		})
	}
}

func BenchmarkHandler(b *testing.B) {
	for _, kind := range []string{"json", "sse"} {
		for _, which := range []string{"bare", "claudeflare"} {
			b.Run(kind+"/"+which, func(b *testing.B) {
				e := newBenchEnv(b)
				base := e.bare
				if which == "claudeflare" {
					base = e.h.url
				}
				body := benchBodies()[kind]
				e.run(b, base, body, 200)
				b.ReportAllocs()
				b.ResetTimer()
				_, ttfb := e.run(b, base, body, b.N)
				b.ReportMetric(float64(ttfb.Microseconds()), "ttfb_us")
			})
		}
	}
}

// BenchmarkTTFB sends one request at a time, alternating between the two
// proxies, so the time to first byte is the proxy's own latency rather
// than queueing.
func BenchmarkTTFB(b *testing.B) {
	for _, kind := range []string{"json", "sse"} {
		b.Run(kind, func(b *testing.B) {
			e := newBenchEnv(b)
			body := benchBodies()[kind]
			e.runC(b, e.bare, body, 50, 1)
			e.runC(b, e.h.url, body, 50, 1)
			b.ResetTimer()
			var bare, cf time.Duration
			for range b.N {
				_, f := e.runC(b, e.bare, body, 1, 1)
				bare += f
				_, f = e.runC(b, e.h.url, body, 1, 1)
				cf += f
			}
			b.StopTimer()
			n := time.Duration(max(b.N, 1))
			b.ReportMetric(float64((bare / n).Microseconds()), "bare_ttfb_us")
			b.ReportMetric(float64((cf / n).Microseconds()), "claudeflare_ttfb_us")
			b.ReportMetric(float64((cf-bare)/n)/1e3, "delta_ttfb_us")
			b.ReportMetric(float64(e.bareErrors.Load()), "bare_errors")
			b.ReportMetric(0, "ns/op")
		})
	}
}
