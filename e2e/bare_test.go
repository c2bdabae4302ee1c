package e2e

import (
	"fmt"
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
	srv := &http.Server{Handler: rp, ReadHeaderTimeout: 10 * time.Second}
	if err := srv.Serve(ln); err != nil {
		fmt.Fprintln(os.Stderr, "bare:", err)
		return 1
	}
	return 0
}
