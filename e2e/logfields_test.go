package e2e

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/claudeflare/claudeflare/internal/fakeapi"
	"github.com/claudeflare/claudeflare/internal/testutil"
)

// What the log keeps (issue 15, item 5), through the real daemon and
// `requests list --json`: the cache writes by lifetime and the server
// tools' counts of a plain and a streamed answer, the upstream's
// request-id, the accounts a failed-over request tried, the requested
// model of a request no account served, and the session as a hash only.
func TestRequestLogKeepsRoutingFields(t *testing.T) {
	rt := newRouter(t, "alpha", "beta")
	u := fakeapi.DefaultUsage
	u.CacheCreation = &fakeapi.CacheCreation{Ephemeral5mInputTokens: 11, Ephemeral1hInputTokens: 39}
	u.ServerToolUse = &fakeapi.ServerToolUse{WebSearchRequests: 2}
	rt.fake.SetUsage(u)
	const session = "5e551011-e2e0-4aa1-8bb2-c0ffee654321"

	send := func(body string) (int, http.Header) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, rt.d.url+"/v1/messages?beta=true", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Anthropic-Version", "2023-06-01")
		req.Header.Set("X-Claude-Code-Session-Id", session)
		resp, err := rt.c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		io.Copy(io.Discard, resp.Body)
		return resp.StatusCode, resp.Header
	}
	plain := `{"model":"` + sonnet + `","max_tokens":64,"messages":[{"role":"user","content":"hi"}]}`
	streamed := `{"model":"` + sonnet + `","max_tokens":64,"stream":true,"messages":[{"role":"user","content":"hi"}]}`
	var upstreamIDs []string
	for _, body := range []string{plain, streamed} {
		st, h := send(body)
		if st != 200 {
			t.Fatalf("status %d\n%s", st, tail(rt.d.logs(), 3000))
		}
		upstreamIDs = append(upstreamIDs, h.Get("Request-Id"))
	}
	// One 529, then the other account answers.
	before := len(rt.fake.Requests())
	rt.fake.Inject(fakeapi.Fault{Kind: fakeapi.FaultStatus, Status: 529, Path: fakeapi.MessagesPath})
	if st, _ := send(plain); st != 200 {
		t.Fatalf("failover: status %d", st)
	}
	var fakeTried []string
	for _, r := range rt.fake.Requests()[before:] {
		if r.Path == fakeapi.MessagesPath {
			fakeTried = append(fakeTried, r.Account)
		}
	}

	type line struct {
		Model             string          `json:"model"`
		Status            int             `json:"status"`
		Streamed          bool            `json:"streamed"`
		Cache5m           int64           `json:"cache_creation_5m_input_tokens"`
		Cache1h           int64           `json:"cache_creation_1h_input_tokens"`
		ServerToolUse     json.RawMessage `json:"server_tool_use"`
		UpstreamRequestID *string         `json:"upstream_request_id"`
		Session           *string         `json:"session"`
		AccountsTried     []string        `json:"accounts_tried"`
	}
	var lines []line
	testutil.WaitFor(t, "3 rows in requests list", func() bool {
		out := rt.MustRun("", "requests", "list", "--json")
		lines = lines[:0]
		for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
			if l == "" {
				continue
			}
			var x line
			if err := json.Unmarshal([]byte(l), &x); err != nil {
				t.Fatalf("%v: %s", err, l)
			}
			lines = append(lines, x)
		}
		return len(lines) >= 3
	})
	for i, l := range lines[:2] {
		if l.Cache5m != 11 || l.Cache1h != 39 || string(l.ServerToolUse) != `{"web_search_requests":2}` {
			t.Errorf("row %d (streamed %v): 5m %d, 1h %d, server_tool_use %s", i, l.Streamed, l.Cache5m, l.Cache1h, l.ServerToolUse)
		}
		if l.UpstreamRequestID == nil || *l.UpstreamRequestID != upstreamIDs[i] || upstreamIDs[i] == "" {
			t.Errorf("row %d: upstream_request_id %v, the client got %q", i, l.UpstreamRequestID, upstreamIDs[i])
		}
	}
	if !lines[1].Streamed {
		t.Errorf("the second row is not the streamed one")
	}
	if f := lines[2]; len(fakeTried) != 2 || !reflect.DeepEqual(f.AccountsTried, fakeTried) {
		t.Errorf("accounts_tried %q, the fake saw %q", f.AccountsTried, fakeTried)
	}
	s := lines[0].Session
	if s == nil || len(*s) != 12 || *lines[1].Session != *s || *lines[2].Session != *s {
		t.Errorf("sessions %v %v %v: want one 12-digit hash", s, lines[1].Session, lines[2].Session)
	}

	// No account serves: the row still names the requested model.
	rt.MustRun("", "accounts", "pause", "alpha")
	rt.MustRun("", "accounts", "pause", "beta")
	testutil.WaitFor(t, "a refused request logged with its model", func() bool {
		st, _ := send(`{"model":"` + opus + `","max_tokens":64,"messages":[{"role":"user","content":"hi"}]}`)
		if st == 200 {
			return false
		}
		out := rt.MustRun("", "requests", "list", "--json", "--limit", "1")
		var x line
		return json.Unmarshal([]byte(out), &x) == nil && x.Status >= 400 && x.Model == opus
	})

	// The raw session id is in no file of the data dir.
	rt.d.stop(t)
	filepath.Walk(rt.data, func(p string, fi os.FileInfo, err error) error {
		if err != nil || fi.IsDir() {
			return nil
		}
		if b, _ := os.ReadFile(p); strings.Contains(string(b), session) {
			t.Errorf("%s holds the raw session id", p)
		}
		return nil
	})
}
