package proxy

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/s2"
	"github.com/klauspost/compress/zstd"

	"github.com/claudeflare/claudeflare/requestlog"
	"github.com/claudeflare/claudeflare/store"
)

// What compressing payloads before sealing saves and costs (issue 16,
// item 4), for Claude Code-like records:
//
//	go test -run '^$' -bench CompressPayload -benchtime 3x ./proxy
//
// Two workloads:
//
//	session: 40 records of one Claude Code session. Each request resends
//	         the whole conversation so far (system prompt, 16 tool
//	         definitions, every earlier turn) plus one more turn: a Read
//	         of a real source file (the Go tree's net/http, numbered as
//	         Claude Code's Read tool returns it) or a Bash run's output.
//	         Requests grow from 36 KB to 364 KB (mean 194 KB). Each answer
//	         is an SSE stream as the API sends it (message_start, text
//	         deltas of a few words, a tool_use block in input_json_delta
//	         pieces, message_delta with usage), about 5 KB. Each record is
//	         compressed alone: what a request shares with the one before
//	         (nearly all of it) is not deduplicated across records.
//	synthetic: claudeCodeBody of 200 KB as request and as answer, ten
//	         times (BenchmarkRecorderSeal's record; very repetitive, so it
//	         flatters compression).
//
// Each encoding seals every record as the recorder does (redact, encode,
// seal) and writes them to a fresh request log; it reports the sealed
// bytes per record, the log file's size once checkpointed (bytes per
// record), and the CPU time of the benchmark's thread per record for
// sealing (seal_cpu_us) and for the database write (insert_cpu_us).
func BenchmarkCompressPayload(b *testing.B) {
	workloads := []struct {
		name string
		recs []sessionRecord
	}{
		{"session", claudeCodeSession(b, 40)},
		{"synthetic", func() []sessionRecord {
			body := benchRedactBodies()[0].body
			return slices.Repeat([]sessionRecord{{req: body, resp: body, respType: "application/json"}}, 10)
		}()},
	}
	for _, w := range workloads {
		var reqBytes, respBytes int
		for _, r := range w.recs {
			reqBytes += len(r.req)
			respBytes += len(r.resp)
		}
		b.Logf("%s: %d records, request bodies %d KB (%d to %d KB), answers %d KB (mean %d KB + %d KB)", w.name, len(w.recs),
			reqBytes>>10, len(w.recs[0].req)>>10, len(w.recs[len(w.recs)-1].req)>>10,
			respBytes>>10, reqBytes/len(w.recs)>>10, respBytes/len(w.recs)>>10)
		for _, enc := range benchEncodings() {
			b.Run(w.name+"/"+enc.name, func(b *testing.B) {
				benchEncoding(b, w.recs, enc)
			})
		}
	}
}

type sessionRecord struct {
	req, resp []byte
	respType  string
}

// payloadEncoding turns a capture into the bytes that are sealed.
type payloadEncoding struct {
	name string
	enc  func(c *store.Capture) []byte
}

// benchEncodings are the candidates: json is the format of before (JSON,
// bodies in base64); raw frames the bodies raw after the capture's JSON
// without them; raw+s2=store is what the recorder writes now
// (store.CaptureEncoder: the capture's JSON without bodies, then each
// body compressed alone, straight from its buffer, with S2's default,
// fastest, mode); the others compress raw (or json) with S2's better mode or zstd
// at its fastest (1, with and without entropy coding) or default (3)
// level.
func benchEncodings() []payloadEncoding {
	zenc := func(level zstd.EncoderLevel, opts ...zstd.EOption) *zstd.Encoder {
		opts = append(opts, zstd.WithEncoderLevel(level), zstd.WithEncoderConcurrency(1), zstd.WithEncoderCRC(false))
		e, err := zstd.NewWriter(nil, opts...)
		if err != nil {
			panic(err)
		}
		return e
	}
	jsonEnc := func(c *store.Capture) []byte {
		b, err := store.MarshalCaptureJSON(c)
		if err != nil {
			panic(err)
		}
		return b
	}
	z1, z3 := zenc(zstd.SpeedFastest), zenc(zstd.SpeedDefault)
	z1n := zenc(zstd.SpeedFastest, zstd.WithNoEntropyCompression(true))
	var frame, out []byte
	var se store.CaptureEncoder
	withFrame := func(compress func(frame []byte) []byte) func(*store.Capture) []byte {
		return func(c *store.Capture) []byte {
			frame = rawFrame(frame[:0], c)
			out = compress(frame)
			return out
		}
	}
	return []payloadEncoding{
		{"json", jsonEnc},
		{"json+zstd1", func(c *store.Capture) []byte { out = z1.EncodeAll(jsonEnc(c), out[:0]); return out }},
		{"raw", withFrame(func(f []byte) []byte { return f })},
		{"raw+s2=store", func(c *store.Capture) []byte {
			b, err := se.Encode(c)
			if err != nil {
				panic(err)
			}
			return b
		}},
		{"raw+s2better", withFrame(func(f []byte) []byte { return s2.EncodeBetter(out[:0], f) })},
		{"raw+zstd1", withFrame(func(f []byte) []byte { return z1.EncodeAll(f, out[:0]) })},
		{"raw+zstd1-noentropy", withFrame(func(f []byte) []byte { return z1n.EncodeAll(f, out[:0]) })},
		{"raw+zstd3", withFrame(func(f []byte) []byte { return z3.EncodeAll(f, out[:0]) })},
	}
}

