package proxy

import (
	"bytes"
	"context"
	"database/sql"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/claudeflare/claudeflare/config"
	"github.com/claudeflare/claudeflare/internal/testutil"
	"github.com/claudeflare/claudeflare/store"
)

func TestRecorderFullQueueDropsWithoutBlocking(t *testing.T) {
	h := newHarness(t)
	logs := &syncBuffer{}
	r := newRecorder(h.ldb, h.vault, slog.New(slog.NewTextHandler(logs, nil)), h.clock.Now, recorderOptions{
		Payloads: "full", MaxBytes: 1 << 10, QueueSize: 4, BatchSize: 2, FlushInterval: time.Hour,
	})
	// Not running yet: the queue fills up and submit must not block.
	for i := range 10 {
		r.submit(&record{
			row: store.Request{ID: h.srv.ids.Next(h.clock.Now()), TS: int64(i), Method: "POST", Path: "/v1/messages"},
			pay: &capture{method: "POST", path: "/v1/messages", reqHeader: http.Header{}, respHeader: http.Header{}},
		})
	}
	if got := r.droppedRecords.Load(); got != 6 {
		t.Fatalf("dropped %d records, want 6", got)
	}
	// The 4th record was queued without its payload (queue 3/4 full),
	// and each of the 6 dropped records took its payload with it.
	if got := r.droppedPayloads.Load(); got != 7 {
		t.Fatalf("dropped %d payloads, want 7", got)
	}
	if n := strings.Count(logs.String(), "request log queue full"); n != 1 {
		t.Fatalf("drop logged %d times, want once a minute", n)
	}
	go r.run()
	r.close(context.Background())
	var nReq, nPay int
	h.ldb.R.Get(&nReq, `SELECT count(*) FROM requests`)
	h.ldb.R.Get(&nPay, `SELECT count(*) FROM payloads`)
	if nReq != 4 || nPay != 3 {
		t.Fatalf("%d rows, %d payloads after close", nReq, nPay)
	}
	// After close, submit drops instead of panicking on a closed channel.
	r.submit(&record{row: store.Request{ID: "late"}})
}

func openCapture(t *testing.T, h *harness, id string) *store.Capture {
	t.Helper()
	h.rows() // flush
	var p struct {
		KeyID     int64  `db:"key_id"`
		Sealed    []byte `db:"sealed"`
		Truncated bool   `db:"truncated"`
	}
	err := h.ldb.R.Get(&p, `SELECT p.key_id, p.sealed, p.truncated FROM payloads p JOIN requests r ON r.seq = p.request_seq WHERE r.id = ?`, id)
	if err != nil {
		t.Fatal(err)
	}
	plain, err := h.vault.OpenPayload(p.KeyID, id, p.Sealed)
	if err != nil {
		t.Fatal(err)
	}
	c, err := store.UnmarshalCapture(plain)
	if err != nil {
		t.Fatal(err)
	}
	if p.Truncated != (c.Request.Truncated || c.Response.Truncated) {
		t.Fatal("truncated flag disagrees with the capture")
	}
	return c
}

