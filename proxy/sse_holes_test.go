package proxy

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/claudeflare/claudeflare/internal/fakeapi"
)

// TestSSEEventsReachClientWhileStreamRuns: the upstream sends the first
// event of a stream and then holds the rest. The client must read that
// event while the upstream still holds the stream, not when it ends.
func TestSSEEventsReachClientWhileStreamRuns(t *testing.T) {
	h := newHarness(t)
	h.addOAuth("work", 0, false)
	h.reload()
	gate := h.api.HoldStream(1) // message_start, then hold
	defer gate.Release()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.url+"/v1/messages?beta=true", strings.NewReader(streamBody))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Anthropic-Version", "2023-06-01")
	client := &http.Client{Transport: &http.Transport{DisableCompression: true}}

	type firstEvent struct {
		line string
		rest io.Reader
		err  error
	}
	got := make(chan firstEvent, 1)
	go func() {
		resp, err := client.Do(req)
		if err != nil {
			got <- firstEvent{err: err}
			return
		}
		br := bufio.NewReader(resp.Body)
		line, err := br.ReadString('\n')
		got <- firstEvent{line: line, rest: struct {
			io.Reader
			io.Closer
		}{br, resp.Body}, err: err}
	}()

	arrived(t, gate, "the upstream to hold the stream")
	var first firstEvent
	select {
	case first = <-got:
	case <-time.After(15 * time.Second):
		t.Fatal("the stream's first event did not reach the client while the upstream held the rest of the stream: events are held back")
	}
	if first.err != nil || first.line != "event: message_start\n" {
		t.Fatalf("first line %q, %v", first.line, first.err)
	}
	gate.Release()
	rest, err := io.ReadAll(first.rest)
	first.rest.(io.Closer).Close()
	if err != nil || !strings.Contains(string(rest), "event: message_stop") {
		t.Fatalf("rest of the stream: %v %q", err, rest)
	}
	if row := h.lastRow(); row.Status != 200 || !row.Streamed || row.OutputTokens == 0 {
		t.Fatalf("request log row %+v", row)
	}
}

// TestStreamEndedWithoutStopIsTruncated: the upstream ends a stream
// cleanly but before message_stop (something on the way gave up). The
// client gets what was sent, and the request log says the answer was
// truncated, not complete; it is not retried (bytes had reached the
// client).
func TestStreamEndedWithoutStopIsTruncated(t *testing.T) {
	h := newHarness(t)
	h.addOAuth("work", 0, false)
	h.addOAuth("spare", 1, false)
	h.reload()
	h.api.Inject(fakeapi.Fault{Kind: fakeapi.FaultEndStreamEarly, AfterEvents: 4})
	rep := h.post(streamBody)
	if rep.status != 200 || !strings.Contains(string(rep.body), "content_block_delta") || strings.Contains(string(rep.body), "message_stop") {
		t.Fatalf("client got %d %q", rep.status, rep.body)
	}
	row := h.lastRow()
	if row.EndState != EndTruncated || !strings.Contains(row.Error, "message_stop") {
		t.Fatalf("request log: end state %q, error %q; want %q", row.EndState, row.Error, EndTruncated)
	}
	if n := len(h.apiRequests()); n != 1 {
		t.Fatalf("%d upstream requests, want 1 (no retry after the first byte)", n)
	}
}
