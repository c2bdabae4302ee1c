package proxy

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/claudeflare/claudeflare/config"
	"github.com/claudeflare/claudeflare/internal/fakeapi"
	"github.com/claudeflare/claudeflare/store"
)

func TestOwnedRefMatchesOnlyCanonicalPaths(t *testing.T) {
	good := map[string]string{
		"/v1/messages/batches/msgbatch_01Ab-9":         "msgbatch_01Ab-9",
		"/v1/messages/batches/msgbatch_x/results":      "msgbatch_x",
		"/v1/messages/batches/msgbatch_x/cancel":       "msgbatch_x",
		"/v1/files/file_011CNha8iCJcU1wXNR6q4V8w":      "file_011CNha8iCJcU1wXNR6q4V8w",
		"/v1/files/file_x/content":                     "file_x",
		"/v1/files/" + strings.Repeat("a", ownedIDMax): strings.Repeat("a", ownedIDMax),
	}
	for p, want := range good {
		if id, ok := ownedRef(p); !ok || id != want {
			t.Errorf("ownedRef(%q) = %q, %v; want %q", p, id, ok, want)
		}
	}
	for _, p := range []string{
		"/v1/messages/batches", "/v1/messages/batches/", "/v1/files", "/v1/files/",
		"/v1/messages/batches/msgbatch_x/", "/v1/files/file_x/", // trailing slash
		"/v1/messages/batches/msgbatch_x/content", "/v1/files/file_x/results", "/v1/files/file_x/cancel",
		"/v1/messages/batches/msgbatch_x/results/more", "/v1/files/file_x/content/x",
		"/v1/files/file.x", "/v1/files/file%2Fx", "/v1/files/file%20x", "/v1/files/..", "/v1/files/file_x%00",
		"/v1/files/" + strings.Repeat("a", ownedIDMax+1),
		"/v1/messages", "/v1/messages/count_tokens", "/v2/files/file_x", "/v1/filesx/file_x", "/v1/messages/batchesfile_x",
	} {
		if id, ok := ownedRef(p); ok {
			t.Errorf("ownedRef(%q) = %q, want no id", p, id)
		}
	}
	for _, c := range []struct {
		method, path string
		want         bool
	}{
		{"POST", "/v1/messages/batches", true}, {"POST", "/v1/files", true},
		{"GET", "/v1/files", false}, {"POST", "/v1/messages", false}, {"POST", "/v1/files/file_x", false},
	} {
		if got := createsOwned(c.method, c.path); got != c.want {
			t.Errorf("createsOwned(%s %s) = %v", c.method, c.path, got)
		}
	}
}

// created posts to a create route and returns the id answered.
func created(t *testing.T, h *harness, path, body string) string {
	t.Helper()
	r := h.do(context.Background(), http.MethodPost, path, body, nil)
	var v struct {
		ID string `json:"id"`
	}
	if r.err != nil || r.status != http.StatusOK || json.Unmarshal(r.body, &v) != nil || v.ID == "" {
		t.Fatalf("POST %s: %d %v %s", path, r.status, r.err, r.body)
	}
	return v.ID
}