func TestPayloadCaptureRules(t *testing.T) {
	secret := "sk-ant-api03-" + strings.Repeat("Z", 40)

	t.Run("redact and cap", func(t *testing.T) {
		// The secret lies wholly before the cap, so only redaction can
		// keep it out of what is stored.
		const maxBytes = 120
		tail := `"}],"model":"claude-sonnet-4-5","max_tokens":64,"system":"` + strings.Repeat("p", 100) + `"}`
		body := `{"messages":[{"role":"user","content":"` + secret + tail
		if i := strings.Index(body, secret); i+len(secret) > maxBytes || len(body) <= maxBytes {
			t.Fatalf("secret at %d..%d of %d bytes", i, i+len(secret), len(body))
		}
		h := newHarness(t, withConfig(func(c *config.Config) { c.Log.PayloadMaxBytes = maxBytes }))
		h.addOAuth("work", 0, false)
		h.reload()
		rep := h.post(body)
		if rep.status != 200 {
			t.Fatalf("%d %s", rep.status, rep.body)
		}
		c := openCapture(t, h, rep.header.Get("X-Claudeflare-Request-Id"))
		want := (`{"messages":[{"role":"user","content":"` + Redacted + tail)[:maxBytes]
		if string(c.Request.Body) != want || !c.Request.Truncated {
			t.Fatalf("request body %q truncated=%v, want %q", c.Request.Body, c.Request.Truncated, want)
		}
		if !c.Response.Truncated || len(c.Response.Body) != maxBytes {
			t.Fatalf("response body %d bytes truncated=%v", len(c.Response.Body), c.Response.Truncated)
		}
	})
	t.Run("redact a custom pattern in headers and bodies", func(t *testing.T) {
		h := newHarness(t, withConfig(func(c *config.Config) {
			c.Log.Redact = []string{`hunter[0-9]+`}
			*c = withRedactors(t, *c)
		}))
		h.addOAuth("work", 0, false)
		h.reload()
		rep := h.do(context.Background(), http.MethodPost, "/v1/messages", strings.Replace(msgBody, "hi", "hunter22", 1),
			http.Header{"X-Note": {"pw hunter42"}})
		c := openCapture(t, h, rep.header.Get("X-Claudeflare-Request-Id"))
		if strings.Contains(string(c.Request.Body), "hunter22") || c.Request.Headers["X-Note"][0] != "pw "+Redacted {
			t.Fatalf("%q %v", c.Request.Body, c.Request.Headers["X-Note"])
		}
	})
	t.Run("headers only", func(t *testing.T) {
		h := newHarness(t, withConfig(func(c *config.Config) { c.Log.Payloads = config.PayloadsHeaders }))
		h.addOAuth("work", 0, false)
		h.reload()
		rep := h.post(msgBody)
		c := openCapture(t, h, rep.header.Get("X-Claudeflare-Request-Id"))
		if c.Request.Body != nil || c.Response.Body != nil || !c.Request.BodyOmitted || c.Response.Headers["Content-Type"] == nil {
			t.Fatalf("%+v", c)
		}
	})
	t.Run("body paths", func(t *testing.T) {
		h := newHarness(t, withConfig(func(c *config.Config) { c.Log.BodyPaths = []string{"/v1/messages/count_tokens"} }))
		h.addOAuth("work", 0, false)
		h.reload()
		rep := h.post(msgBody)
		if c := openCapture(t, h, rep.header.Get("X-Claudeflare-Request-Id")); !c.Request.BodyOmitted {
			t.Fatal("body kept outside log.body_paths")
		}
		rep = h.do(context.Background(), http.MethodPost, "/v1/messages/count_tokens", msgBody, nil)
		if c := openCapture(t, h, rep.header.Get("X-Claudeflare-Request-Id")); string(c.Request.Body) != msgBody || len(c.Response.Body) == 0 {
			t.Fatalf("body not kept inside log.body_paths: %+v", c)
		}
	})
	t.Run("body paths, escaped", func(t *testing.T) {
		// log.body_paths are matched against the canonical (escaped)
		// path, the same for the request's body and the answer's.
		h := newHarness(t, withConfig(func(c *config.Config) { c.Log.BodyPaths = []string{"/v1/files/a%20b"} }))
		h.addOAuth("work", 0, false)
		h.reload()
		rep := h.do(context.Background(), http.MethodPost, "/v1/files/a%20b?x=1", msgBody, nil)
		if c := openCapture(t, h, rep.header.Get("X-Claudeflare-Request-Id")); string(c.Request.Body) != msgBody || len(c.Response.Body) == 0 {
			t.Fatalf("status %d: bodies not both kept inside log.body_paths: %+v", rep.status, c)
		}
	})
	t.Run("off", func(t *testing.T) {
		h := newHarness(t, withConfig(func(c *config.Config) { c.Log.Payloads = config.PayloadsOff }))
		h.addOAuth("work", 0, false)
		h.reload()
		h.post(msgBody)
		h.rows()
		var n int
		h.ldb.R.Get(&n, `SELECT count(*) FROM payloads`)
		if n != 0 {
			t.Fatalf("%d payloads with log.payloads = off", n)
		}
	})
}

// withRedactors recompiles the redaction patterns the way config.Load does.
func withRedactors(t *testing.T, c config.Config) config.Config {
	t.Helper()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if len(c.Redactors()) != len(c.Log.Redact) {
		t.Fatalf("redactors not compiled: %d", len(c.Redactors()))
	}
	return c
}

// holdLogWriteLock takes the request log's write lock from another
// connection, as a sqlite3 shell or a long cleanup would: the recorder's
// writer then waits in its busy handler. The returned func lets go.
func holdLogWriteLock(t *testing.T, h *harness) func() {
	t.Helper()
	db, err := sql.Open("sqlite3", "file:"+h.ldb.Path+"?_txlock=immediate")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	tx, err := db.Begin()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(`DELETE FROM requests WHERE 0`); err != nil {
		t.Fatal(err)
	}
	return func() { tx.Rollback() }
}

// bigRecord is a request with a 64 KB body and a 64 KB answer.
func bigRecord(h *harness, i int) *record {
	resp := getCapBuf(256 << 10)
	resp.Write(bytes.Repeat([]byte("a"), 64<<10))
	return &record{
		row: store.Request{ID: h.srv.ids.Next(h.clock.Now()), TS: int64(i), Method: "POST", Path: "/v1/messages"},
		pay: &capture{method: "POST", path: "/v1/messages", reqHeader: http.Header{"Content-Type": {"application/json"}},
			reqBody: bytes.Repeat([]byte("q"), 64<<10), status: 200, respHeader: http.Header{}, respBody: resp},
	}
}