// rawFrame is a capture without base64: the capture's JSON without its
// bodies, then each body as a uvarint length and its bytes (what
// store.CaptureEncoder compresses).
func rawFrame(dst []byte, c *store.Capture) []byte {
	meta := *c
	meta.Request.Body, meta.Response.Body = nil, nil
	m, err := json.Marshal(&meta)
	if err != nil {
		panic(err)
	}
	dst = binary.AppendUvarint(dst, uint64(len(m)))
	dst = append(dst, m...)
	dst = binary.AppendUvarint(dst, uint64(len(c.Request.Body)))
	dst = append(dst, c.Request.Body...)
	dst = binary.AppendUvarint(dst, uint64(len(c.Response.Body)))
	return append(dst, c.Response.Body...)
}

// benchSealer seals the records of a workload as the recorder does.
type benchSealer struct {
	h         *harness
	r         *recorder
	reqHeader http.Header
}

func newBenchSealer(b *testing.B) *benchSealer {
	h := newHarness(b)
	return &benchSealer{h: h,
		r: newRecorder(h.ldb, h.vault, slog.New(slog.DiscardHandler), h.clock.Now, recorderOptions{Payloads: "full", MaxBytes: 1 << 20}),
		reqHeader: http.Header{"Content-Type": {"application/json"}, "Anthropic-Version": {"2023-06-01"},
			"Authorization": {"Bearer " + bearerTok}, "User-Agent": {"claude-cli/2.0.14 (external, cli)"}},
	}
}

// seal redacts sr's capture (as recorder.seal does), encodes it with enc,
// seals it and returns its row and payload.
func (s *benchSealer) seal(b *testing.B, sr sessionRecord, enc func(*store.Capture) []byte) (store.Request, store.Payload) {
	r := s.r
	id := s.h.srv.ids.Next(time.Now())
	resp := getCapBuf(1 << 20)
	resp.Write(sr.resp)
	defer putCapBuf(resp)
	c := &capture{method: "POST", path: "/v1/messages", reqHeader: s.reqHeader, reqBody: sr.req,
		status: 200, respHeader: http.Header{"Content-Type": {sr.respType}}, respBody: resp}
	pr := store.Capture{
		Request:  store.CapturedMessage{Method: c.method, Path: r.red.string(c.path), Headers: r.red.header(c.reqHeader)},
		Response: store.CapturedMessage{Status: c.status, Headers: r.red.header(c.respHeader)},
	}
	pr.Request.Body, pr.Request.Truncated = r.body(c.reqBody, c.reqHeader, false)
	pr.Response.Body, pr.Response.Truncated = r.body(c.respBody.b, c.respHeader, c.respBody.truncated)
	keyID, sealed, err := r.vault.SealPayload(id, enc(&pr))
	if err != nil {
		b.Fatal(err)
	}
	ts := s.h.clock.Now().UnixMilli()
	return store.Request{ID: id, TS: ts, Method: "POST", Path: "/v1/messages", Status: 200},
		store.Payload{RequestID: id, TS: ts, KeyID: keyID, Sealed: sealed}
}

// benchLog is a fresh request log in its own directory.
func benchLog(b *testing.B) (*store.DB, string) {
	dir := b.TempDir()
	ldb, err := store.OpenLog(dir)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ldb.Close() })
	return ldb, dir
}

// checkpointedSize checkpoints the log's WAL into it and returns the size
// of its files.
func checkpointedSize(b *testing.B, ldb *store.DB, dir string) int64 {
	if _, err := ldb.W.Exec("PRAGMA wal_checkpoint(TRUNCATE)"); err != nil {
		b.Fatal(err)
	}
	return dirBytes(b, dir)
}

