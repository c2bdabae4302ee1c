package requestlog_test

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/claudeflare/claudeflare/internal/logtest"
	"github.com/claudeflare/claudeflare/internal/testutil"
	"github.com/claudeflare/claudeflare/requestlog"
	"github.com/claudeflare/claudeflare/retention"
	"github.com/claudeflare/claudeflare/store"
)

var t0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

// plain stands in for the vault in these tests: a payload is its plaintext.
func plainSeal(_ string, p []byte) (int64, []byte, error)   { return 1, append([]byte(nil), p...), nil }
func plainOpen(_ int64, _ string, s []byte) ([]byte, error) { return s, nil }

func openLog(t testing.TB) *store.DB {
	t.Helper()
	db, err := store.OpenLog(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func fill(t testing.TB, db *store.DB, n int) logtest.Options {
	t.Helper()
	o := logtest.Options{N: n, Start: t0, Step: time.Second, Seal: plainSeal, Accounts: []string{"work", "home", "spare"}}
	if err := logtest.Fill(context.Background(), db, o); err != nil {
		t.Fatal(err)
	}
	return o
}

func ids(t *testing.T, db *store.DB, f requestlog.Filter) []string {
	t.Helper()
	var out []string
	err := requestlog.List(context.Background(), db, f, func(r *store.Request) error {
		out = append(out, r.ID)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestListFilters(t *testing.T) {
	db := openLog(t)
	fill(t, db, 300)
	all := ids(t, db, requestlog.Filter{})
	if len(all) != 300 || all[0] != "req-00000000" || all[299] != "req-00000299" {
		t.Fatalf("all: %d rows, %v .. %v", len(all), all[0], all[len(all)-1])
	}
	got := ids(t, db, requestlog.Filter{Limit: 5})
	if strings.Join(got, ",") != "req-00000295,req-00000296,req-00000297,req-00000298,req-00000299" {
		t.Errorf("limit 5: %v", got)
	}
	got = ids(t, db, requestlog.Filter{Since: t0.Add(100 * time.Second), Until: t0.Add(109 * time.Second)})
	if len(got) != 10 || got[0] != "req-00000100" || got[9] != "req-00000109" {
		t.Errorf("since/until: %v", got)
	}
	got = ids(t, db, requestlog.Filter{Account: "home", Limit: 2})
	if strings.Join(got, ",") != "req-00000295,req-00000298" {
		t.Errorf("account home limit 2: %v", got)
	}
	got = ids(t, db, requestlog.Filter{StatusMin: 429, StatusMax: 429})
	if len(got) != 6 || got[0] != "req-00000007" {
		t.Errorf("status 429: %v", got)
	}
	got = ids(t, db, requestlog.Filter{StatusMin: 500, StatusMax: 599})
	if len(got) == 0 {
		t.Errorf("status 5xx: none")
	}
	got = ids(t, db, requestlog.Filter{ID: "req-00000042"})
	if len(got) != 1 {
		t.Errorf("id: %v", got)
	}
	// An error from the callback stops the listing and comes back.
	stop := errors.New("stop")
	n := 0
	err := requestlog.List(context.Background(), db, requestlog.Filter{}, func(*store.Request) error {
		n++
		if n == 3 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) || n != 3 {
		t.Errorf("callback error: %v after %d", err, n)
	}
}

func TestFollowSeesRowsWrittenAfterItStarted(t *testing.T) {
	db := openLog(t)
	fill(t, db, 20)
	hw, err := requestlog.HighWater(context.Background(), db)
	if err != nil || hw != 20 {
		t.Fatalf("high water %d %v", hw, err)
	}
	tick := make(chan time.Time)
	seen := make(chan string, 100)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- requestlog.Follow(ctx, db, requestlog.Filter{Account: "work"}, hw, tick, func(r *store.Request) error {
			seen <- r.ID
			return nil
		})
	}()
	tick <- time.Now() // nothing new
	insert := func(id, account string) {
		t.Helper()
		err := store.InsertRequests(context.Background(), db, []store.Request{{ID: id, TS: store.ToMS(time.Now()), Method: "POST", Path: "/v1/messages", Account: account, Status: 200}}, nil)
		if err != nil {
			t.Fatal(err)
		}
	}
	insert("late-1", "work")
	insert("late-2", "home") // filtered out
	tick <- time.Now()
	insert("late-3", "work")
	tick <- time.Now()
	tick <- time.Now() // the previous poll has finished once this is received
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("follow: %v", err)
	}
	close(seen)
	var got []string
	for id := range seen {
		got = append(got, id)
	}
	if strings.Join(got, ",") != "late-1,late-3" {
		t.Errorf("follow saw %v", got)
	}
}

func exportLines(t *testing.T, db *store.DB, f requestlog.Filter) []map[string]any {
	t.Helper()
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	err := requestlog.Export(context.Background(), db, f, plainOpen, func(r *requestlog.Row) error { return enc.Encode(r) })
	if err != nil {
		t.Fatal(err)
	}
	var out []map[string]any
	sc := bufio.NewScanner(&buf)
	sc.Buffer(nil, 64<<20)
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("line %d is not JSON: %v\n%s", len(out)+1, err, sc.Bytes())
		}
		out = append(out, m)
	}
	return out
}

func TestExportRowsAreJSONWithBodiesAsJSONOrText(t *testing.T) {
	db := openLog(t)
	fill(t, db, 10)
	lines := exportLines(t, db, requestlog.Filter{})
	if len(lines) != 10 {
		t.Fatalf("%d lines", len(lines))
	}
	for i, m := range lines {
		if m["id"] != fmt.Sprintf("req-%08d", i) || m["timestamp"] != t0.Add(time.Duration(i)*time.Second).Format("2006-01-02T15:04:05.000Z") {
			t.Errorf("line %d: id %v timestamp %v", i, m["id"], m["timestamp"])
		}
		req := m["request"].(map[string]any)
		resp := m["response"].(map[string]any)
		if req["method"] != "POST" || req["path"] != "/v1/messages?beta=true" {
			t.Errorf("line %d request %v", i, req)
		}
		if h := req["headers"].(map[string]any); h["authorization"] != "[REDACTED]" || h["content-type"] != "application/json" {
			t.Errorf("line %d request headers %v", i, h)
		}
		if _, ok := req["body"].(map[string]any)["messages"]; !ok {
			t.Errorf("line %d: request body is not JSON: %v", i, req["body"])
		}
		if i%2 == 0 {
			body, ok := resp["body"].(map[string]any)
			if !ok || body["usage"] == nil {
				t.Errorf("line %d: response body has no usage: %v", i, resp["body"])
			}
		} else if s, ok := resp["body"].(string); !ok || !strings.HasPrefix(s, "event: message_start\ndata: {") {
			t.Errorf("line %d: SSE body is not text: %v", i, resp["body"])
		}
		if resp["status"] != 200.0 || m["truncated"] != false {
			t.Errorf("line %d: status %v truncated %v", i, resp["status"], m["truncated"])
		}
	}
	if got := exportLines(t, db, requestlog.Filter{ID: "req-00000003"}); len(got) != 1 {
		t.Errorf("--id: %d lines", len(got))
	}
	if got := exportLines(t, db, requestlog.Filter{Account: "home", Since: t0.Add(2 * time.Second), Until: t0.Add(7 * time.Second)}); len(got) != 2 {
		t.Errorf("account and window: %d lines", len(got))
	}
}

func TestBodyRendering(t *testing.T) {
	gz := func(s string) []byte {
		var b bytes.Buffer
		w := gzip.NewWriter(&b)
		w.Write([]byte(s))
		w.Close()
		return b.Bytes()
	}
	full := gz(`{"usage":{"input_tokens":3}}`)
	for _, tc := range []struct {
		name, ct, ce string
		body         []byte
		want, enc    string
	}{
		{"json", "application/json", "", []byte("{\n  \"a\": [1, 2]\n}"), `{"a":[1,2]}`, ""},
		{"json without type", "", "", []byte(` [1,2]`), `[1,2]`, ""},
		{"truncated json", "application/json", "", []byte(`{"a": "unfinish`), `"{\"a\": \"unfinish"`, ""},
		{"sse", "text/event-stream; charset=utf-8", "", []byte("event: ping\ndata: {\"type\":\"ping\"}\n\n"), `"event: ping\ndata: {\"type\":\"ping\"}\n\n"`, ""},
		{"text", "text/plain", "", []byte("hello <b>\u2028"), `"hello <b>\u2028"`, ""},
		{"control bytes", "text/plain", "", []byte("a\x00b\x1f"), `"a\u0000b\u001f"`, ""},
		{"binary", "application/octet-stream", "", []byte{0xff, 0xfe, 0x00}, `"//4A"`, "base64"},
		{"gzip", "application/json", "gzip", full, `{"usage":{"input_tokens":3}}`, ""},
		{"gzip by magic", "application/json", "", full, `{"usage":{"input_tokens":3}}`, ""},
		{"gzip cut short", "application/json", "gzip", full[:len(full)-6], `{"usage":{"input_tokens":3}}`, ""},
		{"empty", "application/json", "", nil, `null`, ""},
		// The recorder stores bodies decoded, with Content-Encoding as
		// sent: a body that is already text is shown as it is.
		{"stored decoded, deflate", "application/json", "deflate", []byte(`{"model":"claude-sonnet-4-5","max_tokens":64,"messages":[{"role":"user","content":"hi"}]}`), `{"model":"claude-sonnet-4-5","max_tokens":64,"messages":[{"role":"user","content":"hi"}]}`, ""},
		{"stored decoded, gzip", "text/event-stream", "gzip", []byte("event: ping\n\n"), `"event: ping\n\n"`, ""},
		{"stored decoded, note", "application/json", "br", []byte("[REDACTED: undecodable br body]"), `"[REDACTED: undecodable br body]"`, ""},
		{"stored decoded, not raw deflate", "text/plain", "deflate", []byte("\nhello"), `"\nhello"`, ""},
		{"stored decoded, not zlib", "text/plain", "deflate", []byte("x^ hello"), `"x^ hello"`, ""},
	} {
		var buf bytes.Buffer
		got, enc := requestlog.Body(tc.ct, tc.ce, tc.body, &buf)
		if string(got) != tc.want || enc != tc.enc {
			t.Errorf("%s: got %s (%q), want %s (%q)", tc.name, got, enc, tc.want, tc.enc)
		}
		if !json.Valid(got) {
			t.Errorf("%s: not valid JSON: %s", tc.name, got)
		}
	}
}

func TestExportTruncatedAndOmitted(t *testing.T) {
	db := openLog(t)
	c := &store.Capture{
		Request:  store.CapturedMessage{Method: "POST", Path: "/v1/messages", Headers: map[string][]string{"Content-Type": {"application/json"}}, Body: []byte(`{"model":"x","messages":[{"ro`), Truncated: true},
		Response: store.CapturedMessage{Status: 200, Headers: map[string][]string{"Content-Type": {"application/json"}}, BodyOmitted: true},
	}
	plain, _ := store.MarshalCapture(c)
	err := store.InsertRequests(context.Background(), db,
		[]store.Request{{ID: "t1", TS: store.ToMS(t0), Method: "POST", Path: "/v1/messages", Status: 200}, {ID: "nopayload", TS: store.ToMS(t0), Method: "GET", Path: "/v1/models", Status: 200}},
		[]store.Payload{{RequestID: "t1", TS: store.ToMS(t0), KeyID: 1, Sealed: plain, Truncated: true}})
	if err != nil {
		t.Fatal(err)
	}
	lines := exportLines(t, db, requestlog.Filter{})
	if len(lines) != 1 {
		t.Fatalf("%d lines; a request without payload is skipped", len(lines))
	}
	m := lines[0]
	req, resp := m["request"].(map[string]any), m["response"].(map[string]any)
	if m["truncated"] != true || req["truncated"] != true || req["body"] != `{"model":"x","messages":[{"ro` {
		t.Errorf("truncated: %v", m)
	}
	if resp["body"] != nil || resp["body_omitted"] != true {
		t.Errorf("omitted: %v", resp)
	}
}

func TestExportStopsOnAPayloadItCannotOpen(t *testing.T) {
	db := openLog(t)
	fill(t, db, 5)
	wrong := errors.New("the master key does not open this vault")
	n := 0
	err := requestlog.Export(context.Background(), db, requestlog.Filter{}, func(int64, string, []byte) ([]byte, error) { return nil, wrong },
		func(*requestlog.Row) error { n++; return nil })
	if !errors.Is(err, wrong) || n != 0 || !strings.Contains(err.Error(), "req-00000000") {
		t.Fatalf("err %v after %d rows", err, n)
	}
}

// TestExportAndCleanupWhileWriting exports and cleans up while a writer
// keeps inserting: no write fails, the export is a consistent snapshot,
// and no row that should stay is lost.
func TestExportAndCleanupWhileWriting(t *testing.T) {
	dir := t.TempDir()
	db, err := store.OpenLog(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	daemon, err := store.OpenLog(dir) // the daemon's own handle
	if err != nil {
		t.Fatal(err)
	}
	defer daemon.Close()
	fill(t, db, 5000)
	cut := t0.Add(3000 * time.Second)

	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var written atomic.Int64
	wg.Add(1)
	go func() {
		defer wg.Done()
		o := logtest.Options{Start: time.Now(), Seal: plainSeal, IDPrefix: "live-"}
		for i := 0; ctx.Err() == nil; i++ {
			r := logtest.Request(o, i)
			plain, _ := store.MarshalCapture(logtest.Capture(o, i))
			if err := store.InsertRequests(context.Background(), daemon, []store.Request{r}, []store.Payload{{RequestID: r.ID, TS: r.TS, KeyID: 1, Sealed: plain}}); err != nil {
				t.Errorf("write: %v", err)
				return
			}
			written.Add(1)
			time.Sleep(time.Millisecond)
		}
	}()
	var exported int
	var exportErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		exportErr = requestlog.Export(context.Background(), db, requestlog.Filter{}, plainOpen, func(r *requestlog.Row) error {
			exported++
			return nil
		})
	}()
	// The writer is writing before the cleanup starts, and goes on
	// writing after it ends: the cleanup runs among live writes.
	testutil.WaitFor(t, "the writer's first rows", func() bool { return written.Load() >= 3 || t.Failed() })
	res, err := retention.Cleanup(context.Background(), db, retention.Options{Type: retention.All, Before: cut, BatchSize: 200})
	if err != nil {
		t.Fatal(err)
	}
	after := written.Load()
	testutil.WaitFor(t, "rows written after the cleanup", func() bool { return written.Load() >= after+3 || t.Failed() })
	stop()
	wg.Wait()
	if exportErr != nil {
		t.Fatal(exportErr)
	}
	if res.Requests != 3000 || exported < 2000 {
		t.Errorf("cleanup %+v, exported %d", res, exported)
	}
	var left, live int64
	db.R.Get(&left, `SELECT count(*) FROM requests WHERE id LIKE 'req-%'`)
	db.R.Get(&live, `SELECT count(*) FROM payloads p JOIN requests r ON r.seq = p.request_seq WHERE r.id LIKE 'live-%'`)
	if left != 2000 || live != written.Load() || live == 0 {
		t.Errorf("left %d old rows (want 2000), %d of %d live rows with payloads", left, live, written.Load())
	}
}

func TestStats(t *testing.T) {
	db := openLog(t)
	ms := store.ToMS(t0)
	var reqs []store.Request
	for i, d := range []int64{100, 200, 300, 400, 1000} {
		reqs = append(reqs, store.Request{ID: fmt.Sprint("w", i), TS: ms + int64(i), Method: "POST", Path: "/v1/messages", Account: "work", Status: 200, DurationMS: d, InputTokens: 10, OutputTokens: 1, CacheReadInputTokens: 5, CacheCreationInputTokens: 2})
	}
	reqs = append(reqs,
		store.Request{ID: "h1", TS: ms + 10, Method: "POST", Path: "/v1/messages", Account: "home", Status: 429, DurationMS: 50, Error: "rate limited"},
		store.Request{ID: "h2", TS: ms + 20, Method: "POST", Path: "/v1/messages", Account: "home", Status: 200, DurationMS: 70, InputTokens: 1},
		store.Request{ID: "old", TS: ms - 100000, Method: "POST", Path: "/v1/messages", Account: "gone", Status: 500, DurationMS: 9},
	)
	if err := store.InsertRequests(context.Background(), db, reqs, nil); err != nil {
		t.Fatal(err)
	}
	st, err := requestlog.ComputeStats(context.Background(), db, requestlog.StatsOptions{Since: t0})
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Accounts) != 2 || st.Accounts[0].Account != "home" || st.Accounts[1].Account != "work" {
		t.Fatalf("accounts %+v", st.Accounts)
	}
	h, w := st.Accounts[0], st.Accounts[1]
	if w.Requests != 5 || w.Errors != 0 || w.InputTokens != 50 || w.OutputTokens != 5 || w.CacheReadInputTokens != 25 || w.CacheCreationInputTokens != 10 ||
		w.MedianDurationMS != 300 || w.P95DurationMS != 1000 || w.LastUsed != ms+4 {
		t.Errorf("work %+v", w)
	}
	if h.Requests != 2 || h.Errors != 1 || h.MedianDurationMS != 50 || h.P95DurationMS != 70 {
		t.Errorf("home %+v", h)
	}
	p := st.Pool
	if p.Requests != 7 || p.Errors != 1 || p.InputTokens != 51 || p.MedianDurationMS != 200 || p.P95DurationMS != 1000 || p.LastUsed != ms+20 {
		t.Errorf("pool %+v", p)
	}
	all, err := requestlog.ComputeStats(context.Background(), db, requestlog.StatsOptions{})
	if err != nil || all.Pool.Requests != 8 || all.Pool.Errors != 2 {
		t.Errorf("all time: %+v %v", all.Pool, err)
	}
}

func TestAppendJSONMatchesEncodingJSON(t *testing.T) {
	weird := "a\"b\\c\n\r\t\x00\x1f <&> é 😀 \u2028\u2029 \xff end"
	rows := []requestlog.Row{
		{ID: "x", Timestamp: "t", Account: weird, Status: 200,
			Request:   requestlog.Message{Method: "POST", Path: "/v1/messages?beta=true", Headers: map[string]string{"b": weird, "a": "1", weird: "k"}, Body: json.RawMessage(`{"a":[1,2]}`)},
			Response:  requestlog.Message{Status: 200, Headers: map[string]string{}, Body: json.RawMessage(`"text"`), BodyEncoding: "base64", BodyOmitted: true, Truncated: true},
			Truncated: true},
		{Request: requestlog.Message{Body: json.RawMessage("null")}},
	}
	for i := range rows {
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(&rows[i]); err != nil {
			t.Fatal(err)
		}
		want := strings.TrimSuffix(buf.String(), "\n")
		if got := string(rows[i].AppendJSON(nil)); got != want {
			t.Errorf("row %d:\n got %s\nwant %s", i, got, want)
		}
	}
	// Valid UTF-8 text round-trips exactly; invalid bytes make it base64.
	text := strings.ReplaceAll(weird, "\xff", "")
	var buf bytes.Buffer
	raw, enc := requestlog.Body("text/plain", "", []byte(text), &buf)
	var s string
	if err := json.Unmarshal(raw, &s); err != nil || s != text || enc != "" {
		t.Errorf("body string %s (%q): %v", raw, enc, err)
	}
}

func FuzzCaptureDecoder(f *testing.F) {
	f.Add("POST", "/v1/messages?beta=true&x=<1>", "Content-Type", "application/json", []byte(`{"a":1}`), 200, false, true)
	f.Add("", "", "X-\u2028", "v\"\\\n\u00e9\U0001F600", []byte(nil), 0, true, false)
	f.Add("GET", "/", "", "", []byte{0xff, 0, 1}, 529, true, true)
	f.Fuzz(func(t *testing.T, method, path, hname, hval string, body []byte, status int, omitted, truncated bool) {
		c := &store.Capture{
			Request:  store.CapturedMessage{Method: method, Path: path, Headers: map[string][]string{hname: {hval, hval + "2"}}, Body: body, BodyOmitted: omitted},
			Response: store.CapturedMessage{Status: status, Body: body, Truncated: truncated},
		}
		if status%2 == 0 {
			c.Response.Headers = map[string][]string{}
		}
		// Every capture marshals (invalid UTF-8 becomes U+FFFD), in the
		// compressed format and the old JSON one: an error here is a
		// bug, not an input to skip.
		for _, marshal := range []func(*store.Capture) ([]byte, error){store.MarshalCapture, store.MarshalCaptureJSON} {
			plain, err := marshal(c)
			if err != nil {
				t.Fatal(err)
			}
			want, err := store.UnmarshalCapture(plain)
			if err != nil {
				t.Fatal(err)
			}
			got, err := requestlog.DecodeCaptureForTest(plain)
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprintf("%#v", got) != fmt.Sprintf("%#v", want) {
				t.Fatalf("fast decoder differs:\n got %#v\nwant %#v", got, want)
			}
		}
	})
}

func TestWriteNDJSONInOrderWithWorkers(t *testing.T) {
	db := openLog(t)
	fill(t, db, 2000)
	var want bytes.Buffer
	err := requestlog.Export(context.Background(), db, requestlog.Filter{}, plainOpen, func(r *requestlog.Row) error {
		want.Write(append(r.AppendJSON(nil), '\n'))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// Request 1234's payload names a key the opener below does not have.
	if _, err := db.W.Exec(`UPDATE payloads SET key_id = 99 WHERE request_seq = (SELECT seq FROM requests WHERE id = 'req-00001234')`); err != nil {
		t.Fatal(err)
	}
	for _, workers := range []int{1, 2, 7} {
		var got bytes.Buffer
		n, err := requestlog.WriteNDJSON(context.Background(), db, requestlog.Filter{}, plainOpen, &got, workers)
		if err != nil || n != 2000 || !bytes.Equal(got.Bytes(), want.Bytes()) {
			t.Errorf("workers %d: %d rows, %v, output equal %v", workers, n, err, bytes.Equal(got.Bytes(), want.Bytes()))
		}
		// A payload that does not open stops the export after the rows
		// before it, in order.
		bad := errors.New("cannot open")
		calls := atomic.Int64{}
		got.Reset()
		n, err = requestlog.WriteNDJSON(context.Background(), db, requestlog.Filter{}, func(k int64, _ string, s []byte) ([]byte, error) {
			if k == 99 {
				return nil, bad
			}
			calls.Add(1)
			return s, nil
		}, &got, workers)
		if !errors.Is(err, bad) || n != 1234 || !bytes.Equal(got.Bytes(), want.Bytes()[:bytes.Index(want.Bytes(), []byte(`{"id":"req-00001234"`))]) {
			t.Errorf("workers %d, bad payload: %d rows, %v", workers, n, err)
		}
		// A writer that fails stops it too.
		n, err = requestlog.WriteNDJSON(context.Background(), db, requestlog.Filter{}, plainOpen, &failAfter{n: 10}, workers)
		if err == nil || n != 10 {
			t.Errorf("workers %d, failing writer: %d rows, %v", workers, n, err)
		}
	}
}

type failAfter struct{ n int }

func (f *failAfter) Write(p []byte) (int, error) {
	if f.n == 0 {
		return 0, errors.New("broken pipe")
	}
	f.n--
	return len(p), nil
}
