package upstream_test

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/claudeflare/claudeflare/config"
	"github.com/claudeflare/claudeflare/internal/testcert"
	"github.com/claudeflare/claudeflare/internal/testutil"
	"github.com/claudeflare/claudeflare/upstream"
)

// The pings the tests configure: short, so a dead connection is noticed
// in about a second; the bounds asserted are ten times that, for a
// loaded machine.
const (
	testPingAfter   = 500 * time.Millisecond
	testPingTimeout = 500 * time.Millisecond
	deadBound       = 10 * (testPingAfter + testPingTimeout)
)

// relay is a TCP relay between the transport and a TLS fake. freeze
// makes its current connections silent: what either side sends is read
// and dropped, nothing arrives and nothing is closed, as when a NAT or a
// load balancer on the way forgets the connection. New connections are
// relayed as before, to the backend of the moment.
type relay struct {
	ln           net.Listener
	mu           sync.Mutex
	backend      string
	conns        []*relayConn
	accepted     atomic.Int64
	clientClosed atomic.Int64
}

type relayConn struct {
	client, server net.Conn
	frozen         atomic.Bool
}

func newRelay(t *testing.T, backend string) *relay {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &relay{ln: ln, backend: backend}
	go r.serve()
	t.Cleanup(r.close)
	return r
}

func (r *relay) URL() string { return "https://" + r.ln.Addr().String() }

func (r *relay) setBackend(addr string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.backend = addr
}

func (r *relay) serve() {
	for {
		c, err := r.ln.Accept()
		if err != nil {
			return
		}
		r.mu.Lock()
		backend := r.backend
		r.mu.Unlock()
		s, err := net.Dial("tcp", backend)
		if err != nil {
			c.Close()
			continue
		}
		rc := &relayConn{client: c, server: s}
		r.mu.Lock()
		r.conns = append(r.conns, rc)
		r.mu.Unlock()
		r.accepted.Add(1)
		go func() {
			// The client's side ends: the transport closed the connection.
			rc.pipe(s, c)
			r.clientClosed.Add(1)
			rc.closeBoth()
		}()
		go func() {
			// The server's side ends: passed on, unless frozen (silent).
			rc.pipe(c, s)
			if !rc.frozen.Load() {
				rc.closeBoth()
			}
		}()
	}
}

// pipe copies src to dst until src ends; frozen, it drops what it reads.
func (rc *relayConn) pipe(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 && !rc.frozen.Load() {
			if _, werr := dst.Write(buf[:n]); werr != nil && !rc.frozen.Load() {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (rc *relayConn) closeBoth() {
	rc.client.Close()
	rc.server.Close()
}

func (r *relay) freeze() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, rc := range r.conns {
		rc.frozen.Store(true)
	}
}

func (r *relay) close() {
	r.ln.Close()
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, rc := range r.conns {
		rc.closeBoth()
	}
}

// h2Fake is a TLS fake speaking HTTP/2: "/" answers ok, "/stream" sends
// a first line and then holds the stream open until the request ends.
func h2Fake(t *testing.T, cert *tls.Certificate) *httptest.Server {
	t.Helper()
	release := make(chan struct{})
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ProtoMajor != 2 {
			http.Error(w, "not h2: "+r.Proto, http.StatusHTTPVersionNotSupported)
			return
		}
		io.Copy(io.Discard, r.Body)
		if r.URL.Path != "/stream" {
			io.WriteString(w, "ok")
			return
		}
		io.WriteString(w, "first\n")
		w.(http.Flusher).Flush()
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	srv.EnableHTTP2 = true
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshakes are expected
	if cert != nil {
		srv.TLS = &tls.Config{Certificates: []tls.Certificate{*cert}}
	}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(release) }) // runs before srv.Close
	return srv
}

// pinnedTransport is upstream.Transport for upURL, pinned to pin,
// trusting roots, with the test's short pings.
func pinnedTransport(t *testing.T, upURL, pin string, roots ...*x509.Certificate) *http.Transport {
	t.Helper()
	cfg := config.Default()
	cfg.UpstreamURL = upURL
	cfg.Upstream.PinSHA256 = pin
	tr, err := upstream.Transport(&cfg)
	if err != nil {
		t.Fatal(err)
	}
	if tr.HTTP2 == nil || tr.HTTP2.SendPingTimeout != upstream.PingAfterIdle || tr.HTTP2.PingTimeout != upstream.PingTimeout {
		t.Fatalf("the transport's HTTP/2 pings: %+v", tr.HTTP2)
	}
	pool := x509.NewCertPool()
	for _, c := range roots {
		pool.AddCert(c)
	}
	tr.TLSClientConfig.RootCAs = pool
	tr.HTTP2.SendPingTimeout, tr.HTTP2.PingTimeout = testPingAfter, testPingTimeout
	t.Cleanup(tr.CloseIdleConnections)
	return tr
}

func getOK(t *testing.T, c *http.Client, url string) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != 200 || string(b) != "ok" || resp.ProtoMajor != 2 {
		t.Fatalf("GET %s: %s %d %q %v", url, resp.Proto, resp.StatusCode, b, err)
	}
}

