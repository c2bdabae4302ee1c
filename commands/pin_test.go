package commands_test

import (
	"crypto/tls"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/claudeflare/claudeflare/internal/testcert"
)

// TestAccountsAddPinsTokenEndpoint: the CLI's own token calls (accounts
// add --refresh-token-stdin) go through the daemon's upstream transport,
// so upstream.pin_sha256 applies to them too: a token endpoint whose key
// is not the pinned one never receives the refresh token, and no account
// is stored (issue 11, item 11).
func TestAccountsAddPinsTokenEndpoint(t *testing.T) {
	r := newCLI(t)
	certFile, keyFile, _ := testcert.Write(t, t.TempDir())
	kp, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	var got atomic.Int64
	tok := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got.Add(1)
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		io.WriteString(w, `{"error":"invalid_grant"}`)
	}))
	tok.TLS = &tls.Config{Certificates: []tls.Certificate{kp}}
	tok.StartTLS()
	defer tok.Close()

	// The process trusts the test certificate (so only the pin decides).
	writeConfig := func(pin string) string {
		p := filepath.Join(r.dir, "pin.toml")
		os.WriteFile(p, []byte("[upstream]\npin_sha256 = \""+pin+"\"\n"), 0o600)
		return p
	}
	base := append([]string(nil), r.Env...)
	r.Env = append(base,
		"SSL_CERT_FILE="+certFile,
		"CLAUDEFLARE_UPSTREAM_URL=https://localhost:1",
		"CLAUDEFLARE_OAUTH_TOKEN_URL="+tok.URL+"/v1/oauth/token",
	)
	const rt = "rt-pinned-do-not-leak-0123456789"
	other := testcert.SPKIPin(tok.Certificate()) // the right key ...
	wrong := strings.Repeat("A", 43) + "="       // ... and one that is not
	if other == wrong {
		t.Fatal("pins collide")
	}

	_, stderr, code := r.Run(rt, "--config", writeConfig(wrong), "accounts", "add", "pinned", "--refresh-token-stdin")
	if code != 1 || !strings.Contains(stderr, "pin_sha256") || strings.Contains(stderr, rt) {
		t.Fatalf("add with a token endpoint off the pin: exit %d\n%s", code, stderr)
	}
	if n := got.Load(); n != 0 {
		t.Fatalf("the token endpoint got %d requests despite the pin", n)
	}
	if out := r.MustRun("", "accounts", "list", "--json"); strings.Contains(out, "pinned") {
		t.Fatalf("an account was stored: %s", out)
	}

	// With the token endpoint's own key pinned, the refresh is sent (and
	// refused by this endpoint, which is the point: it was reached).
	_, stderr, code = r.Run(rt, "--config", writeConfig(other), "accounts", "add", "pinned", "--refresh-token-stdin")
	if code != 1 || got.Load() != 1 || strings.Contains(stderr, rt) {
		t.Fatalf("add with the pinned token endpoint: exit %d, %d requests\n%s", code, got.Load(), stderr)
	}
}
