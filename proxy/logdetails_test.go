package proxy

import (
	"bytes"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/claudeflare/claudeflare/internal/fakeapi"
	"github.com/claudeflare/claudeflare/store"
)

// The cache writes by lifetime and the server tools' counts reach the row
// from a plain answer (usage at the end of the JSON) and from a stream
// (cache_creation in message_start, server_tool_use in message_delta).
func TestRowKeepsCacheLifetimesAndServerTools(t *testing.T) {
	h := newHarness(t)
	h.addOAuth("a", 0, false)
	h.reload()
	u := fakeapi.DefaultUsage
	u.CacheCreationInputTokens = 50
	u.CacheCreation = &fakeapi.CacheCreation{Ephemeral5mInputTokens: 20, Ephemeral1hInputTokens: 30}
	u.ServerToolUse = &fakeapi.ServerToolUse{WebSearchRequests: 3}
	h.api.SetUsage(u)
	for _, body := range []string{msgBody, streamBody} {
		rep := h.post(body)
		if rep.status != 200 {
			t.Fatalf("%d %s", rep.status, rep.body)
		}
		row := h.lastRow()
		if row.CacheCreationInputTokens != 50 || row.CacheCreation5mInputTokens != 20 || row.CacheCreation1hInputTokens != 30 {
			t.Errorf("streamed=%v: cache creation %d, 5m %d, 1h %d; want 50, 20, 30", row.Streamed,
				row.CacheCreationInputTokens, row.CacheCreation5mInputTokens, row.CacheCreation1hInputTokens)
		}
		if row.ServerToolUse == nil || *row.ServerToolUse != `{"web_search_requests":3}` {
			t.Errorf("streamed=%v: server_tool_use %v", row.Streamed, row.ServerToolUse)
		}
		if row.UpstreamRequestID == "" || row.UpstreamRequestID != h.lastUpstreamRequestID(rep) {
			t.Errorf("streamed=%v: upstream request id %q, the client saw %q", row.Streamed,
				row.UpstreamRequestID, rep.header.Get("Request-Id"))
		}
	}
	// An answer without them logs none.
	h.api.SetUsage(fakeapi.DefaultUsage)
	h.post(streamBody)
	if row := h.lastRow(); row.ServerToolUse != nil || row.CacheCreation5mInputTokens != 0 || row.CacheCreation1hInputTokens != 0 {
		t.Errorf("plain usage logged %v, %d, %d", row.ServerToolUse, row.CacheCreation5mInputTokens, row.CacheCreation1hInputTokens)
	}
}

// lastUpstreamRequestID is the request-id header the client got, which
// the proxy passes through from the upstream.
func (h *harness) lastUpstreamRequestID(rep reply) string { return rep.header.Get("Request-Id") }

// A request that fails over names both accounts, in the order tried.
func TestRowListsAccountsTried(t *testing.T) {
	h := newHarness(t)
	h.addOAuth("a", 0, false)
	h.addOAuth("b", 1, false)
	h.reload()
	h.api.Inject(fakeapi.Fault{Kind: fakeapi.FaultStatus, Status: 529})
	rep := h.post(msgBody)
	if rep.status != 200 {
		t.Fatalf("%d %s", rep.status, rep.body)
	}
	row := h.lastRow()
	tried := row.AccountsTried
	if len(tried) != 2 || tried[0] == tried[1] || tried[1] != row.Account {
		t.Fatalf("accounts tried %q, account %q: want two accounts, the second the one that answered", tried, row.Account)
	}
	ups := h.apiRequests()
	if len(ups) != 2 || ups[0].Account != tried[0] || ups[1].Account != tried[1] {
		t.Fatalf("upstream saw %d requests; tried %q", len(ups), tried)
	}
}

