package access_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/claudeflare/claudeflare/access"
	"github.com/claudeflare/claudeflare/audit"
	"github.com/claudeflare/claudeflare/config"
	"github.com/claudeflare/claudeflare/internal/testutil"
	"github.com/claudeflare/claudeflare/store"
	"github.com/claudeflare/claudeflare/vault"
)

// clock is a settable clock for the limits.
type clock = testutil.Clock

func newClock() *clock { return testutil.NewClock(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)) }

// syncBuffer is a log sink safe for concurrent writers.
type syncBuffer = testutil.Buffer

// harness is a guard in front of a stand-in upstream handler, served on
// 127.0.0.1 over real HTTP, with real SQLite files in a temp dir.
type harness struct {
	t    *testing.T
	cfg  *config.Config
	vdb  *store.DB
	ldb  *store.DB
	v    *vault.Vault
	akey []byte // the vault's audit key
	clk  *clock
	g    *access.Guard
	srv  *httptest.Server
	logs *syncBuffer

	// release unblocks requests to /v1/slow.
	release chan struct{}
	// inSlow receives one value per request that reached /v1/slow.
	inSlow chan struct{}
}

func newHarness(t *testing.T, mod func(*config.Config)) *harness {
	t.Helper()
	cfg := config.Default()
	cfg.DataDir = t.TempDir()
	if mod != nil {
		mod(&cfg)
	}
	h := &harness{t: t, cfg: &cfg, clk: newClock(), logs: &syncBuffer{}, release: make(chan struct{}), inSlow: make(chan struct{}, 16)}
	h.openDBs()
	logger := slog.New(slog.NewTextHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	g, err := access.New(context.Background(), access.Options{
		Config: h.cfg, VaultDB: h.vdb, AuditKey: h.akey, LogDB: h.ldb, Logger: logger, Now: h.clk.Now, PollInterval: 20 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	h.g = g
	next := http.NewServeMux()
	next.HandleFunc("/v1/slow", func(w http.ResponseWriter, r *http.Request) {
		h.inSlow <- struct{}{}
		<-h.release
		w.Write([]byte("slow done"))
	})
	next.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		c, _ := access.ClientFrom(r.Context())
		w.Header().Set("X-Test-Client", c.Key)
		w.Header().Set("X-Test-Seen", "upstream")
		w.Write([]byte("ok"))
	})
	h.srv = httptest.NewServer(g.Wrap(next))
	t.Cleanup(func() {
		h.srv.Close()
		g.Stop(context.Background())
	})
	return h
}

func (h *harness) openDBs() {
	t := h.t
	var err error
	if h.vdb, err = store.OpenVault(h.cfg.DataDir); err != nil {
		t.Fatal(err)
	}
	if h.ldb, err = store.OpenLog(h.cfg.DataDir); err != nil {
		t.Fatal(err)
	}
	h.v, err = vault.Open(context.Background(), h.vdb, vault.KeySource{DataDir: h.cfg.DataDir}, vault.Options{Create: true})
	if err != nil {
		t.Fatal(err)
	}
	h.akey = auditKey(t, h.v)
	t.Cleanup(func() { h.vdb.Close(); h.ldb.Close() })
}

// key creates a client key and makes the guard see it.
func (h *harness) key(name string, role access.Role) string {
	h.t.Helper()
	k, _, err := access.CreateKey(context.Background(), h.vdb, h.akey, name, role, "test", h.clk.Now())
	if err != nil {
		h.t.Fatal(err)
	}
	if err := h.g.Reload(context.Background()); err != nil {
		h.t.Fatal(err)
	}
	return k
}

type reply struct {
	status int
	header http.Header
	body   string
}

func (r reply) errType() string {
	var e struct {
		Type  string `json:"type"`
		Error struct {
			Type    string `json:"type"`
			Message string `json:"message"`
		} `json:"error"`
	}
	json.Unmarshal([]byte(r.body), &e)
	return e.Error.Type
}

// do sends one request; headers are name, value pairs.
func (h *harness) do(method, path string, headers ...string) reply {
	h.t.Helper()
	req, err := http.NewRequest(method, h.srv.URL+path, strings.NewReader(""))
	if err != nil {
		h.t.Fatal(err)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		if strings.EqualFold(headers[i], "Host") {
			req.Host = headers[i+1]
			continue
		}
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := h.srv.Client().Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return reply{resp.StatusCode, resp.Header, string(b)}
}

func (h *harness) expect(r reply, status int, errType string) {
	h.t.Helper()
	if r.status != status {
		h.t.Fatalf("status %d, want %d; body %s", r.status, status, r.body)
	}
	if errType != "" && r.errType() != errType {
		h.t.Fatalf("error type %q, want %q; body %s", r.errType(), errType, r.body)
	}
}

// auditRows returns action: detail lines of the audit log.
func (h *harness) auditRows() []string {
	h.t.Helper()
	var out []string
	err := audit.List(context.Background(), h.vdb, time.Time{}, func(e audit.Entry) error {
		out = append(out, e.Actor+" "+e.Action+": "+e.Detail)
		return nil
	})
	if err != nil {
		h.t.Fatal(err)
	}
	return out
}

func countPrefix(lines []string, sub string) int {
	n := 0
	for _, l := range lines {
		if strings.Contains(l, sub) {
			n++
		}
	}
	return n
}

// auditKey returns v's audit key, the way every writer gets it.
func auditKey(t *testing.T, v *vault.Vault) []byte {
	t.Helper()
	p, err := audit.Prepare(context.Background(), v, time.Now(), "test", true)
	if err != nil {
		t.Fatal(err)
	}
	if p.Problem != nil {
		t.Fatalf("prepare audit: %v", p.Problem)
	}
	return p.Key
}
