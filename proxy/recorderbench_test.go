package proxy

import (
	"log/slog"
	"net/http"
	"runtime"
	"testing"
	"time"

	"github.com/claudeflare/claudeflare/store"
)

// BenchmarkRecorderSeal is the recorder's work for one captured request
// with a Claude Code-like 200 KB body and a 200 KB answer, off the request
// path: redact, encode and seal (the database write excluded). The
// redaction's part of it is BenchmarkRedactBody's.
//
//	go test -run '^$' -bench RecorderSeal -benchmem ./proxy
func BenchmarkRecorderSeal(b *testing.B) {
	h := newHarness(b)
	r := newRecorder(h.ldb, h.vault, slog.New(slog.DiscardHandler), h.clock.Now, recorderOptions{Payloads: "full", MaxBytes: 1 << 20})
	body := benchRedactBodies()[0].body
	resp := getCapBuf(1 << 20)
	resp.Write(body)
	rec := &record{
		row: store.Request{ID: h.srv.ids.Next(time.Now()), Method: "POST", Path: "/v1/messages"},
		pay: &capture{method: "POST", path: "/v1/messages", reqHeader: http.Header{"Content-Type": {"application/json"}},
			reqBody: body, status: 200, respHeader: http.Header{"Content-Type": {"application/json"}}, respBody: resp},
	}
	b.ReportAllocs()
	b.SetBytes(int64(2 * len(body)))
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	c0 := threadCPU()
	for b.Loop() {
		if _, err := r.seal(rec); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64((threadCPU()-c0).Microseconds())/float64(b.N), "cpu_us/op")
}
