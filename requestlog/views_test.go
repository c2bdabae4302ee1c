package requestlog_test

import (
	"encoding/json"
	"reflect"
	"testing"

	"github.com/claudeflare/claudeflare/requestlog"
	"github.com/claudeflare/claudeflare/store"
)

// The NDJSON of requests list and GET /api/requests carries the routing
// fields: as logged on a new row, as null (unknown) on a row from before.
func TestRequestLineRoutingFields(t *testing.T) {
	stu := `{"web_search_requests":1}`
	line := func(r store.Request) map[string]any {
		t.Helper()
		b, err := json.Marshal(requestlog.NewRequestLine(&r))
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatal(err)
		}
		return m
	}
	cost := 0.0125
	m := line(store.Request{ID: "r1", TS: 1700000000000, CacheCreation5mInputTokens: 5, CacheCreation1hInputTokens: 7,
		ServerToolUse: &stu, UpstreamRequestID: "req_1", Session: "0123456789ab", AccountsTried: store.Names{"a", "b"}, CostUSD: &cost})
	want := map[string]any{
		"cost_usd":                       0.0125,
		"cache_creation_5m_input_tokens": 5.0, "cache_creation_1h_input_tokens": 7.0,
		"server_tool_use":     map[string]any{"web_search_requests": 1.0},
		"upstream_request_id": "req_1", "session": "0123456789ab", "accounts_tried": []any{"a", "b"},
	}
	for k, v := range want {
		if !reflect.DeepEqual(m[k], v) {
			t.Errorf("%s = %#v, want %#v", k, m[k], v)
		}
	}
	// Every key the contract names is there.
	for _, k := range []string{"id", "timestamp", "method", "path", "model", "account", "status", "attempts",
		"duration_ms", "ttfb_ms", "input_tokens", "output_tokens", "cache_read_input_tokens",
		"cache_creation_input_tokens", "streamed", "end_state", "error", "client", "cost_usd",
		"cache_creation_5m_input_tokens", "cache_creation_1h_input_tokens", "server_tool_use",
		"upstream_request_id", "session", "accounts_tried"} {
		if _, ok := m[k]; !ok {
			t.Errorf("no %s", k)
		}
	}

	old := line(store.Request{ID: "r0", TS: 1700000000000})
	for _, k := range []string{"server_tool_use", "upstream_request_id", "session", "accounts_tried", "cost_usd"} {
		if v, ok := old[k]; !ok || v != nil {
			t.Errorf("old row: %s = %#v, want null", k, v)
		}
	}
	if none := line(store.Request{ID: "r2", AccountsTried: store.Names{}}); !reflect.DeepEqual(none["accounts_tried"], []any{}) {
		t.Errorf("nothing tried: accounts_tried = %#v, want []", none["accounts_tried"])
	}
}
