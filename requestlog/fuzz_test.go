package requestlog

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/claudeflare/claudeflare/store"
)

// Fuzz tests for payload export: whatever bytes a payload holds once
// opened, export writes valid NDJSON or returns an error, and its fast
// paths agree with encoding/json. Seeds are in testdata/fuzz/.

// FuzzDecodeStoredBytes: for any bytes, the hand-written capture decoder
// either declines (and export falls back to encoding/json) or decodes a
// payload that exports as one valid line, and on every payload that
// store.MarshalCaptureJSON can write (the JSON of the old format, and of a
// compressed capture's metadata), exactly as store.UnmarshalCapture's.
func FuzzDecodeStoredBytes(f *testing.F) {
	for _, c := range []store.Capture{
		{},
		{Request: store.CapturedMessage{Method: "POST", Path: "/v1/messages?beta=true", Headers: map[string][]string{"Content-Type": {"application/json"}, "X-Api-Key": {"[REDACTED]"}}, Body: []byte(`{"model":"m"}`)},
			Response: store.CapturedMessage{Status: 200, Headers: map[string][]string{"Content-Type": {"text/event-stream"}}, Body: []byte("event: ping\ndata: {}\n\n"), Truncated: true}},
		{Request: store.CapturedMessage{Method: "GET", Path: "/v1/models", BodyOmitted: true}, Response: store.CapturedMessage{Status: 404, BodyOmitted: true}},
		{Request: store.CapturedMessage{Path: "\u2028\"\\\x01é", Headers: map[string][]string{"a\"b": {"", "x"}}}},
	} {
		b, err := store.MarshalCaptureJSON(&c)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var d captureDecoder
		if !d.fast(b) {
			return
		}
		req := store.Request{ID: "x", Method: "POST", Path: "/p", Status: 200}
		var cv1, cv2 converter
		var r1, r2 Row
		cv1.row(&r1, &req, &d.c, false)
		l1 := r1.AppendJSON(nil)
		if !json.Valid(l1) {
			t.Fatalf("export of %q is not JSON: %s", b, l1)
		}
		want, err := store.UnmarshalCapture(b)
		if err != nil {
			return
		}
		// On bytes the proxy cannot have written (duplicate keys, "00",
		// invalid UTF-8...) the two decoders may differ; what the fast
		// one exports is still one valid line. On every payload that
		// store.MarshalCaptureJSON can write, they must agree.
		if canon, _ := store.MarshalCaptureJSON(want); !bytes.Equal(canon, b) {
			return
		}
		// The exported lines must be the same (invalid UTF-8 that one
		// decoder keeps and the other replaces is replaced on output).
		cv2.row(&r2, &req, want, false)
		if l2 := r2.AppendJSON(nil); !bytes.Equal(l1, l2) {
			t.Fatalf("fast decoder exports %q differently:\n fast %s\n json %s", b, l1, l2)
		}
	})
}

// FuzzRowJSON: a row's hand-written JSON line is exactly what
// encoding/json writes (HTML escaping off), for any strings and any body
// that Body renders.
func FuzzRowJSON(f *testing.F) {
	f.Add("01J", "work", "POST", "/v1/messages?beta=true", "Content-Type", "application/json", "application/json", "", []byte(`{"a": [1, 2]}`), 200)
	f.Add("id\x00", "wörk\u2028", "", "", "x\"y", "\xff\xfe", "text/event-stream", "", []byte("event: x\ndata: y\n\n"), 0)
	f.Add("", "", "GET", "/", "A", "b", "", "gzip", []byte{0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255}, -1)
	f.Add("<&>", "", "", "", "", "", "application/octet-stream", "", []byte{0, 1, 2, 0xff}, 529)
	f.Fuzz(func(t *testing.T, id, account, method, path, hk, hv, ct, ce string, body []byte, status int) {
		var buf bytes.Buffer
		raw, enc := Body(ct, ce, body, &buf)
		if !json.Valid(raw) {
			t.Fatalf("Body(%q, %q, %q) = %q: not JSON", ct, ce, body, raw)
		}
		r := Row{ID: id, Timestamp: Timestamp(int64(status) * 1000), Account: account, Status: status,
			Request:  Message{Method: method, Path: path, Headers: map[string]string{hk: hv}, Body: append(json.RawMessage(nil), raw...), BodyEncoding: enc},
			Response: Message{Status: status, Headers: map[string]string{}, Body: nil, Truncated: status%2 == 0, BodyOmitted: status%3 == 0},
		}
		got := r.AppendJSON(nil)
		if !json.Valid(got) {
			t.Fatalf("AppendJSON is not JSON: %q", got)
		}
		var want bytes.Buffer
		e := json.NewEncoder(&want)
		e.SetEscapeHTML(false)
		if err := e.Encode(&r); err != nil {
			t.Fatal(err)
		}
		// The same JSON value (encoding/json writes \b and \f where
		// AppendJSON writes \u0008 and \u000c; both mean the same).
		var g, w any
		if err := json.Unmarshal(got, &g); err != nil {
			t.Fatal(err)
		}
		json.Unmarshal(want.Bytes(), &w)
		if !reflect.DeepEqual(g, w) {
			t.Fatalf("AppendJSON differs from encoding/json:\n got %s\nwant %s", got, want.Bytes())
		}
	})
}