// A request no account serves is logged with the model it asked for.
func TestFailedRowKeepsRequestedModel(t *testing.T) {
	h := newHarness(t)
	rep := h.post(msgBody) // no accounts: 503
	if rep.status != http.StatusServiceUnavailable {
		t.Fatalf("%d %s", rep.status, rep.body)
	}
	row := h.lastRow()
	if row.Model != "claude-sonnet-4-5" {
		t.Errorf("model %q, want the requested claude-sonnet-4-5", row.Model)
	}
	if row.AccountsTried == nil || len(row.AccountsTried) != 0 {
		t.Errorf("accounts tried %#v, want []", row.AccountsTried)
	}
}

// The session column is a short hash of the affinity key: the same for
// the header and the metadata's session, different between sessions, and
// the raw session id is nowhere in the log database's files.
func TestSessionIsHashedNeverRaw(t *testing.T) {
	h := newHarness(t)
	h.addOAuth("a", 0, false)
	h.reload()
	const raw = "5e551011-raw0-4aa1-8bb2-c0ffee123456"
	post := func(body string, hdr http.Header) store.Request {
		t.Helper()
		rep := h.do(t.Context(), http.MethodPost, "/v1/messages", body, hdr)
		if rep.status != 200 {
			t.Fatalf("%d %s", rep.status, rep.body)
		}
		return h.lastRow()
	}
	byHeader := post(msgBody, http.Header{"X-Claude-Code-Session-Id": {raw}})
	withMeta := `{"model":"claude-sonnet-4-5","max_tokens":64,"messages":[{"role":"user","content":"hi"}],` +
		`"metadata":{"user_id":"user_abc_account_def_session_` + raw + `"}}`
	byMeta := post(withMeta, nil)
	other := post(msgBody, http.Header{"X-Claude-Code-Session-Id": {"another-session"}})
	noSession := post(msgBody, nil)

	if len(byHeader.Session) != 12 || byHeader.Session == raw {
		t.Fatalf("session %q: want a 12-digit hash", byHeader.Session)
	}
	if byMeta.Session != byHeader.Session {
		t.Errorf("metadata session %q, header session %q: one session, two names", byMeta.Session, byHeader.Session)
	}
	if other.Session == byHeader.Session || noSession.Session == "" || noSession.Session == byHeader.Session {
		t.Errorf("sessions %q, %q, %q: want distinct", byHeader.Session, other.Session, noSession.Session)
	}
	h.stop()
	found := false // the search sees the rows: their hash is there
	for _, name := range []string{store.LogFile, store.LogFile + "-wal"} {
		b, err := os.ReadFile(filepath.Join(h.dir, name))
		if err != nil {
			continue
		}
		found = found || bytes.Contains(b, []byte(byHeader.Session))
		if bytes.Contains(b, []byte(raw)) || bytes.Contains(b, []byte("another-session")) {
			t.Errorf("%s holds a raw session id", name)
		}
	}
	if !found {
		t.Error("the session hash is in no log file: the search proves nothing")
	}
	if !reflect.DeepEqual(byHeader.AccountsTried, store.Names{"a"}) {
		t.Errorf("accounts tried %q", byHeader.AccountsTried)
	}
}

// The session inside metadata.user_id, in both of Claude Code's forms;
// only the top-level metadata counts.
func TestMetadataSession(t *testing.T) {
	for _, c := range []struct{ body, want string }{
		{`{"model":"m","metadata":{"user_id":"user_ab12_account_c0de_session_5e55-1"}}`, "5e55-1"},
		{`{"metadata":{"user_id":"{\"device_id\":\"d\",\"account_uuid\":\"a\",\"session_id\":\"5e55-2\"}"},"model":"m"}`, "5e55-2"},
		{`{"messages":[{"content":"{\"metadata\":{\"user_id\":\"x_session_fake\"}}"}],"metadata":{"user_id":"user_1"}}`, ""},
		{`{"messages":[{"metadata":{"user_id":"x_session_nested"}}]}`, ""},
		{`not json`, ""},
		{``, ""},
	} {
		if got := metadataSession([]byte(c.body)); got != c.want {
			t.Errorf("%s: %q, want %q", c.body, got, c.want)
		}
	}
}
