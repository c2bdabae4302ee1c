// Package logtest fills a request log with generated requests and sealed
// payloads, for the tests and benchmarks of the packages that read and
// clean the log.
package logtest

import (
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/claudeflare/claudeflare/store"
)

// Options describe a generated log.
type Options struct {
	N        int           // requests to write
	Start    time.Time     // timestamp of the first request
	Step     time.Duration // between two requests (default 1s)
	Accounts []string      // round robin; default "a", "b"
	// Seal seals a payload; nil writes requests without payloads.
	Seal func(requestID string, plain []byte) (keyID int64, sealed []byte, err error)
	// Batch is the requests per transaction (default 2000).
	Batch int
	// IDPrefix starts every request id (default "req-").
	IDPrefix string
	// BodyBytes pads each request body to about this size (default 600).
	BodyBytes int
}

// Request returns the i-th generated request.
func Request(o Options, i int) store.Request {
	o.defaults()
	status := 200
	errText := ""
	switch {
	case i%50 == 7:
		status, errText = 429, "rate limited"
	case i%97 == 3:
		status, errText = 529, "overloaded"
	}
	return store.Request{
		ID:                       fmt.Sprintf("%s%08d", o.IDPrefix, i),
		TS:                       store.ToMS(o.Start.Add(time.Duration(i) * o.Step)),
		Method:                   "POST",
		Path:                     "/v1/messages?beta=true",
		Model:                    "claude-sonnet-4-5",
		Account:                  o.Accounts[i%len(o.Accounts)],
		Status:                   status,
		Attempts:                 1 + i%2,
		DurationMS:               int64(200 + (i*37)%5000),
		TTFBMS:                   int64(50 + (i*13)%400),
		InputTokens:              int64(10 + i%100),
		OutputTokens:             int64(5 + i%50),
		CacheReadInputTokens:     int64(i % 1000),
		CacheCreationInputTokens: int64(i % 30),
		Streamed:                 i%2 == 1,
		EndState:                 "complete",
		Error:                    errText,
		Client:                   "127.0.0.1",
	}
}

// Capture returns the i-th generated capture: a JSON request, and a JSON
// response for even i or an SSE stream for odd i. Credential headers are
// "[REDACTED]", as the proxy stores them.
func Capture(o Options, i int) *store.Capture {
	o.defaults()
	pad := strings.Repeat("lorem ipsum ", max(0, o.BodyBytes-200)/12)
	reqBody := fmt.Sprintf(`{"model":"claude-sonnet-4-5","max_tokens":1024,"stream":%t,"messages":[{"role":"user","content":"request %d: %s"}]}`, i%2 == 1, i, pad)
	c := &store.Capture{
		Request: store.CapturedMessage{
			Method: "POST",
			Path:   "/v1/messages?beta=true",
			Headers: map[string][]string{
				"Content-Type":      {"application/json"},
				"Anthropic-Version": {"2023-06-01"},
				"Authorization":     {"[REDACTED]"},
				"User-Agent":        {"claude-cli/2.0.0 (external, cli)"},
			},
			Body: []byte(reqBody),
		},
	}
	usage := fmt.Sprintf(`{"input_tokens":%d,"output_tokens":%d,"cache_read_input_tokens":%d,"cache_creation_input_tokens":%d}`, 10+i%100, 5+i%50, i%1000, i%30)
	if i%2 == 0 {
		c.Response = store.CapturedMessage{
			Status:  200,
			Headers: map[string][]string{"Content-Type": {"application/json"}, "Request-Id": {fmt.Sprintf("req_%d", i)}},
			Body: []byte(fmt.Sprintf(`{"id":"msg_%d","type":"message","role":"assistant","model":"claude-sonnet-4-5","content":[{"type":"text","text":"Hello from %d"}],"stop_reason":"end_turn","usage":%s}`,
				i, i, usage)),
		}
	} else {
		c.Response = store.CapturedMessage{
			Status:  200,
			Headers: map[string][]string{"Content-Type": {"text/event-stream"}, "Request-Id": {fmt.Sprintf("req_%d", i)}},
			Body: []byte(fmt.Sprintf("event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_%d\",\"usage\":%s}}\n\n"+
				"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hello\"}}\n\n"+
				"event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":%d}}\n\n"+
				"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n", i, usage, 5+i%50)),
		}
	}
	return c
}

func (o *Options) defaults() {
	if o.Step == 0 {
		o.Step = time.Second
	}
	if len(o.Accounts) == 0 {
		o.Accounts = []string{"a", "b"}
	}
	if o.Batch <= 0 {
		o.Batch = 2000
	}
	if o.IDPrefix == "" {
		o.IDPrefix = "req-"
	}
	if o.BodyBytes == 0 {
		o.BodyBytes = 600
	}
	if o.Start.IsZero() {
		o.Start = time.Now().Add(-time.Duration(o.N) * o.Step)
	}
}

// Fill writes o.N generated requests (and payloads, when o.Seal is set)
// through store.InsertRequests.
func Fill(ctx context.Context, db *store.DB, o Options) error {
	o.defaults()
	for lo := 0; lo < o.N; lo += o.Batch {
		hi := min(o.N, lo+o.Batch)
		reqs := make([]store.Request, 0, hi-lo)
		var pays []store.Payload
		for i := lo; i < hi; i++ {
			r := Request(o, i)
			reqs = append(reqs, r)
			if o.Seal == nil {
				continue
			}
			plain, err := store.MarshalCapture(Capture(o, i))
			if err != nil {
				return err
			}
			kid, sealed, err := o.Seal(r.ID, plain)
			if err != nil {
				return err
			}
			pays = append(pays, store.Payload{RequestID: r.ID, TS: r.TS, KeyID: kid, Sealed: sealed})
		}
		if err := store.InsertRequests(ctx, db, reqs, pays); err != nil {
			return fmt.Errorf("fill log: %w", err)
		}
	}
	return nil
}

// BenchRows is the size of the log the benchmarks generate:
// $CLAUDEFLARE_BENCH_ROWS, default def (1,000,000 takes minutes).
func BenchRows(def int) int {
	if s := os.Getenv("CLAUDEFLARE_BENCH_ROWS"); s != "" {
		if n, err := strconv.Atoi(s); err == nil && n > 0 {
			return n
		}
	}
	return def
}

// CopyDB copies the SQLite file src (checkpointed, no -wal) to dst.
func CopyDB(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	// On disk before the measurement starts, so that write-back of the
	// copy does not compete with it.
	if err := out.Sync(); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// Checkpoint folds the write-ahead log into the database file, so that the
// file alone can be copied.
func Checkpoint(db *store.DB) error {
	return db.CheckpointTruncate(context.Background())
}