func benchEncoding(b *testing.B, recs []sessionRecord, enc payloadEncoding) {
	s := newBenchSealer(b)
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var sealCPU, insertCPU time.Duration
	var sealed, fileBytes int64
	var records int
	for b.Loop() {
		ldb, dir := benchLog(b)
		rows := make([]store.Request, 0, len(recs))
		pays := make([]store.Payload, 0, len(recs))
		c0 := threadCPU()
		for _, sr := range recs {
			row, p := s.seal(b, sr, enc.enc)
			sealed += int64(len(p.Sealed))
			rows, pays = append(rows, row), append(pays, p)
		}
		c1 := threadCPU()
		for k := 0; k < len(rows); k += 8 {
			end := min(k+8, len(rows))
			if err := store.InsertRequests(context.Background(), ldb, rows[k:end], pays[k:end]); err != nil {
				b.Fatal(err)
			}
		}
		c2 := threadCPU()
		sealCPU, insertCPU = sealCPU+c1-c0, insertCPU+c2-c1
		records += len(recs)
		fileBytes += checkpointedSize(b, ldb, dir)
		ldb.Close()
	}
	n := float64(records)
	b.ReportMetric(float64(sealed)/n, "sealed_B/rec")
	b.ReportMetric(float64(fileBytes)/n, "file_B/rec")
	b.ReportMetric(float64(sealCPU.Microseconds())/n, "seal_cpu_us/rec")
	b.ReportMetric(float64(insertCPU.Microseconds())/n, "insert_cpu_us/rec")
	b.ReportMetric(0, "ns/op")
}

// BenchmarkCompressPayloadVs compares, on the session workload, the
// format of before (json), the recorder's now (store: raw framing, S2)
// and the candidate that compresses more (zstd's fastest level), in turn, eight records of each at a time: the recorder's CPU
// per record (redact, encode, seal, and the batch's insert), the log's
// size, their ratios to json's, and the export's CPU per record
// (requestlog.WriteNDJSON with one worker: read, open, decode, write the
// line) for json and store.
//
//	go test -run '^$' -bench CompressPayloadVs -benchtime 3x -count 3 ./proxy
func BenchmarkCompressPayloadVs(b *testing.B) {
	recs := claudeCodeSession(b, 40)
	var encs []payloadEncoding
	for _, e := range benchEncodings() {
		switch e.name {
		case "json", "raw+s2=store", "raw+zstd1":
			encs = append(encs, e)
		}
	}
	names := []string{"json", "store", "zstd1"}
	s := newBenchSealer(b)
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	cpu := make([]time.Duration, len(encs))
	size := make([]int64, len(encs))
	var exp [2]time.Duration
	var records int
	for b.Loop() {
		dbs := make([]*store.DB, len(encs))
		dirs := make([]string, len(encs))
		for k := range dbs {
			dbs[k], dirs[k] = benchLog(b)
		}
		for i := 0; i < len(recs); i += 8 {
			for k, enc := range encs {
				c0 := threadCPU()
				var rows []store.Request
				var pays []store.Payload
				for _, sr := range recs[i:min(i+8, len(recs))] {
					row, p := s.seal(b, sr, enc.enc)
					rows, pays = append(rows, row), append(pays, p)
				}
				if err := store.InsertRequests(context.Background(), dbs[k], rows, pays); err != nil {
					b.Fatal(err)
				}
				cpu[k] += threadCPU() - c0
			}
		}
		for k := range dbs {
			size[k] += checkpointedSize(b, dbs[k], dirs[k])
			if k < len(exp) {
				c0 := threadCPU()
				n, err := requestlog.WriteNDJSON(context.Background(), dbs[k], requestlog.Filter{}, s.h.vault.OpenPayload, io.Discard, 1)
				if err != nil || n != int64(len(recs)) {
					b.Fatalf("export: %d rows, %v", n, err)
				}
				exp[k] += threadCPU() - c0
			}
			dbs[k].Close()
		}
		records += len(recs)
	}
	n := float64(records)
	us := func(d time.Duration) float64 { return float64(d.Microseconds()) / n }
	for k, name := range names {
		b.ReportMetric(us(cpu[k]), name+"_cpu_us/rec")
		b.ReportMetric(float64(size[k])/n, name+"_file_B/rec")
		if k > 0 {
			b.ReportMetric(float64(cpu[k])/float64(cpu[0]), name+"/json_cpu")
			b.ReportMetric(float64(size[k])/float64(size[0]), name+"/json_size")
		}
	}
	b.ReportMetric(us(exp[0]), "json_export_cpu_us/rec")
	b.ReportMetric(us(exp[1]), "store_export_cpu_us/rec")
	b.ReportMetric(0, "ns/op")
}

