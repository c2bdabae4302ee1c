package proxy

import (
	"strings"
	"testing"

	"github.com/claudeflare/claudeflare/internal/fakeapi"
)

// TestRowErrorRedacted: an in-stream error whose message echoes the
// client's key (an upstream quoting the request back) is stored in the
// request row's error, which is not sealed: the key must be redacted
// there, while the rest of the message stays readable.
func TestRowErrorRedacted(t *testing.T) {
	h := newHarness(t)
	h.addOAuth("a", 0, false)
	h.reload()
	h.api.Inject(fakeapi.Fault{Account: "a", Kind: fakeapi.FaultStreamError, AfterEvents: 1,
		Body: `{"type":"error","error":{"type":"invalid_request_error","message":"unexpected text near ` + antKey + ` in messages.0"}}`})
	rep := h.post(streamBody)
	if rep.status != 200 || !strings.Contains(string(rep.body), "event: error") {
		t.Fatalf("%d %q", rep.status, rep.body)
	}
	row := h.lastRow()
	if row.EndState != EndUpstreamError || !strings.Contains(row.Error, "invalid_request_error") {
		t.Fatalf("setup: the row does not carry the in-stream error: %+v", row)
	}
	if s := secretsIn([]byte(row.Error)); len(s) > 0 {
		t.Fatalf("the request row's error holds %v: %q", s, row.Error)
	}
	if !strings.Contains(row.Error, "unexpected text near "+Redacted+" in messages.0") {
		t.Fatalf("row error %q, want the message with the key redacted", row.Error)
	}
}
