package proxy

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/claudeflare/claudeflare/config"
	"github.com/claudeflare/claudeflare/internal/fakeapi"
)

// withScope gives the server a client key role and allowlist for every
// request, as the daemon's access guard would (Options.ClientModels).
func withScope(sc *scope) harnessOpt {
	return func(h *harness) {
		h.beforeServe = func(s *Server) {
			s.models.scope = func(*http.Request) (string, []string) { return sc.get() }
		}
	}
}

type scope struct {
	mu     sync.Mutex
	role   string
	models []string
}

func (s *scope) set(role string, models ...string) {
	s.mu.Lock()
	s.role, s.models = role, models
	s.mu.Unlock()
}

func (s *scope) get() (string, []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.role, s.models
}

func withModels(aliases map[string]string, allow map[string][]string) harnessOpt {
	return withConfig(func(c *config.Config) {
		c.Models = config.Models{Aliases: aliases, Allow: allow}
	})
}

func (h *harness) modelRequests() []fakeapi.Recorded {
	var out []fakeapi.Recorded
	for _, r := range h.api.Requests() {
		if r.Path == fakeapi.ModelsPath {
			out = append(out, r)
		}
	}
	return out
}

func listIDs(t *testing.T, b []byte) (ids []string, list map[string]any) {
	t.Helper()
	if err := json.Unmarshal(b, &list); err != nil {
		t.Fatalf("list: %v: %s", err, b)
	}
	for _, m := range list["data"].([]any) {
		mm := m.(map[string]any)
		for _, k := range []string{"type", "id", "display_name", "created_at"} {
			if _, ok := mm[k].(string); !ok {
				t.Errorf("model %v has no %s", mm, k)
			}
		}
		if mm["type"] != "model" {
			t.Errorf("type %v", mm["type"])
		}
		ids = append(ids, mm["id"].(string))
	}
	return ids, list
}

func TestModelsListIsThePoolsUnionPlusAliases(t *testing.T) {
	h := newHarness(t, withModels(map[string]string{"team-fast": "claude-haiku-4-5-20251001"}, nil))
	h.addOAuth("work", 0, false)
	h.addAPIKey("key", 1)
	h.reload()

	r := h.do(context.Background(), http.MethodGet, "/v1/models", "", nil)
	if r.status != 200 {
		t.Fatalf("status %d: %s", r.status, r.body)
	}
	ids, list := listIDs(t, r.body)
	want := []string{"claude-haiku-4-5-20251001", "claude-sonnet-4-5-20250929", "claude-opus-4-1-20250805", "team-fast"}
	if strings.Join(ids, " ") != strings.Join(want, " ") {
		t.Errorf("ids %v, want %v", ids, want)
	}
	if list["has_more"] != false || list["first_id"] != want[0] || list["last_id"] != "team-fast" {
		t.Errorf("list %v", list)
	}
	if !bytes.Contains(r.body, []byte(`"display_name":"team-fast (Claude Haiku 4.5)"`)) {
		t.Errorf("alias display name: %s", r.body)
	}
	// Each account was asked with its own credentials.
	got := h.modelRequests()
	if len(got) != 2 {
		t.Fatalf("fake got %d model requests", len(got))
	}
	accts := map[string]bool{}
	for _, m := range got {
		accts[m.Account] = true
	}
	if !accts["work"] || !accts["key"] {
		t.Errorf("accounts asked: %v", accts)
	}

	// Cached: a second list asks nobody.
	h.do(context.Background(), http.MethodGet, "/v1/models", "", nil)
	if n := len(h.modelRequests()); n != 2 {
		t.Errorf("second list asked the accounts again (%d requests)", n)
	}
	// Stale: served at once, renewed in the background.
	h.clock.Add(modelsTTL + time.Second)
	if r := h.do(context.Background(), http.MethodGet, "/v1/models", "", nil); r.status != 200 {
		t.Fatalf("stale list: %d", r.status)
	}
	waitFor(t, "a background refresh", func() bool { return len(h.modelRequests()) == 4 })
}

