package proxy

import (
	"context"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/claudeflare/claudeflare/config"
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

func TestRecorderQueueBoundsPayloadBytes(t *testing.T) {
	h := newHarness(t)
	r := newRecorder(h.ldb, h.vault, slog.New(slog.DiscardHandler), h.clock.Now, recorderOptions{
		Payloads: "full", MaxBytes: 1 << 10, QueueSize: 64, BatchSize: 8, FlushInterval: time.Hour,
	})
	r.maxQueuedBytes = 100
	body := make([]byte, 60) // cap 60: what a payload holds is counted
	for i := range 3 {
		r.submit(&record{
			row: store.Request{ID: h.srv.ids.Next(h.clock.Now()), TS: int64(i), Method: "POST", Path: "/v1/messages"},
			pay: &capture{method: "POST", path: "/v1/messages", reqHeader: http.Header{}, reqBody: body, respHeader: http.Header{}},
		})
	}
	// The queue has room for 64 records, but the payloads' bytes only
	// for one body: the other two records are queued without theirs.
	if got := r.droppedPayloads.Load(); got != 2 {
		t.Fatalf("dropped %d payloads, want 2", got)
	}
	if got := r.queuedBytes.Load(); got != 60 {
		t.Fatalf("queued payloads hold %d bytes, want 60", got)
	}
	go r.run()
	r.close(context.Background())
	var nReq, nPay int
	h.ldb.R.Get(&nReq, `SELECT count(*) FROM requests`)
	h.ldb.R.Get(&nPay, `SELECT count(*) FROM payloads`)
	if nReq != 3 || nPay != 1 {
		t.Fatalf("%d rows, %d payloads after close, want 3, 1", nReq, nPay)
	}
	if got := r.queuedBytes.Load(); got != 0 {
		t.Fatalf("queue empty but %d payload bytes still counted", got)
	}
}