// A batch created through an account is fetched from it alone, after a
// restart too, while another account is first in order; when its owner
// cannot serve, the proxy says why rather than ask another account.
func TestOwnedBatchStaysOnItsAccount(t *testing.T) {
	h := newHarness(t, withConfig(func(c *config.Config) { c.LBStrategy = config.StrategySession }))
	ctx := context.Background()
	h.addOAuth("a", 1, false)
	h.addOAuth("b", 0, false)
	if err := store.SetPaused(ctx, h.vdb, "b", true, h.clock.Now()); err != nil {
		t.Fatal(err)
	}
	h.reload()
	batch := created(t, h, "/v1/messages/batches", `{"requests":[]}`)
	file := created(t, h, "/v1/files", "file bytes")
	if h.api.OwnerOf(batch) != "a" || h.api.OwnerOf(file) != "a" {
		t.Fatalf("created on %q and %q, want a", h.api.OwnerOf(batch), h.api.OwnerOf(file))
	}
	if err := store.SetPaused(ctx, h.vdb, "b", false, h.clock.Now()); err != nil {
		t.Fatal(err)
	}

	h.restart()

	// b is first in order: an unowned call goes to it (a model's page:
	// GET /v1/models itself is the proxy's own list, models.go).
	if r := h.do(ctx, http.MethodGet, "/v1/models/claude-sonnet-4-5", "", nil); r.status != http.StatusOK {
		t.Fatalf("models: %d %s", r.status, r.body)
	}
	for _, p := range []string{"/v1/messages/batches/" + batch, "/v1/messages/batches/" + batch + "/results", "/v1/files/" + file + "/content"} {
		r := h.do(ctx, http.MethodGet, p, "", nil)
		if r.status != http.StatusOK || !strings.Contains(string(r.body), `"account":"a"`) {
			t.Fatalf("GET %s after restart: %d %s", p, r.status, r.body)
		}
	}
	reqs := h.apiRequests()
	if got := reqs[len(reqs)-4].Account; got != "b" {
		t.Fatalf("the unowned call went to %q, want b (first in order)", got)
	}

	// The owner paused: 503 naming it, and nothing reaches b.
	if err := store.SetPaused(ctx, h.vdb, "a", true, h.clock.Now()); err != nil {
		t.Fatal(err)
	}
	h.reload()
	before := len(h.apiRequests())
	r := h.do(ctx, http.MethodGet, "/v1/messages/batches/"+batch, "", nil)
	e := decodeError(t, r.body)
	if r.status != http.StatusServiceUnavailable || !strings.Contains(e.Error.Message, batch) || !strings.Contains(e.Error.Message, "a: paused") || e.RequestID == "" {
		t.Fatalf("owner paused: %d %s", r.status, r.body)
	}
	if n := len(h.apiRequests()); n != before {
		t.Fatalf("%d upstream requests for a batch whose owner is paused", n-before)
	}

	// The owner limited: 429 with its reset.
	if err := store.SetPaused(ctx, h.vdb, "a", false, h.clock.Now()); err != nil {
		t.Fatal(err)
	}
	h.reload()
	h.api.Inject(fakeapi.Fault{Account: "a", Kind: fakeapi.FaultStatus, Status: http.StatusTooManyRequests,
		Headers: map[string]string{"retry-after": "120"}})
	h.do(ctx, http.MethodGet, "/v1/files/"+file, "", nil)
	r = h.do(ctx, http.MethodGet, "/v1/files/"+file, "", nil)
	e = decodeError(t, r.body)
	if r.status != http.StatusTooManyRequests || !strings.Contains(e.Error.Message, file) || r.header.Get("Retry-After") == "" {
		t.Fatalf("owner limited: %d %v %s", r.status, r.header, r.body)
	}
	for _, q := range h.apiRequests()[before:] {
		if q.Account != "a" {
			t.Fatalf("a call for %s reached %s", file, q.Account)
		}
	}

}