// The upstream speaks HTTP/2 over TLS, pinned; a wrong pin is refused
// before any request is sent; the pin is checked on every new connection
// (a fresh one to another key is refused though the transport has used
// the host before); a plain http:// upstream still works, over HTTP/1.1.
func TestHTTP2AndPin(t *testing.T) {
	var hits atomic.Int64
	count := func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hits.Add(1); h.ServeHTTP(w, r) })
	}
	up := h2Fake(t, nil)
	up.Config.Handler = count(up.Config.Handler)
	pin := testcert.SPKIPin(up.Certificate())

	c := &http.Client{Transport: pinnedTransport(t, up.URL, pin, up.Certificate())}
	getOK(t, c, up.URL)

	_, err := (&http.Client{Transport: pinnedTransport(t, up.URL, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", up.Certificate())}).Get(up.URL)
	if err == nil || !strings.Contains(err.Error(), "pin_sha256") {
		t.Fatalf("h2 upstream, wrong pin: %v", err)
	}
	if n := hits.Load(); n != 1 {
		t.Fatalf("the upstream got %d requests, want 1 (none with the wrong pin)", n)
	}

	// Another key behind the same address, reached on a new connection.
	certFile, keyFile, otherCert := testcert.Write(t, t.TempDir())
	kp, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	other := h2Fake(t, &kp)
	other.Config.Handler = count(other.Config.Handler)
	rl := newRelay(t, up.Listener.Addr().String())
	tr := pinnedTransport(t, rl.URL(), pin, up.Certificate(), otherCert)
	c = &http.Client{Transport: tr}
	getOK(t, c, rl.URL())
	rl.setBackend(other.Listener.Addr().String())
	getOK(t, c, rl.URL()) // the pooled connection, still to the pinned key
	tr.CloseIdleConnections()
	_, err = c.Get(rl.URL())
	if err == nil || !strings.Contains(err.Error(), "pin_sha256") {
		t.Fatalf("a new h2 connection to another key: %v", err)
	}
	if n := hits.Load(); n != 3 {
		t.Fatalf("the fakes got %d requests, want 3 (none on the connection off the pin)", n)
	}

	// Plain HTTP (tests, the fake API): HTTP/1.1, no pin.
	plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, r.Proto) }))
	defer plain.Close()
	cfg := config.Default()
	cfg.UpstreamURL = plain.URL
	ptr, err := upstream.Transport(&cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer ptr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: ptr}).Get(plain.URL)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(b) != "HTTP/1.1" {
		t.Fatalf("plain http upstream: %d %q", resp.StatusCode, b)
	}
}

// A stream whose connection goes silent mid-answer fails once a health
// ping goes unanswered, instead of waiting forever for bytes that will not
// come; the dead connection is closed and the next request gets a fresh
// one.
func TestHTTP2PingEndsSilentStream(t *testing.T) {
	up := h2Fake(t, nil)
	rl := newRelay(t, up.Listener.Addr().String())
	c := &http.Client{Transport: pinnedTransport(t, rl.URL(), testcert.SPKIPin(up.Certificate()), up.Certificate())}

	resp, err := c.Get(rl.URL() + "/stream")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.ProtoMajor != 2 {
		t.Fatalf("stream over %s, want HTTP/2", resp.Proto)
	}
	br := bufio.NewReader(resp.Body)
	if line, err := br.ReadString('\n'); line != "first\n" || err != nil {
		t.Fatalf("first line: %q %v", line, err)
	}

	rl.freeze()
	start := time.Now()
	done := make(chan error, 1)
	go func() {
		_, err := io.Copy(io.Discard, br)
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("the silent stream ended cleanly, want an error")
		}
		t.Logf("silent stream failed after %v: %v", time.Since(start), err)
	case <-time.After(deadBound):
		t.Fatalf("the stream on a silent connection still hangs after %v (pings %v + %v)", deadBound, testPingAfter, testPingTimeout)
	}

	testutil.WaitFor(t, "the transport to close the dead connection", func() bool { return rl.clientClosed.Load() >= 1 })
	getOK(t, c, rl.URL())
	if n := rl.accepted.Load(); n != 2 {
		t.Fatalf("%d connections, want 2 (the dead one, then a fresh one)", n)
	}
}

// A request sent on a pooled connection that has gone silent ends (an
// error the proxy can fail over on, or an answer on a fresh connection)
// within the ping timeout instead of hanging, and the next one works.
func TestHTTP2PingEndsRequestOnSilentIdleConn(t *testing.T) {
	up := h2Fake(t, nil)
	rl := newRelay(t, up.Listener.Addr().String())
	c := &http.Client{Transport: pinnedTransport(t, rl.URL(), testcert.SPKIPin(up.Certificate()), up.Certificate())}
	getOK(t, c, rl.URL())

	rl.freeze()
	start := time.Now()
	done := make(chan error, 1)
	go func() {
		resp, err := c.Post(rl.URL()+"/v1/messages", "application/json", strings.NewReader(`{"model":"x"}`))
		if err == nil {
			_, err = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		done <- err
	}()
	select {
	case err := <-done:
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("the request timed out rather than seeing the dead connection: %v", err)
		}
		t.Logf("request on a silent connection ended after %v: %v", time.Since(start), err)
	case <-time.After(deadBound):
		t.Fatalf("a request on a silent connection still hangs after %v", deadBound)
	}
	testutil.WaitFor(t, "the transport to close the dead connection", func() bool { return rl.clientClosed.Load() >= 1 })
	getOK(t, c, rl.URL())
}
