package proxy

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/claudeflare/claudeflare/config"
)

// slowBody opens a connection and sends a request's headers, promising
// contentLength bytes of body, and the first part of them. The caller
// reads the answer (or closes the connection).
func slowBody(t *testing.T, addr string, contentLength int, part string) (net.Conn, *bufio.Reader) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	fmt.Fprintf(conn, "POST /v1/messages HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", addr, contentLength, part)
	return conn, bufio.NewReader(conn)
}

func readAnswer(t *testing.T, br *bufio.Reader) (*http.Response, string) {
	t.Helper()
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("no answer: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// A client that stops sending its body gets 408 once
// server.body_read_timeout passes, and nothing reaches the upstream.
func TestSlowBodyTimesOut(t *testing.T) {
	h := newHarness(t, withConfig(func(c *config.Config) {
		c.Server.BodyReadTimeout = config.Duration(300 * time.Millisecond)
	}))
	h.addOAuth("work", 0, false)
	h.reload()
	addr := strings.TrimPrefix(h.url, "http://")

	conn, br := slowBody(t, addr, 1000, `{"model":`)
	// Without a body deadline the proxy would wait for the rest forever;
	// the client's own deadline (10s) then fails the test.
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	resp, body := readAnswer(t, br)
	if resp.StatusCode != http.StatusRequestTimeout {
		t.Fatalf("status %d, want 408: %s", resp.StatusCode, body)
	}
	if e := decodeError(t, []byte(body)); !strings.Contains(e.Error.Message, "server.body_read_timeout") {
		t.Fatalf("message does not name the setting: %q", e.Error.Message)
	}
	if got := h.apiRequests(); len(got) != 0 {
		t.Fatalf("a half-sent body reached the upstream: %+v", got)
	}
	if row := h.lastRow(); row.Status != http.StatusRequestTimeout {
		t.Fatalf("logged status %d, want 408", row.Status)
	}
	if now, _ := h.srv.BodyBytesInFlight(); now != 0 {
		t.Fatalf("%d body bytes still reserved after the request ended", now)
	}

	// The deadline covers the body only: a stream that lasts longer than
	// it still reaches its end.
	h.api.SetEventDelay(150 * time.Millisecond)
	r := h.post(streamBody)
	if r.err != nil || r.status != 200 || !strings.Contains(string(r.body), "message_stop") {
		t.Fatalf("a stream longer than body_read_timeout was cut: %v %d %s", r.err, r.status, r.body)
	}
	if row := h.lastRow(); row.EndState != EndComplete {
		t.Fatalf("stream logged as %s: %s", row.EndState, row.Error)
	}
}

// Bodies in flight together hold at most server.max_inflight_body_bytes;
// past it a request gets 503 with x-should-retry: true and retry-after.
func TestInflightBodyBudget(t *testing.T) {
	const budget = 4 * bodyInitialCap
	h := newHarness(t, withConfig(func(c *config.Config) {
		c.Server.MaxInflightBodyBytes = budget
	}))
	h.addOAuth("work", 0, false)
	h.reload()
	addr := strings.TrimPrefix(h.url, "http://")

	// Four slow bodies of 1 MiB each: each holds what arrived so far
	// (the first buffer), the four together the whole budget.
	var conns []net.Conn
	for i := range 4 {
		c, _ := slowBody(t, addr, 1<<20, "{")
		conns = append(conns, c)
		want := int64(i+1) * bodyInitialCap
		waitFor(t, "body reserved", func() bool { now, _ := h.srv.BodyBytesInFlight(); return now == want })
	}
	// A fifth is refused at once rather than queued or buffered.
	_, br := slowBody(t, addr, 1<<20, "{")
	resp, body := readAnswer(t, br)
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("X-Should-Retry") != "true" || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("past the budget: %d %v %s", resp.StatusCode, resp.Header, body)
	}
	if e := decodeError(t, []byte(body)); !strings.Contains(e.Error.Message, "server.max_inflight_body_bytes") {
		t.Fatalf("message does not name the setting: %q", e.Error.Message)
	}
	// A small request still fits once the slow ones are gone.
	for _, c := range conns {
		c.Close()
	}
	waitFor(t, "budget released", func() bool { now, _ := h.srv.BodyBytesInFlight(); return now == 0 })
	if r := h.post(msgBody); r.status != 200 {
		t.Fatalf("after release: %d %s", r.status, r.body)
	}
	if _, peak := h.srv.BodyBytesInFlight(); peak > budget {
		t.Fatalf("bodies held %d bytes at most, over the budget of %d", peak, budget)
	}
	if got := len(h.apiRequests()); got != 1 {
		t.Fatalf("upstream got %d requests, want 1", got)
	}
}

// A Content-Length of 32 MiB with 10 bytes sent does not make the proxy
// allocate 32 MiB: the buffer follows the bytes that arrived.
func TestBodyBufferFollowsBytes(t *testing.T) {
	h := newHarness(t)
	h.addOAuth("work", 0, false)
	h.reload()
	addr := strings.TrimPrefix(h.url, "http://")

	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	conn, _ := slowBody(t, addr, 32<<20, `{"model":"`)
	waitFor(t, "body read begun", func() bool { now, _ := h.srv.BodyBytesInFlight(); return now > 0 })
	runtime.ReadMemStats(&after)
	if now, _ := h.srv.BodyBytesInFlight(); now > bodyInitialCap {
		t.Fatalf("%d bytes reserved for 10 bytes received", now)
	}
	if d := after.TotalAlloc - before.TotalAlloc; d > 8<<20 {
		t.Fatalf("%d bytes allocated while 10 bytes of a 32 MiB body arrived", d)
	}
	conn.Close()
	waitFor(t, "budget released", func() bool { now, _ := h.srv.BodyBytesInFlight(); return now == 0 })
}

// Bodies larger than the first buffer arrive whole (the buffer grows).
func TestLargeBodyForwardedWhole(t *testing.T) {
	h := newHarness(t)
	h.addOAuth("work", 0, false)
	h.reload()
	pad := strings.Repeat("x", 300<<10)
	body := `{"model":"claude-sonnet-4-5","max_tokens":64,"messages":[{"role":"user","content":"` + pad + `"}]}`
	if r := h.post(body); r.status != 200 {
		t.Fatalf("%d %s", r.status, r.body)
	}
	got := h.apiRequests()
	if len(got) != 1 || string(got[0].Body) != body {
		t.Fatalf("upstream got a different body (%d requests)", len(got))
	}
	if now, _ := h.srv.BodyBytesInFlight(); now != 0 {
		t.Fatalf("%d bytes still reserved", now)
	}
}
