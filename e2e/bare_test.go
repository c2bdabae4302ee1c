package e2e

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"time"
)

// runBare is the baseline the benchmarks compare with: a bare
// httputil.ReverseProxy to $CLAUDEFLARE_UPSTREAM_URL that adds the bearer
// token in $CLAUDEFLARE_E2E_BARE_TOKEN and the OAuth beta, flushing at
// once, as any minimal forwarder would. It announces its address on
// stderr the way the daemon does.
func runBare() int {
	up, err := url.Parse(os.Getenv("CLAUDEFLARE_UPSTREAM_URL"))
	if err != nil || up.Host == "" {
		fmt.Fprintln(os.Stderr, "bare: CLAUDEFLARE_UPSTREAM_URL is not a URL")
		return 2
	}
	tok := os.Getenv("CLAUDEFLARE_E2E_BARE_TOKEN")
	rp := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(up)
			r.Out.Host = ""
			r.Out.Header.Del("X-Api-Key")
			r.Out.Header.Set("Authorization", "Bearer "+tok)
			r.Out.Header.Set("Anthropic-Beta", "oauth-2025-04-20")
		},
		Transport: &http.Transport{
			MaxIdleConns: 256, MaxIdleConnsPerHost: 128, IdleConnTimeout: 90 * time.Second,
			ForceAttemptHTTP2: true,
		},
		FlushInterval: -1,
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, "bare:", err)
		return 1
	}
	fmt.Fprintf(os.Stderr, "bare: listening on http://%s\n", ln.Addr())
	// The request body is read before forwarding, as the daemon does.
	// Streamed through, a small body races with the answer: once the
	// response headers go out, net/http closes the unread inbound body,
	// the transport's writer fails on it and closes the upstream
	// connection mid-response ("use of closed network connection"): one
	// SSE stream in a few dozen broke off that way in our runs.
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(b))
		rp.ServeHTTP(w, r)
	})
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	if err := srv.Serve(ln); err != nil {
		fmt.Fprintln(os.Stderr, "bare:", err)
		return 1
	}
	return 0
}