// TestRecorderQueueBoundedByBytes holds the log's write lock while big
// requests keep coming: the memory the queue holds stays within
// log.queue_bytes, payloads go first and their rows are kept, rows are
// dropped only once even they do not fit, every drop is counted, and
// once the lock is gone every queued row and payload is written.
func TestRecorderQueueBoundedByBytes(t *testing.T) {
	h := newHarness(t)
	const bound = 1 << 20
	r := newRecorder(h.ldb, h.vault, slog.New(slog.DiscardHandler), h.clock.Now, recorderOptions{
		Payloads: "full", MaxBytes: 1 << 20, QueueSize: 4096, QueueBytes: bound, BatchSize: 1, FlushInterval: time.Hour,
	})
	go r.run()
	unlock := holdLogWriteLock(t, h)
	// The writer takes the first record and waits for the lock.
	r.submit(bigRecord(h, 0))
	testutil.WaitFor(t, "the writer to take the first record", func() bool { return len(r.ch) == 0 })

	check := func() {
		t.Helper()
		if got := r.queuedBytes.Load(); got > bound {
			t.Fatalf("queued records hold %d bytes, over log.queue_bytes %d", got, bound)
		}
	}
	const nBig = 20
	for i := 1; i <= nBig; i++ {
		rec := bigRecord(h, i)
		need, before, dropped := rowBytes(&rec.row)+captureBytes(rec.pay), r.queuedBytes.Load(), r.droppedPayloads.Load()
		r.submit(rec)
		check()
		switch kept := r.droppedPayloads.Load() == dropped; {
		case kept && r.queuedBytes.Load() > bound-bound/8:
			t.Fatalf("payload queued past seven eighths of log.queue_bytes: %d bytes", r.queuedBytes.Load())
		case !kept && before+need <= bound-bound/8:
			t.Fatalf("payload dropped with %d of %d bytes queued: it fitted in seven eighths", before, bound)
		}
	}
	keptPayloads := 1 + nBig - int(r.droppedPayloads.Load())
	if keptPayloads < 3 || keptPayloads > 8 || r.droppedRecords.Load() != 0 {
		t.Fatalf("%d payloads kept, %d records dropped: want a few payloads (over 128 KB each in 1 MiB) and every row",
			keptPayloads, r.droppedRecords.Load())
	}
	// Rows alone, until even they do not fit: the payloads' room is gone,
	// the rows' eighth is left.
	rows := 0
	for r.droppedRecords.Load() == 0 {
		rec := &record{row: store.Request{ID: h.srv.ids.Next(h.clock.Now()), Method: "POST", Path: "/v1/messages", Error: strings.Repeat("e", 500)}}
		before := r.queuedBytes.Load()
		r.submit(rec)
		check()
		if r.droppedRecords.Load() == 0 {
			rows++
			continue
		}
		if before+rowBytes(&rec.row) <= bound {
			t.Fatalf("row dropped with %d of %d bytes queued: it fitted", before, bound)
		}
		if rows < 100 {
			t.Fatalf("only %d rows queued before one was dropped", rows)
		}
	}
	if dp := r.droppedPayloads.Load(); dp != int64(1+nBig-keptPayloads) {
		t.Fatalf("%d payloads counted dropped, want %d", dp, 1+nBig-keptPayloads)
	}

	unlock()
	r.close(context.Background())
	var nReq, nPay int
	h.ldb.R.Get(&nReq, `SELECT count(*) FROM requests`)
	h.ldb.R.Get(&nPay, `SELECT count(*) FROM payloads`)
	if nReq != 1+nBig+rows || nPay != keptPayloads {
		t.Fatalf("%d rows, %d payloads written, want %d, %d", nReq, nPay, 1+nBig+rows, keptPayloads)
	}
	if got := r.queuedBytes.Load(); got != 0 || r.failedRecords.Load() != 0 {
		t.Fatalf("queue written but %d bytes still counted, %d records failed", got, r.failedRecords.Load())
	}
}

// TestRecorderQueueBytesDefault: a recorder made without log.queue_bytes
// takes the default.
func TestRecorderQueueBytesDefault(t *testing.T) {
	r := testRecorder(t, 1<<20)
	if r.queueBytes != config.Default().Log.QueueBytes || r.payloadBytes != r.queueBytes/8*7 {
		t.Fatalf("queue bytes %d, payloads %d", r.queueBytes, r.payloadBytes)
	}
}

// TestRecorderStatsBytes: the queue's bytes and their bound reach
// RecorderStats (what /metrics and /health read), and a written record
// gives its bytes back.
func TestRecorderStatsBytes(t *testing.T) {
	h := newHarness(t)
	h.addOAuth("work", 0, false)
	h.reload()
	if rep := h.post(msgBody); rep.status != 200 {
		t.Fatalf("%d %s", rep.status, rep.body)
	}
	h.rows() // written
	st := h.srv.RecorderStats()
	if st.CapacityBytes != config.Default().Log.QueueBytes || st.QueuedBytes != 0 || st.DroppedPayloads != 0 {
		t.Fatalf("stats %+v", st)
	}
}

// TestRecorderQueueBytesFromConfig: log.queue_bytes reaches the recorder
// (the server passes it on, not only the default).
func TestRecorderQueueBytesFromConfig(t *testing.T) {
	h := newHarness(t, withConfig(func(c *config.Config) { c.Log.QueueBytes = 3 << 20 }))
	if st := h.srv.RecorderStats(); st.CapacityBytes != 3<<20 {
		t.Fatalf("capacity %d bytes, want the configured %d", st.CapacityBytes, 3<<20)
	}
}