// A file upload bigger than server.max_body_bytes streams to the upstream
// whole, though the proxy's budget of body bytes in flight
// (server.max_inflight_body_bytes) could not hold it; a messages body as
// big is still refused with 413.
func TestOwnedBigUploadStreams(t *testing.T) {
	const limit = 64 << 10
	h := newHarness(t, withConfig(func(c *config.Config) {
		// Room for one buffered body (a chunked one is read up to
		// limit+1 bytes before it is known to be too big), never for
		// the upload.
		c.Server.MaxBodyBytes, c.Server.MaxInflightBodyBytes = limit, 2*limit
	}))
	h.addOAuth("a", 0, false)
	h.addOAuth("b", 1, false)
	h.reload()
	big := make([]byte, 5*limit+7)
	for i := range big {
		big[i] = byte('a' + i%26)
	}
	sum := sha256.Sum256(big)
	for _, chunked := range []bool{false, true} {
		var body io.Reader = bytes.NewReader(big)
		if chunked {
			body = io.MultiReader(bytes.NewReader(big)) // no length known: sent chunked
		}
		req, _ := http.NewRequest(http.MethodPost, h.url+"/v1/files", body)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var v struct {
			ID     string `json:"id"`
			Size   int    `json:"size_bytes"`
			SHA256 string `json:"sha256"`
		}
		if resp.StatusCode != http.StatusOK || json.Unmarshal(b, &v) != nil || v.Size != len(big) || v.SHA256 != hex.EncodeToString(sum[:]) {
			t.Fatalf("chunked=%v: %d %s", chunked, resp.StatusCode, b)
		}
		if owner := h.api.OwnerOf(v.ID); owner == "" {
			t.Fatalf("chunked=%v: no owner for %s", chunked, v.ID)
		}
		if r := h.do(context.Background(), http.MethodGet, "/v1/files/"+v.ID, "", nil); r.status != http.StatusOK {
			t.Fatalf("chunked=%v: GET the streamed file: %d %s", chunked, r.status, r.body)
		}
	}
	if used := h.srv.bodies.used.Load(); used != 0 {
		t.Fatalf("%d body bytes still held", used)
	}
	r := h.do(context.Background(), http.MethodPost, "/v1/messages", string(big), nil)
	if r.status != http.StatusRequestEntityTooLarge {
		t.Fatalf("big messages body: %d %s", r.status, r.body)
	}
}

// A streamed upload is tried on one account only: its 529 goes to the
// client, and no other account sees the upload.
func TestOwnedBigUploadNoFailover(t *testing.T) {
	const limit = 64 << 10
	h := newHarness(t, withConfig(func(c *config.Config) {
		c.Server.MaxBodyBytes, c.Server.MaxInflightBodyBytes = limit, limit
		c.LBStrategy = config.StrategySession
	}))
	h.addOAuth("a", 0, false)
	h.addOAuth("b", 1, false)
	h.reload()
	h.api.Inject(fakeapi.Fault{Account: "a", Kind: fakeapi.FaultStatus, Status: 529})
	r := h.do(context.Background(), http.MethodPost, "/v1/messages/batches", strings.Repeat("x", 2*limit), nil)
	if r.status != 529 {
		t.Fatalf("status %d, want the upstream's 529: %s", r.status, r.body)
	}
	for _, q := range h.apiRequests() {
		if q.Account != "a" {
			t.Fatalf("the streamed upload reached %s too", q.Account)
		}
	}
}

// An id older than ownedMaxAge routes as any request again, and its row
// is pruned at the next create.
func TestOwnedIDExpires(t *testing.T) {
	h := newHarness(t, withConfig(func(c *config.Config) { c.LBStrategy = config.StrategySession }))
	ctx := context.Background()
	h.addOAuth("a", 1, false)
	h.addOAuth("b", 0, false)
	if err := store.SetPaused(ctx, h.vdb, "b", true, h.clock.Now()); err != nil {
		t.Fatal(err)
	}
	h.reload()
	old := created(t, h, "/v1/files", "old")
	if err := store.SetPaused(ctx, h.vdb, "b", false, h.clock.Now()); err != nil {
		t.Fatal(err)
	}
	h.reload()
	if r := h.do(ctx, http.MethodGet, "/v1/files/"+old, "", nil); r.status != http.StatusOK {
		t.Fatalf("young id: %d %s", r.status, r.body)
	}
	h.clock.Add(ownedMaxAge + time.Hour)
	if r := h.do(ctx, http.MethodGet, "/v1/files/"+old, "", nil); r.status != http.StatusNotFound {
		t.Fatalf("expired id: %d %s, want b's 404", r.status, r.body)
	}
	created(t, h, "/v1/files", "new")
	rows, err := store.ListOwnedIDs(ctx, h.vdb, time.Time{})
	if err != nil || len(rows) != 1 || rows[0].ID == old {
		t.Fatalf("rows after a create past the max age: %+v, %v", rows, err)
	}
}