// FuzzExportStoredBytes stores arbitrary bytes as an opened payload in a
// real log and exports it through WriteNDJSON with one and with two
// workers: either an error, or exactly one line of valid JSON that names
// the request; never a panic, never a half line.
func FuzzExportStoredBytes(f *testing.F) {
	seed := store.Capture{Request: store.CapturedMessage{Method: "POST", Path: "/v1/messages", Headers: map[string][]string{"Authorization": {"[REDACTED]"}}, Body: []byte(`{"x":1}`)},
		Response: store.CapturedMessage{Status: 200, Headers: map[string][]string{"Content-Encoding": {"gzip"}}, Body: []byte{0x1f, 0x8b, 8}}}
	b, _ := store.MarshalCapture(&seed)
	f.Add(b)
	b, _ = store.MarshalCaptureJSON(&seed)
	f.Add(b)
	f.Add([]byte(`{"request":{"headers":null,"body":"////"},"response":{"status":-7,"headers":{"Content-Type":["application/json"]},"body":"e30="}}`))
	f.Add([]byte(`{"request":{"method":"\ud800"}}`))
	f.Add([]byte(`not json`))
	f.Add([]byte{})

	dir, err := os.MkdirTemp("", "fuzz-export")
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { os.RemoveAll(dir) })
	db, err := store.OpenLog(dir)
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { db.Close() })
	var n int64
	f.Fuzz(func(t *testing.T, plain []byte) {
		ctx := context.Background()
		if _, err := db.W.Exec(`DELETE FROM requests`); err != nil {
			t.Fatal(err)
		}
		n++
		id := "req-" + strings.Repeat("x", int(n%3))
		err := store.InsertRequests(ctx, db, []store.Request{{ID: id, TS: n, Method: "POST", Path: "/v1/messages", Status: 200}},
			[]store.Payload{{RequestID: id, TS: n, KeyID: 1, Sealed: plain}})
		if err != nil {
			t.Fatal(err)
		}
		open := func(_ int64, _ string, sealed []byte) ([]byte, error) { return sealed, nil }
		for _, workers := range []int{1, 2} {
			var out bytes.Buffer
			k, err := WriteNDJSON(ctx, db, Filter{}, open, &out, workers)
			if err != nil {
				if out.Len() != 0 {
					t.Fatalf("workers=%d: error %v after writing %q", workers, err, out.Bytes())
				}
				continue
			}
			line, ok := bytes.CutSuffix(out.Bytes(), []byte("\n"))
			if k != 1 || !ok || bytes.IndexByte(line, '\n') >= 0 {
				t.Fatalf("workers=%d: %d rows, output %q", workers, k, out.Bytes())
			}
			var row struct {
				ID       string          `json:"id"`
				Request  json.RawMessage `json:"request"`
				Response json.RawMessage `json:"response"`
			}
			if err := json.Unmarshal(line, &row); err != nil || row.ID != id || row.Request == nil || row.Response == nil {
				t.Fatalf("workers=%d: line is not a row (%v): %q", workers, err, line)
			}
		}
	})
}
