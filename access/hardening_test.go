package access_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/claudeflare/claudeflare/access"
	"github.com/claudeflare/claudeflare/config"
)

// A revoked key gets the same answer as a key that never existed; the
// audit log still says which it was.
func TestRevokedAndUnknownKeysLookAlike(t *testing.T) {
	h := newHarness(t, nil)
	h.key("keep", access.RoleAPI)
	gone := h.key("gone", access.RoleAPI)
	if _, err := access.RevokeKey(context.Background(), h.vdb, h.akey, "gone", "test", h.clk.Now()); err != nil {
		t.Fatal(err)
	}
	if err := h.g.Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	revoked := h.do("POST", "/v1/messages", "x-api-key", gone)
	unknown := h.do("POST", "/v1/messages", "x-api-key", "cf_"+strings.Repeat("Q", 43))
	none := h.do("POST", "/v1/messages")
	for _, r := range []reply{revoked, unknown, none} {
		h.expect(r, 401, "authentication_error")
	}
	msg := func(r reply) string { // the error, without the request's own id
		i := strings.Index(r.body, `"message"`)
		j := strings.Index(r.body, `,"request_id"`)
		if j < i {
			j = len(r.body)
		}
		return r.body[i:j]
	}
	if msg(revoked) != msg(unknown) || msg(unknown) != msg(none) {
		t.Fatalf("answers differ:\nrevoked %s\nunknown %s\nnone    %s", revoked.body, unknown.body, none.body)
	}
	if err := h.g.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if rows := h.auditRows(); countPrefix(rows, "revoked key: 1") != 1 || countPrefix(rows, "invalid key: 1") != 1 {
		t.Fatalf("the audit log lost the reasons: %v", rows)
	}
}

// allowed_origins = "*" is not honoured while no client key exists: a
// web page from anywhere must not drive a keyless loopback proxy. The
// daemon says so at start.
func TestAnyOriginNeedsKeys(t *testing.T) {
	h := newHarness(t, func(c *config.Config) { c.AllowedOrigins = []string{"*"} })
	h.g.Start()
	const evil = "https://evil.example"
	h.expect(h.do("POST", "/v1/messages", "Origin", evil), 403, "permission_error")
	h.expect(h.do("OPTIONS", "/v1/messages", "Origin", evil, "Access-Control-Request-Method", "POST"), 403, "permission_error")
	if !strings.Contains(h.logs.String(), `allowed_origins = \"*\" is ignored while no client API keys exist`) {
		t.Fatalf("no warning at start:\n%s", h.logs.String())
	}
	// A plain loopback client without an Origin is served as before.
	h.expect(h.do("POST", "/v1/messages"), 200, "")

	key := h.key("web", access.RoleAPI)
	r := h.do("POST", "/v1/messages", "Origin", evil, "x-api-key", key)
	h.expect(r, 200, "")
	if r.header.Get("Access-Control-Allow-Origin") != evil {
		t.Fatalf("with keys, * no longer allows the origin: %v", r.header)
	}
}

// A scan from many addresses adds a bounded number of failed-auth rows a
// minute: one per address for the first few, then one row for the rest.
func TestFailedAuthRowsBounded(t *testing.T) {
	h := newHarness(t, nil)
	h.key("k", access.RoleAPI)
	next := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { t.Error("a request without a key was served") })
	const scanners = 1000
	for i := range scanners {
		req := httptest.NewRequest("POST", "/v1/messages", nil)
		req.RemoteAddr = fmt.Sprintf("198.51.%d.%d:40000", i/250, i%250+1)
		rec := httptest.NewRecorder()
		h.g.Wrap(next).ServeHTTP(rec, req)
		if rec.Code != 401 {
			t.Fatalf("%d", rec.Code)
		}
	}
	if err := h.g.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	rows := h.auditRows()
	failed := countPrefix(rows, "auth.failed")
	if failed > 40 {
		t.Fatalf("%d failed-auth rows for one minute of scanning", failed)
	}
	var agg string
	for _, r := range rows {
		if strings.Contains(r, "more addresses") {
			agg = r
		}
	}
	if want := fmt.Sprintf("%d failed authentications from %d more addresses", scanners-(failed-1), scanners-(failed-1)); !strings.Contains(agg, want) {
		t.Fatalf("aggregated row %q, want %q (rows: %d)", agg, want, failed)
	}
}

// A client that trickles the body of a request the guard refuses cannot
// hold it open: the answer comes once server.body_read_timeout passes.
func TestRefusedSlowBodyBounded(t *testing.T) {
	h := newHarness(t, func(c *config.Config) { c.Server.BodyReadTimeout = config.Duration(300 * time.Millisecond) })
	h.key("k", access.RoleAPI)
	addr := strings.TrimPrefix(h.srv.URL, "http://")
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(conn, "POST /v1/messages HTTP/1.1\r\nHost: %s\r\nContent-Length: 1000\r\n\r\n{\"a\":", addr)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("no answer while the body trickles: %v", err)
	}
	io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != 401 {
		t.Fatalf("status %d", resp.StatusCode)
	}
}