// dirBytes is the size of the files in dir (the log, its WAL and shm).
func dirBytes(b *testing.B, dir string) int64 {
	es, err := os.ReadDir(dir)
	if err != nil {
		b.Fatal(err)
	}
	var n int64
	for _, e := range es {
		if fi, err := e.Info(); err == nil && strings.HasPrefix(e.Name(), "log") && !strings.HasSuffix(e.Name(), "-shm") {
			n += fi.Size()
		}
	}
	return n
}

// claudeCodeSession builds the records of one Claude Code session of
// turns requests: each request holds the whole conversation so far.
func claudeCodeSession(tb testing.TB, turns int) []sessionRecord {
	src := filepath.Join(runtime.GOROOT(), "src", "net", "http")
	ents, err := os.ReadDir(src)
	if err != nil {
		tb.Skipf("no Go source tree to build the session from: %v", err)
	}
	var files []string
	for _, e := range ents {
		if n := e.Name(); strings.HasSuffix(n, ".go") && !strings.HasSuffix(n, "_test.go") {
			files = append(files, n)
		}
	}
	slices.Sort(files)
	read := func(i int) (string, string) {
		name := files[i%len(files)]
		b, err := os.ReadFile(filepath.Join(src, name))
		if err != nil {
			tb.Fatal(err)
		}
		lines := strings.Split(string(b), "\n")
		if len(lines) > 400 { // the Read tool's window
			lines = lines[(i*137)%(len(lines)-400):][:400]
		}
		var out strings.Builder
		for k, l := range lines {
			fmt.Fprintf(&out, "%6d\t%s\n", k+1, l)
		}
		return name, out.String()
	}
	// prose is real English: the doc comments of the files, in order.
	var prose []string
	for _, name := range files {
		b, _ := os.ReadFile(filepath.Join(src, name))
		for l := range strings.SplitSeq(string(b), "\n") {
			if t, ok := strings.CutPrefix(strings.TrimSpace(l), "// "); ok && len(t) > 20 {
				prose = append(prose, t)
			}
		}
	}
	sentences := func(i, n int) string {
		var s []string
		for k := range n {
			s = append(s, prose[(i*7+k)%len(prose)])
		}
		return strings.Join(s, " ")
	}
	type block struct {
		Type         string         `json:"type"`
		Text         string         `json:"text,omitempty"`
		ID           string         `json:"id,omitempty"`
		Name         string         `json:"name,omitempty"`
		Input        map[string]any `json:"input,omitempty"`
		ToolUseID    string         `json:"tool_use_id,omitempty"`
		Content      string         `json:"content,omitempty"`
		CacheControl map[string]any `json:"cache_control,omitempty"`
	}
	type message struct {
		Role    string  `json:"role"`
		Content []block `json:"content"`
	}
	var tools []map[string]any
	for k, name := range []string{"Task", "Bash", "Glob", "Grep", "LS", "Read", "Edit", "MultiEdit", "Write", "NotebookEdit", "WebFetch", "TodoWrite", "WebSearch", "BashOutput", "KillShell", "ExitPlanMode"} {
		tools = append(tools, map[string]any{
			"name":        name,
			"description": sentences(1000+k*40, 12+k%5*6),
			"input_schema": map[string]any{"type": "object", "$schema": "http://json-schema.org/draft-07/schema#", "additionalProperties": false,
				"properties": map[string]any{
					"file_path": map[string]any{"type": "string", "description": sentences(2000+k, 2)},
					"command":   map[string]any{"type": "string", "description": sentences(2100+k, 1)},
					"timeout":   map[string]any{"type": "number", "description": "Optional timeout in milliseconds (max 600000)"},
				}, "required": []string{"file_path"}},
		})
	}
	system := []block{
		{Type: "text", Text: "You are Claude Code, Anthropic's official CLI for Claude."},
		{Type: "text", Text: sentences(3000, 110), CacheControl: map[string]any{"type": "ephemeral"}},
	}
	var msgs []message
	var recs []sessionRecord
	for i := range turns {
		tid := fmt.Sprintf("toolu_01%022d", i)
		var call block
		var result string
		if i%4 == 3 {
			call = block{Type: "tool_use", ID: tid, Name: "Bash", Input: map[string]any{"command": fmt.Sprintf("go test ./pkg%d/...", i), "description": "Run the tests"}}
			var out strings.Builder
			for k := range 60 {
				fmt.Fprintf(&out, "=== RUN   TestCase%d_%d\n--- PASS: TestCase%d_%d (0.%02ds)\n", i, k, i, k, (i*k)%100)
			}
			fmt.Fprintf(&out, "PASS\nok  \tgithub.com/example/pkg%d\t1.%03ds\n", i, i*37%1000)
			result = out.String()
		} else {
			name, text := read(i)
			call = block{Type: "tool_use", ID: tid, Name: "Read", Input: map[string]any{"file_path": "/home/user/src/net/http/" + name}}
			result = text
		}
		if i == 0 {
			msgs = append(msgs, message{Role: "user", Content: []block{
				{Type: "text", Text: "<system-reminder>\n" + sentences(5000, 30) + "\n</system-reminder>"},
				{Type: "text", Text: "Read the HTTP server code and explain how it handles a request body that is not read to the end."},
			}})
		} else {
			msgs = append(msgs, message{Role: "user", Content: []block{{Type: "tool_result", ToolUseID: fmt.Sprintf("toolu_01%022d", i-1), Content: result}}})
		}
		req := map[string]any{
			"model": "claude-sonnet-4-5-20250929", "max_tokens": 32000, "stream": true,
			"metadata": map[string]any{"user_id": "user_3f1c0e_account_5b4d2e0c_session_8a2e4f0e"},
			"system":   system, "tools": tools, "messages": msgs,
		}
		var buf bytes.Buffer
		je := json.NewEncoder(&buf)
		je.SetEscapeHTML(false)
		if err := je.Encode(req); err != nil {
			tb.Fatal(err)
		}
		answer := sentences(7000+i*13, 6+i%7)
		msgs = append(msgs, message{Role: "assistant", Content: []block{{Type: "text", Text: answer}, call}})
		recs = append(recs, sessionRecord{req: bytes.TrimSuffix(buf.Bytes(), []byte("\n")), resp: sseAnswer(i, answer, call.Name, call.Input), respType: "text/event-stream; charset=utf-8"})
	}
	return recs
}

