package access_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"github.com/claudeflare/claudeflare/access"
)

// relayServer wraps the harness's guard around a handler that reports
// the client the guard handed on.
func relayServer(h *harness) string {
	srv := httptest.NewServer(h.g.Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, _ := access.ClientFrom(r.Context())
		w.Header().Set("X-Test-Client", c.Key)
		w.Header().Set("X-Test-Relay", strconv.FormatBool(c.Relay))
		w.Header().Set("X-Test-Models", strings.Join(c.Models, ","))
	})))
	h.t.Cleanup(srv.Close)
	return srv.URL
}

func relayGet(t *testing.T, url string, hdr ...string) *http.Response {
	t.Helper()
	req, _ := http.NewRequest("POST", url+"/v1/messages", nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp
}

// x-claudeflare-key carries any client key (and alone counts when
// present); a relay key is accepted only there, and the guard hands the
// relay mark and the model allowlist to what it wraps.
func TestClaudeflareKeyHeaderAndRelayKeys(t *testing.T) {
	h := newHarness(t, nil)
	ctx := context.Background()
	relay, _, err := access.CreateKeyWith(ctx, h.vdb, h.akey, "alice", access.RoleAPI,
		access.KeySettings{Relay: true, Models: []string{"claude-sonnet-4-5", "claude-haiku-*"}}, "test", h.clk.Now())
	if err != nil {
		t.Fatal(err)
	}
	plain := h.key("ci", access.RoleAPI)
	url := relayServer(h)
	if !h.g.RelayKeys() {
		t.Fatal("RelayKeys false with a live relay key")
	}

	for _, tc := range []struct {
		name   string
		hdr    []string
		status int
		client string
		relay  string
		models string
	}{
		{"relay key in x-claudeflare-key", []string{"X-Claudeflare-Key", relay, "Authorization", "Bearer sk-ant-oat01-own"}, 200, "alice", "true", "claude-sonnet-4-5,claude-haiku-*"},
		{"relay key alone", []string{"X-Claudeflare-Key", relay}, 200, "alice", "true", "claude-sonnet-4-5,claude-haiku-*"},
		{"relay key in x-api-key", []string{"X-Api-Key", relay, "Authorization", "Bearer sk-ant-oat01-own"}, 401, "", "", ""},
		{"relay key as bearer", []string{"Authorization", "Bearer " + relay}, 401, "", "", ""},
		{"plain key in x-claudeflare-key", []string{"X-Claudeflare-Key", plain, "X-Api-Key", "sk-ant-api03-own"}, 200, "ci", "false", ""},
		{"plain key in x-api-key", []string{"X-Api-Key", plain}, 200, "ci", "false", ""},
		{"x-claudeflare-key wins", []string{"X-Claudeflare-Key", "cf_wrong", "X-Api-Key", plain}, 401, "", "", ""},
	} {
		resp := relayGet(t, url, tc.hdr...)
		if resp.StatusCode != tc.status {
			t.Fatalf("%s: status %d, want %d", tc.name, resp.StatusCode, tc.status)
		}
		if tc.status != 200 {
			continue
		}
		if c, r, m := resp.Header.Get("X-Test-Client"), resp.Header.Get("X-Test-Relay"), resp.Header.Get("X-Test-Models"); c != tc.client || r != tc.relay || m != tc.models {
			t.Fatalf("%s: client %q relay %q models %q", tc.name, c, r, m)
		}
	}

	// Changed by UpdateKey: the running guard sees it.
	no, none := false, []string(nil)
	if _, err := access.UpdateKey(ctx, h.vdb, h.akey, "alice", access.KeyUpdate{Relay: &no, Models: &none}, "cli:bob", h.clk.Now()); err != nil {
		t.Fatal(err)
	}
	if err := h.g.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	if h.g.RelayKeys() {
		t.Fatal("RelayKeys true without a relay key")
	}
	if resp := relayGet(t, url, "X-Api-Key", relay); resp.StatusCode != 200 || resp.Header.Get("X-Test-Relay") != "false" || resp.Header.Get("X-Test-Models") != "" {
		t.Fatalf("after update: %d relay %q models %q", resp.StatusCode, resp.Header.Get("X-Test-Relay"), resp.Header.Get("X-Test-Models"))
	}
	if !strings.Contains(strings.Join(h.auditRows(), "\n"), `relay off (was on); models set to any (were claude-sonnet-4-5,claude-haiku-*)`) {
		t.Fatalf("audit: %q", h.auditRows())
	}
}

// The row's MAC covers the relay mark and the model allowlist: a key made
// a relay key, made a pooled one, or given a wider allowlist in vault.db
// without the master key authenticates nobody, and UpdateKey refuses to
// bless it; put back, it works again. A key without either keeps the MAC
// of the releases before them (every other test's keys).
func TestRelayAndModelsEditedInTheDatabaseAreRefused(t *testing.T) {
	h := newHarness(t, nil)
	ctx := context.Background()
	relay, _, err := access.CreateKeyWith(ctx, h.vdb, h.akey, "alice", access.RoleAPI,
		access.KeySettings{Relay: true, Models: []string{"claude-haiku-4-5"}}, "test", h.clk.Now())
	if err != nil {
		t.Fatal(err)
	}
	plain := h.key("ci", access.RoleAPI)
	if err := h.g.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ edit, undo, key, name string }{
		{`UPDATE client_keys SET relay = 0 WHERE name = 'alice'`, `UPDATE client_keys SET relay = 1 WHERE name = 'alice'`, relay, "alice"},
		{`UPDATE client_keys SET models = '["claude-opus-4-1"]' WHERE name = 'alice'`, `UPDATE client_keys SET models = '["claude-haiku-4-5"]' WHERE name = 'alice'`, relay, "alice"},
		{`UPDATE client_keys SET models = NULL WHERE name = 'alice'`, `UPDATE client_keys SET models = '["claude-haiku-4-5"]' WHERE name = 'alice'`, relay, "alice"},
		{`UPDATE client_keys SET relay = 1 WHERE name = 'ci'`, `UPDATE client_keys SET relay = 0 WHERE name = 'ci'`, plain, "ci"},
		{`UPDATE client_keys SET models = '["x"]' WHERE name = 'ci'`, `UPDATE client_keys SET models = NULL WHERE name = 'ci'`, plain, "ci"},
		{`UPDATE client_keys SET models = 'not json' WHERE name = 'ci'`, `UPDATE client_keys SET models = NULL WHERE name = 'ci'`, plain, "ci"},
	} {
		if _, err := h.vdb.W.Exec(tc.edit); err != nil {
			t.Fatal(err)
		}
		h.g.Reload(ctx)
		h.expect(h.do("POST", "/v1/messages", "X-Claudeflare-Key", tc.key), http.StatusUnauthorized, "authentication_error")
		yes := true
		if _, err := access.UpdateKey(ctx, h.vdb, h.akey, tc.name, access.KeyUpdate{Relay: &yes}, "test", h.clk.Now()); !errors.Is(err, access.ErrTamperedKey) {
			t.Fatalf("%s: update of the tampered row: %v", tc.edit, err)
		}
		if _, err := h.vdb.W.Exec(tc.undo); err != nil {
			t.Fatal(err)
		}
		h.g.Reload(ctx)
		h.expect(h.do("POST", "/v1/messages", "X-Claudeflare-Key", tc.key), http.StatusOK, "")
	}
}

// ParseModels: comma lists, spaces, duplicates; bad names and an empty
// list are refused.
func TestParseModels(t *testing.T) {
	got, err := access.ParseModels([]string{" claude-sonnet-4-5 , claude-haiku-*", "claude-sonnet-4-5", "us.anthropic.claude-3:0@x/y"})
	if err != nil || strings.Join(got, "|") != "claude-sonnet-4-5|claude-haiku-*|us.anthropic.claude-3:0@x/y" {
		t.Fatalf("%q %v", got, err)
	}
	for _, bad := range [][]string{nil, {""}, {"a,,b"}, {"bad model"}, {"é"}, {strings.Repeat("m", 129)}} {
		if _, err := access.ParseModels(bad); !errors.Is(err, access.ErrBadModels) {
			t.Errorf("%q: %v", bad, err)
		}
	}
}
