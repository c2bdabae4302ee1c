package proxy

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/claudeflare/claudeflare/internal/apierr"
)

// rawResult is an answer to a request written byte for byte.
type rawResult struct {
	status int
	header http.Header
	body   string
}

// rawRequest writes method and target exactly as given (curl
// --path-as-is), so no client library cleans or re-escapes the path.
func rawRequest(t testing.TB, addr, method, target, body string, headers ...string) rawResult {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n", method, target, addr)
	for i := 0; i+1 < len(headers); i += 2 {
		fmt.Fprintf(&b, "%s: %s\r\n", headers[i], headers[i+1])
	}
	if body != "" {
		fmt.Fprintf(&b, "Content-Type: application/json\r\nContent-Length: %d\r\n", len(body))
	}
	b.WriteString("\r\n")
	b.WriteString(body)
	if _, err := io.WriteString(conn, b.String()); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("%s %s: %v", method, target, err)
	}
	defer resp.Body.Close()
	rb, _ := io.ReadAll(resp.Body)
	return rawResult{resp.StatusCode, resp.Header, string(rb)}
}

// The proxy on its own (no guard in front) serves only canonical request
// targets and sends the upstream exactly that path, query untouched.
func TestNonCanonicalTargetsRefused(t *testing.T) {
	h := newHarness(t)
	h.addOAuth("work", 0, false)
	h.reload()
	addr := strings.TrimPrefix(h.url, "http://")

	for _, tc := range []struct{ method, target string }{
		{"GET", "/v1/models/x%2F..%2F..%2F..%2Fhealth"},
		{"POST", "/v1/messages%2F..%2F..%2Fhealth"},
		{"GET", "/v1/x%2F..%2F.."},
		{"CONNECT", "/v1/../health"},
		{"GET", "/v1/../metrics"},
		{"GET", "//v1/messages"},
		{"GET", "/v1//messages"},
		{"GET", "/v1/./messages"},
		{"GET", "/v1/messages/."},
		{"GET", "/v1/models/.."},
		{"GET", `/v1\messages`},
		{"GET", "/v1%5Cmessages"},
		{"GET", "/v1/%2E%2E/health"},
		{"GET", "/v1/%2e%2e/health"},
		{"GET", "/v1/models%2f"},
		{"GET", "/v1/%252E%252E/api"},
		{"GET", "/%76%31/messages"},
		{"GET", "/v1/mod%65ls"},
		{"GET", "/v1/a%00b"},
		{"GET", "/v1/a%zz"},
		{"GET", "/v1/a%c3%a9"},
		{"GET", "http://127.0.0.1/v1/models"},
		{"GET", "*"},
	} {
		r := rawRequest(t, addr, tc.method, tc.target, msgBody)
		if r.status != http.StatusBadRequest {
			t.Errorf("%s %s: %d, want 400 (%s)", tc.method, tc.target, r.status, r.body)
			continue
		}
		if !strings.HasPrefix(r.body, "{") {
			t.Logf("%s %s: refused by net/http: %q", tc.method, tc.target, r.body)
			continue
		}
		e := decodeError(t, []byte(r.body))
		if e.Error.Type != apierr.InvalidRequest || r.header.Get("X-Should-Retry") != "false" {
			t.Errorf("%s %s: %+v, x-should-retry %q", tc.method, tc.target, e, r.header.Get("X-Should-Retry"))
		}
	}
	if got := h.apiRequests(); len(got) != 0 {
		t.Fatalf("refused targets reached the upstream: %+v", got[0])
	}

	// Canonical targets go through as they are: the query string
	// untouched, a trailing slash kept, escapes as sent.
	for _, tc := range []struct{ method, target, path, query string }{
		{"POST", "/v1/messages?beta=true", "/v1/messages", "beta=true"},
		{"POST", "/v1/messages/?beta=true&x=%2F..%2F", "/v1/messages/", "beta=true&x=%2F..%2F"},
		// GET /v1/models itself is claudeflare's own list (models.go).
		{"GET", "/v1/models/claude-sonnet-4-5", "/v1/models/claude-sonnet-4-5", ""},
		{"GET", "/v1/files/a%20b", "/v1/files/a b", ""},
	} {
		h.api.ResetRequests()
		body := ""
		if tc.method == "POST" {
			body = msgBody
		}
		r := rawRequest(t, addr, tc.method, tc.target, body)
		if r.status == http.StatusBadRequest && strings.Contains(r.body, "claudeflare") {
			t.Errorf("%s %s refused: %s", tc.method, tc.target, r.body)
			continue
		}
		got := h.apiRequests()
		if len(got) != 1 || got[0].Path != tc.path || got[0].RawQuery != tc.query {
			t.Errorf("%s %s: upstream got %+v, want path %q query %q", tc.method, tc.target, got, tc.path, tc.query)
		}
	}
}