// sseAnswer is the SSE stream the API sends for an answer of text and
// one tool call, in deltas of a few words.
func sseAnswer(i int, text, tool string, input map[string]any) []byte {
	var b bytes.Buffer
	ev := func(name string, data any) {
		d, _ := json.Marshal(data)
		fmt.Fprintf(&b, "event: %s\ndata: %s\n\n", name, d)
	}
	msgID := fmt.Sprintf("msg_01%022d", i)
	ev("message_start", map[string]any{"type": "message_start", "message": map[string]any{
		"id": msgID, "type": "message", "role": "assistant", "model": "claude-sonnet-4-5-20250929", "content": []any{},
		"stop_reason": nil, "stop_sequence": nil,
		"usage": map[string]any{"input_tokens": 4, "cache_creation_input_tokens": 1200 + i*31, "cache_read_input_tokens": 14000 + i*3500, "output_tokens": 1, "service_tier": "standard"}}})
	ev("content_block_start", map[string]any{"type": "content_block_start", "index": 0, "content_block": map[string]any{"type": "text", "text": ""}})
	ev("ping", map[string]any{"type": "ping"})
	words := strings.Fields(text)
	for k := 0; k < len(words); k += 3 {
		piece := strings.Join(words[k:min(k+3, len(words))], " ") + " "
		ev("content_block_delta", map[string]any{"type": "content_block_delta", "index": 0, "delta": map[string]any{"type": "text_delta", "text": piece}})
	}
	ev("content_block_stop", map[string]any{"type": "content_block_stop", "index": 0})
	ev("content_block_start", map[string]any{"type": "content_block_start", "index": 1, "content_block": map[string]any{
		"type": "tool_use", "id": fmt.Sprintf("toolu_01%022d", i), "name": tool, "input": map[string]any{}}})
	in, _ := json.Marshal(input)
	for k := 0; k < len(in); k += 12 {
		ev("content_block_delta", map[string]any{"type": "content_block_delta", "index": 1, "delta": map[string]any{"type": "input_json_delta", "partial_json": string(in[k:min(k+12, len(in))])}})
	}
	ev("content_block_stop", map[string]any{"type": "content_block_stop", "index": 1})
	ev("message_delta", map[string]any{"type": "message_delta", "delta": map[string]any{"stop_reason": "tool_use", "stop_sequence": nil},
		"usage": map[string]any{"output_tokens": 40 + len(words)}})
	ev("message_stop", map[string]any{"type": "message_stop"})
	return b.Bytes()
}
