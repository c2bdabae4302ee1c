package access_test

import (
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/claudeflare/claudeflare/access"
	"github.com/claudeflare/claudeflare/config"
)

// doFrom sends one request from the local address ip (any of 127/8 is
// this machine on Linux), so that allow_ips sees another client.
func (h *harness) doFrom(ip, method, path string) reply {
	h.t.Helper()
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 10 * time.Second}
	client := &http.Client{Transport: &http.Transport{DialContext: d.DialContext, DisableKeepAlives: true}}
	req, err := http.NewRequest(method, h.srv.URL+path, strings.NewReader(""))
	if err != nil {
		h.t.Fatal(err)
	}
	resp, err := client.Do(req)
	if err != nil {
		h.t.Fatalf("from %s: %v", ip, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return reply{resp.StatusCode, resp.Header, string(b)}
}

// TestAllowIPsBareAddresses: server.allow_ips written as bare IPs (no
// /n) only. A client at another address is refused, one at a listed
// address is served.
func TestAllowIPsBareAddresses(t *testing.T) {
	h := newHarness(t, func(c *config.Config) { c.Server.AllowIPs = []string{"127.0.0.1", "::1"} })
	// 127.0.0.2 is loopback too, so without keys only allow_ips can refuse it.
	for _, p := range []string{"/health", "/v1/messages"} {
		r := h.doFrom("127.0.0.2", "POST", p)
		h.expect(r, 403, "permission_error")
		if !strings.Contains(r.body, "allow_ips") || r.header.Get("X-Test-Seen") != "" {
			t.Fatalf("%s from an address not listed: %v %s", p, r.header, r.body)
		}
	}
	r := h.doFrom("127.0.0.1", "POST", "/v1/messages")
	h.expect(r, 200, "")
	if r.header.Get("X-Test-Seen") != "upstream" {
		t.Fatal("a listed client was not served")
	}

	// One bare address that is not this client: refused.
	h2 := newHarness(t, func(c *config.Config) { c.Server.AllowIPs = []string{"192.0.2.7"} })
	h2.expect(h2.do("GET", "/health"), 403, "permission_error")
}

// TestLoopbackOriginOtherPort: a page on another local port (another
// local web server, or a dev server a browser has open) is another
// origin: refused, even though it is loopback and the same host name.
func TestLoopbackOriginOtherPort(t *testing.T) {
	h := newHarness(t, nil)
	u, err := url.Parse(h.srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	port := u.Port()
	other := "1"
	if port == "1" {
		other = "2"
	}
	for _, host := range []string{"localhost", "127.0.0.1"} {
		self := "http://" + net.JoinHostPort(host, port)
		// The proxy's own page, for contrast: served.
		h.expect(h.do("GET", "/api/accounts", "Host", net.JoinHostPort(host, port), "Origin", self), 200, "")
		for _, origin := range []string{
			"http://" + net.JoinHostPort(host, other),
			"http://" + host, // port 80
			"https://" + net.JoinHostPort(host, port),
		} {
			for _, mp := range [][2]string{{"GET", "/api/accounts"}, {"POST", "/v1/messages"}} {
				r := h.do(mp[0], mp[1], "Host", net.JoinHostPort(host, port), "Origin", origin)
				h.expect(r, 403, "permission_error")
				if r.header.Get("X-Test-Seen") != "" {
					t.Fatalf("Origin %s reached the upstream", origin)
				}
			}
		}
	}
}

// TestStreamSlotSurvivesSweep: the limiter forgets idle clients once a
// minute; a client with a stream still open is not idle. With
// concurrent_streams = 1, a stream held open over the sweep still counts.
func TestStreamSlotSurvivesSweep(t *testing.T) {
	h := newHarness(t, func(c *config.Config) { c.Limits.ConcurrentStreams = 1 })
	key := h.key("a", access.RoleAPI)
	other := h.key("b", access.RoleAPI)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		h.do("POST", "/v1/slow", "x-api-key", key)
	}()
	defer wg.Wait()
	released := false
	release := func() {
		if !released {
			released = true
			close(h.release)
		}
	}
	defer release()
	<-h.inSlow

	for _, step := range []time.Duration{61 * time.Second, 10 * time.Minute} {
		h.clk.Add(step)
		// Another client's request makes the limiter sweep.
		h.expect(h.do("POST", "/v1/messages", "x-api-key", other), 200, "")
		r := h.do("POST", "/v1/messages", "x-api-key", key)
		h.expect(r, 429, "rate_limit_error")
		if !strings.Contains(r.body, "concurrent_streams") {
			t.Fatalf("429 for another reason: %s", r.body)
		}
	}
	release()
	wg.Wait()
	h.expect(h.do("POST", "/v1/messages", "x-api-key", key), 200, "")
}
