package access_test

import (
	"context"
	"net/http"
	"testing"

	"github.com/claudeflare/claudeflare/access"
)

// Tampering with the only client key (its role edited) must not open the
// proxy: the row authenticates nobody, but keys stay required, so a
// request without a key is still refused.
func TestTamperedOnlyKeyKeepsKeysRequired(t *testing.T) {
	h := newHarness(t, nil)
	k := h.key("only", access.RoleAPI)
	h.expect(h.do("POST", "/v1/messages", "x-api-key", k), http.StatusOK, "")
	if _, err := h.vdb.W.Exec(`UPDATE client_keys SET role = 'admin' WHERE name = 'only'`); err != nil {
		t.Fatal(err)
	}
	if err := h.g.Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	if !h.g.KeysRequired() {
		t.Fatal("a tampered row made the proxy keyless")
	}
	h.expect(h.do("POST", "/v1/messages"), http.StatusUnauthorized, "authentication_error")
	h.expect(h.do("POST", "/v1/messages", "x-api-key", k), http.StatusUnauthorized, "authentication_error")
	h.expect(h.do("GET", "/metrics", "x-api-key", k), http.StatusUnauthorized, "authentication_error")
	if n := countPrefix(h.auditRows(), `daemon client_key.tampered: client key row 1 ("only", role "admin", live)`); n != 1 {
		t.Fatalf("%d tamper rows: %q", n, h.auditRows())
	}
	// The same row again is not reported again; a further change is.
	h.g.Reload(context.Background())
	if _, err := h.vdb.W.Exec(`UPDATE client_keys SET role = 'viewer' WHERE name = 'only'`); err != nil {
		t.Fatal(err)
	}
	h.g.Reload(context.Background())
	if n := countPrefix(h.auditRows(), "client_key.tampered"); n != 2 {
		t.Fatalf("%d tamper rows: %q", n, h.auditRows())
	}
	// Put back as it was, the row is authentic again.
	if _, err := h.vdb.W.Exec(`UPDATE client_keys SET role = 'api' WHERE name = 'only'`); err != nil {
		t.Fatal(err)
	}
	h.g.Reload(context.Background())
	h.expect(h.do("POST", "/v1/messages", "x-api-key", k), http.StatusOK, "")
}