func TestModelsListFollowsTheClientsAllowLists(t *testing.T) {
	sc := &scope{}
	sc.set("api")
	h := newHarness(t, withScope(sc), withModels(map[string]string{"team-fast": "claude-haiku-4-5-20251001", "team-big": "claude-opus-4-1-20250805"},
		map[string][]string{"api": {"claude-haiku-*", "claude-sonnet-*", "team-fast"}}))
	h.addAPIKey("key", 0)
	h.reload()
	r := h.do(context.Background(), http.MethodGet, "/v1/models", "", nil)
	ids, _ := listIDs(t, r.body)
	if strings.Join(ids, " ") != "claude-haiku-4-5-20251001 claude-sonnet-4-5-20250929 team-fast" {
		t.Errorf("role api sees %v", ids)
	}
	sc.set("api", "claude-sonnet-*")
	r = h.do(context.Background(), http.MethodGet, "/v1/models", "", nil)
	if ids, _ := listIDs(t, r.body); strings.Join(ids, " ") != "claude-sonnet-4-5-20250929" {
		t.Errorf("key list sees %v", ids)
	}
	sc.set("admin")
	r = h.do(context.Background(), http.MethodGet, "/v1/models", "", nil)
	if ids, _ := listIDs(t, r.body); len(ids) != 5 {
		t.Errorf("admin (no role list) sees %v", ids)
	}
}

func TestModelsListCloudAccountsOfferTheirTable(t *testing.T) {
	h := newHarness(t)
	// No Anthropic account: nothing to ask upstream.
	r := h.do(context.Background(), http.MethodGet, "/v1/models", "", nil)
	if r.status != 200 {
		t.Fatalf("status %d: %s", r.status, r.body)
	}
	if ids, list := listIDs(t, r.body); len(ids) != 0 || list["first_id"] != nil {
		t.Errorf("empty pool lists %s", r.body)
	}
	if ids := h.srv.cloudModelIDs("bedrock"); len(ids) == 0 || ids[0] != "claude-3-5-haiku-20241022" {
		t.Errorf("bedrock ids %v", ids)
	}
}

func TestModelAliasRewritesOnlyTheModel(t *testing.T) {
	h := newHarness(t, withModels(map[string]string{"team-fast": "claude-haiku-4-5"}, nil))
	h.addOAuth("work", 0, false)
	h.reload()
	body := `{ "model" : "team-fast","max_tokens":64,"metadata":{"user_id":"u"},"messages":[{"role":"user","content":"model team-fast"}]}`
	r := h.post(body)
	if r.status != 200 {
		t.Fatalf("status %d: %s", r.status, r.body)
	}
	got := h.apiRequests()
	want := `{ "model" : "claude-haiku-4-5","max_tokens":64,"metadata":{"user_id":"u"},"messages":[{"role":"user","content":"model team-fast"}]}`
	if string(got[len(got)-1].Body) != want {
		t.Errorf("upstream body\n%s\nwant\n%s", got[len(got)-1].Body, want)
	}
	if m := h.lastRow().Model; m != "claude-haiku-4-5" {
		t.Errorf("log model %q", m)
	}
	if used := h.srv.bodies.used.Load(); used != 0 {
		t.Errorf("%d body bytes still held after an alias's rewrite", used)
	}
	// Not an alias: byte for byte.
	h.post(msgBody)
	got = h.apiRequests()
	if string(got[len(got)-1].Body) != msgBody {
		t.Errorf("body changed: %s", got[len(got)-1].Body)
	}
}

func TestModelAllowListsRefuse(t *testing.T) {
	sc := &scope{}
	sc.set("api")
	h := newHarness(t, withScope(sc), withModels(map[string]string{"team-fast": "claude-haiku-4-5"},
		map[string][]string{"api": {"claude-haiku-*", "team-fast"}}))
	h.addAPIKey("key", 0)
	h.reload()

	r := h.post(msgBody) // claude-sonnet-4-5
	if r.status != http.StatusForbidden || r.header.Get("X-Should-Retry") != "false" {
		t.Fatalf("status %d, x-should-retry %q: %s", r.status, r.header.Get("X-Should-Retry"), r.body)
	}
	e := decodeError(t, r.body)
	if e.Error.Type != "permission_error" || !strings.Contains(e.Error.Message, `"claude-sonnet-4-5"`) ||
		!strings.Contains(e.Error.Message, "claude-haiku-*, team-fast") || !strings.Contains(e.Error.Message, "role api") {
		t.Errorf("error %+v", e.Error)
	}
	if n := len(h.apiRequests()); n != 0 {
		t.Errorf("a refused model reached the upstream (%d requests)", n)
	}
	if row := h.lastRow(); row.Status != 403 || row.Model != "claude-sonnet-4-5" {
		t.Errorf("row %d %q", row.Status, row.Model)
	}
	for _, m := range []string{"claude-haiku-4-5", "team-fast"} {
		if r := h.post(`{"model":"` + m + `","max_tokens":1,"messages":[{"role":"user","content":"hi"}]}`); r.status != 200 {
			t.Errorf("%s: %d %s", m, r.status, r.body)
		}
	}

	// The key's own list applies too: a model must pass both.
	sc.set("api", "claude-sonnet-*")
	r = h.post(`{"model":"claude-haiku-4-5","max_tokens":1,"messages":[{"role":"user","content":"hi"}]}`)
	if r.status != http.StatusForbidden || !strings.Contains(decodeError(t, r.body).Error.Message, "client key") {
		t.Errorf("key list: %d %s", r.status, r.body)
	}
	sc.set("admin", "claude-sonnet-*") // no role list for admin
	if r := h.post(msgBody); r.status != 200 {
		t.Errorf("admin with sonnet: %d %s", r.status, r.body)
	}
	// count_tokens is checked as well.
	sc.set("api")
	r = h.do(context.Background(), http.MethodPost, "/v1/messages/count_tokens", msgBody, nil)
	if r.status != http.StatusForbidden {
		t.Errorf("count_tokens: %d %s", r.status, r.body)
	}
}

