package access_test

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/claudeflare/claudeflare/access"
)

// warnHook is a slog handler that calls fn for each warning.
type warnHook struct{ fn func(msg string) }

func (w warnHook) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelWarn }
func (w warnHook) Handle(_ context.Context, r slog.Record) error {
	w.fn(r.Message)
	return nil
}
func (w warnHook) WithAttrs([]slog.Attr) slog.Handler { return w }
func (w warnHook) WithGroup(string) slog.Handler      { return w }

// TestTamperedKeyRefusedWhenReported: when the guard warns that a client
// key row failed authentication and "is not loaded", the key set without
// it is already the one requests are checked against. Before, the
// warning (and its audit write) came first, so whoever acted on the
// warning (or a test waiting for it) could still be served by the row's
// old, authentic state for as long as the audit writes took.
func TestTamperedKeyRefusedWhenReported(t *testing.T) {
	h := newHarness(t, nil)
	raised := h.key("raised", access.RoleAPI)
	h.key("other", access.RoleAPI) // keys stay required once "raised" is refused

	var mu sync.Mutex
	var srvURL string
	var seen []int
	hook := warnHook{fn: func(msg string) {
		if !strings.Contains(msg, "client key row failed authentication") {
			return
		}
		mu.Lock()
		u := srvURL
		mu.Unlock()
		req, _ := http.NewRequest("POST", u+"/v1/messages", strings.NewReader(""))
		req.Header.Set("x-api-key", raised)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Error(err)
			return
		}
		resp.Body.Close()
		mu.Lock()
		seen = append(seen, resp.StatusCode)
		mu.Unlock()
	}}
	g, err := access.New(context.Background(), access.Options{Config: h.cfg, VaultDB: h.vdb, AuditKey: h.akey, Now: h.clk.Now, Logger: slog.New(hook)})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(g.Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {})))
	defer srv.Close()
	mu.Lock()
	srvURL = srv.URL
	mu.Unlock()
	if st := do(t, srv.URL, raised); st != 200 {
		t.Fatalf("before tampering: %d", st)
	}

	// Someone who can write vault.db but has no master key raises the role.
	if _, err := h.vdb.W.Exec(`UPDATE client_keys SET role = 'admin' WHERE name = 'raised'`); err != nil {
		t.Fatal(err)
	}
	if err := g.Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != 1 || seen[0] != http.StatusUnauthorized {
		t.Fatalf("requests with the tampered key while its warning was logged answered %v, want [401]", seen)
	}
}

func do(t *testing.T, url, key string) int {
	t.Helper()
	req, _ := http.NewRequest("POST", url+"/v1/messages", strings.NewReader(""))
	req.Header.Set("x-api-key", key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}
