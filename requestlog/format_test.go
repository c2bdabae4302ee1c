package requestlog_test

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/claudeflare/claudeflare/requestlog"
	"github.com/claudeflare/claudeflare/store"
)

// A payload in the old format (JSON, bodies in base64) exports exactly as
// the same capture in the compressed format, in the same log, with one
// worker and with several: logs written before payloads were compressed
// read as they did.
func TestExportOldAndCompressedFormatsAlike(t *testing.T) {
	sse := "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"content\":[]}}\n\n" +
		strings.Repeat("event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"hello \"}}\n\n", 20) +
		"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"
	captures := []*store.Capture{
		{Request: store.CapturedMessage{Method: "POST", Path: "/v1/messages?beta=true", Headers: map[string][]string{"Content-Type": {"application/json"}, "Authorization": {"[REDACTED]"}},
			Body: []byte(`{"model":"claude-sonnet-4-5","stream":true,"messages":[{"role":"user","content":"` + strings.Repeat("say hello ", 300) + `"}]}`)},
			Response: store.CapturedMessage{Status: 200, Headers: map[string][]string{"Content-Type": {"text/event-stream; charset=utf-8"}}, Body: []byte(sse)}},
		{Request: store.CapturedMessage{Method: "POST", Path: "/v1/messages", Headers: map[string][]string{"Content-Type": {"application/json"}}, Body: []byte(`{"model":"x","messages":[{"ro`), Truncated: true},
			Response: store.CapturedMessage{Status: 200, Headers: map[string][]string{"Content-Type": {"application/json"}}, BodyOmitted: true}},
		{Request: store.CapturedMessage{Method: "GET", Path: "/v1/models", BodyOmitted: true},
			Response: store.CapturedMessage{Status: 404, Headers: map[string][]string{}, BodyOmitted: true}},
		{Request: store.CapturedMessage{Method: "POST", Path: "/v1/files", Headers: map[string][]string{"Content-Type": {"application/octet-stream"}}, Body: []byte{0, 1, 2, 0xff, 0xfe}},
			Response: store.CapturedMessage{Status: 500, Headers: map[string][]string{"Content-Type": {"application/json"}}, Body: []byte(`{"type":"error", "error": {"type":"api_error"}}`)}},
	}
	db := openLog(t)
	var reqs []store.Request
	var pays []store.Payload
	for i, c := range captures {
		old, err := store.MarshalCaptureJSON(c)
		if err != nil {
			t.Fatal(err)
		}
		compressed, err := store.MarshalCapture(c)
		if err != nil {
			t.Fatal(err)
		}
		if old[0] != '{' || compressed[0] == '{' {
			t.Fatalf("capture %d: formats %q %q", i, old[:1], compressed[:1])
		}
		for k, plain := range [][]byte{old, compressed} {
			id := []string{"old", "new"}[k] + string(rune('0'+i))
			reqs = append(reqs, store.Request{ID: id, TS: store.ToMS(t0) + int64(i), Method: c.Request.Method, Path: c.Request.Path, Status: 200})
			pays = append(pays, store.Payload{RequestID: id, TS: store.ToMS(t0) + int64(i), KeyID: 1, Sealed: plain, Truncated: c.Request.Truncated || c.Response.Truncated})
		}
	}
	if err := store.InsertRequests(context.Background(), db, reqs, pays); err != nil {
		t.Fatal(err)
	}
	for _, workers := range []int{1, 3} {
		var out bytes.Buffer
		n, err := requestlog.WriteNDJSON(context.Background(), db, requestlog.Filter{}, plainOpen, &out, workers)
		if err != nil || n != int64(2*len(captures)) {
			t.Fatalf("workers=%d: %d rows, %v", workers, n, err)
		}
		lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
		for i := 0; i < len(lines); i += 2 {
			old := strings.Replace(lines[i], `"id":"old`, `"id":"new`, 1)
			if old != lines[i+1] {
				t.Errorf("workers=%d: capture %d exports differently:\n old %s\n new %s", workers, i/2, lines[i], lines[i+1])
			}
			if !strings.Contains(lines[i], `"id":"old`) {
				t.Errorf("line %d: %s", i, lines[i])
			}
		}
	}
}