func TestModelField(t *testing.T) {
	for _, tc := range []struct {
		body, model string
	}{
		{`{"model":"a"}`, "a"},
		{` { "max_tokens": 1, "model" :  "b\u0041" }`, "bA"},
		{`{"model":5}`, ""},
		{`[1]`, ""},
		{`{"x":{"model":"no"}}`, ""},
		{``, ""},
	} {
		m, s, e := modelField([]byte(tc.body))
		if m != tc.model {
			t.Errorf("%s: %q", tc.body, m)
		}
		if m != "" {
			var back string
			if json.Unmarshal([]byte(tc.body[s:e]), &back) != nil || back != m {
				t.Errorf("%s: span %d:%d = %q", tc.body, s, e, tc.body[s:e])
			}
		}
	}
}

// No account answers: 502 in Anthropic's shape, asked again after
// modelsFailedTTL; one account failing is left out of the union.
func TestModelsListWhenAccountsFail(t *testing.T) {
	h := newHarness(t, withModels(map[string]string{"team-fast": "claude-haiku-4-5"}, nil))
	h.addAPIKey("key", 0)
	h.reload()
	h.api.Inject(fakeapi.Fault{Path: fakeapi.ModelsPath, Count: -1, Kind: fakeapi.FaultStatus, Status: 503})
	r := h.do(context.Background(), http.MethodGet, "/v1/models", "", nil)
	if r.status != http.StatusBadGateway || decodeError(t, r.body).Error.Type != "api_error" {
		t.Fatalf("status %d: %s", r.status, r.body)
	}
	if bytes.Contains(r.body, []byte("sk-ant")) {
		t.Errorf("the answer names a credential: %s", r.body)
	}
	// The failure is remembered for modelsFailedTTL only.
	h.api.ClearFaults()
	n := len(h.modelRequests())
	if r := h.do(context.Background(), http.MethodGet, "/v1/models", "", nil); r.status != http.StatusBadGateway || len(h.modelRequests()) != n {
		t.Fatalf("within modelsFailedTTL: %d, asked %d times more", r.status, len(h.modelRequests())-n)
	}
	h.clock.Add(modelsFailedTTL + time.Second)
	r = h.do(context.Background(), http.MethodGet, "/v1/models", "", nil)
	if ids, _ := listIDs(t, r.body); r.status != 200 || len(ids) != 4 {
		t.Fatalf("after modelsFailedTTL: %d %s", r.status, r.body)
	}
}

// [models] is live: SetLive (SIGHUP) swaps the aliases and allow lists.
func TestModelPolicyIsLive(t *testing.T) {
	h := newHarness(t)
	h.addAPIKey("key", 0)
	h.reload()
	alias := `{"model":"team-fast","max_tokens":1,"messages":[{"role":"user","content":"hi"}]}`
	h.post(alias)
	if got := h.apiRequests(); string(got[len(got)-1].Body) != alias {
		t.Fatalf("no alias yet, but the body changed: %s", got[len(got)-1].Body)
	}
	cfg := *h.cfg
	cfg.Models = config.Models{Aliases: config.ModelAliases{"team-fast": "claude-haiku-4-5"}}
	h.srv.SetLive(&cfg)
	h.post(alias)
	if got := h.apiRequests(); !strings.Contains(string(got[len(got)-1].Body), `"model":"claude-haiku-4-5"`) {
		t.Errorf("after SetLive: %s", got[len(got)-1].Body)
	}
}

// A body that names "model" twice cannot slip a model past the lists (the
// upstream may read the last one): refused while a list or alias applies.
func TestModelNamedTwiceIsRefused(t *testing.T) {
	sc := &scope{}
	sc.set("api", "claude-haiku-*")
	h := newHarness(t, withScope(sc))
	h.addAPIKey("key", 0)
	h.reload()
	for _, b := range []string{
		`{"model":"claude-haiku-4-5","max_tokens":1,"messages":[],"model":"claude-opus-4-5"}`,
		`{"model":null,"mod\u0065l":"claude-opus-4-5","max_tokens":1,"messages":[]}`,
	} {
		r := h.post(b)
		if r.status != http.StatusBadRequest || !strings.Contains(decodeError(t, r.body).Error.Message, "more than once") {
			t.Errorf("%s: %d %s", b, r.status, r.body)
		}
	}
	if n := len(h.apiRequests()); n != 0 {
		t.Errorf("%d reached the upstream", n)
	}
	// A model a listed key's body hides from encoding/json is refused.
	for _, body := range []string{
		`{"temperature":NaN,"model":"claude-opus-4-5","max_tokens":1,"messages":[{"role":"user","content":"hi"}]}`,
		`{"model":["claude-opus-4-5"],"max_tokens":1,"messages":[{"role":"user","content":"hi"}]}`,
	} {
		if r := h.post(body); r.status != http.StatusForbidden {
			t.Errorf("%s: %d %s", body, r.status, r.body)
		}
	}
	sc.set("") // no lists: nothing to check
	if r := h.post(`{"model":"a","model":"b","max_tokens":1,"messages":[{"role":"user","content":"hi"}]}`); r.status != 200 {
		t.Errorf("no policy: %d %s", r.status, r.body)
	}
}

// A batch's requests are checked one by one for a key with lists.
func TestModelListsApplyToBatches(t *testing.T) {
	sc := &scope{}
	sc.set("api", "claude-haiku-*")
	h := newHarness(t, withScope(sc))
	h.addAPIKey("key", 0)
	h.reload()
	batch := func(models ...string) string {
		var reqs []string
		for i, m := range models {
			reqs = append(reqs, fmt.Sprintf(`{"custom_id":"r%d","params":{"model":%q,"max_tokens":1,"messages":[{"role":"user","content":"hi"}]}}`, i, m))
		}
		return `{"requests":[` + strings.Join(reqs, ",") + `]}`
	}
	r := h.do(context.Background(), http.MethodPost, "/v1/messages/batches", batch("claude-haiku-4-5", "claude-opus-4-5"), nil)
	if r.status != http.StatusForbidden || !strings.Contains(decodeError(t, r.body).Error.Message, `"claude-opus-4-5"`) {
		t.Errorf("opus in a batch: %d %s", r.status, r.body)
	}
	if n := len(h.apiRequests()); n != 0 {
		t.Errorf("%d reached the upstream", n)
	}
	if r := h.do(context.Background(), http.MethodPost, "/v1/messages/batches", batch("claude-haiku-4-5"), nil); r.status >= 400 {
		t.Errorf("haiku batch: %d %s", r.status, r.body)
	}
	// Keys match exactly, as the upstream reads them: a key in another
	// case does not stand in for the one that is sent; an unreadable
	// batch is not waved through.
	n := len(h.apiRequests())
	for _, body := range []string{
		`{"requests":[{"params":{"model":"claude-opus-4-5"}}],"Requests":[{"params":{"model":"claude-haiku-4-5"}}]}`,
		`{"requests":[{"params":{"model":"claude-opus-4-5"},"Params":{"model":"claude-haiku-4-5"}}]}`,
		`{"requests":[{"params":{"model":"claude-haiku-4-5"}}],"requests":[{"params":{"model":"claude-opus-4-5"}}]}`,
		`{"requests":[{"params":{"model":"claude-opus-4-5"}}],"max":NaN}`,
	} {
		r := h.do(context.Background(), http.MethodPost, "/v1/messages/batches", body, nil)
		if r.status != http.StatusForbidden && r.status != http.StatusBadRequest {
			t.Errorf("%s: %d %s", body, r.status, r.body)
		}
	}
	if got := len(h.apiRequests()); got != n {
		t.Errorf("%d more reached the upstream", got-n)
	}
}
