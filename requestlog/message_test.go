package requestlog

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

// stream is a Messages API event stream with a thinking block, a text
// block and a tool_use block whose input comes in pieces, as the API
// sends it.
const stream = `event: message_start
data: {"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","model":"claude-sonnet-4-5","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":25,"cache_creation_input_tokens":3,"cache_read_input_tokens":7,"output_tokens":1}}}

event: content_block_start
data: {"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":"","signature":""}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"Let me "}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"think."}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"signature_delta","signature":"c2ln"}}

event: content_block_stop
data: {"type":"content_block_stop","index":0}

event: ping
data: {"type": "ping"}

event: content_block_start
data: {"type":"content_block_start","index":1,"content_block":{"type":"text","text":""}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":"Hello <&> "}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":"world"}}

event: content_block_stop
data: {"type":"content_block_stop","index":1}

event: content_block_start
data: {"type":"content_block_start","index":2,"content_block":{"type":"tool_use","id":"toolu_1","name":"get_weather","input":{}}}

event: content_block_delta
data: {"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":""}}

event: content_block_delta
data: {"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":"{\"location\": \"San Fra"}}

event: content_block_delta
data: {"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":"ncisco\"}"}}

event: content_block_stop
data: {"type":"content_block_stop","index":2}

event: message_delta
data: {"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":89}}

event: message_stop
data: {"type":"message_stop"}

`

const wantStreamed = `{"id":"msg_1","type":"message","role":"assistant","model":"claude-sonnet-4-5",
"content":[{"type":"thinking","thinking":"Let me think.","signature":"c2ln"},
{"type":"text","text":"Hello <&> world"},
{"type":"tool_use","id":"toolu_1","name":"get_weather","input":{"location":"San Francisco"}}],
"stop_reason":"tool_use","stop_sequence":null,
"usage":{"input_tokens":25,"cache_creation_input_tokens":3,"cache_read_input_tokens":7,"output_tokens":89}}`

func sameJSON(t *testing.T, what string, got json.RawMessage, want string) {
	t.Helper()
	var g, w any
	if err := json.Unmarshal(got, &g); err != nil {
		t.Fatalf("%s: not JSON: %q", what, got)
	}
	if err := json.Unmarshal([]byte(want), &w); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(g, w) {
		t.Errorf("%s:\n got %s\nwant %s", what, got, want)
	}
}

func gzipped(s string) []byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write([]byte(s))
	zw.Close()
	return buf.Bytes()
}

func TestFinalMessageAssemblesAStream(t *testing.T) {
	sameJSON(t, "SSE", FinalMessage("text/event-stream; charset=utf-8", "", []byte(stream), false), wantStreamed)
	sameJSON(t, "SSE without a content type", FinalMessage("", "", []byte(stream), false), wantStreamed)
	sameJSON(t, "gzip SSE", FinalMessage("text/event-stream", "gzip", gzipped(stream), false), wantStreamed)
	crlf := strings.ReplaceAll(stream, "\n", "\r\n")
	sameJSON(t, "CRLF SSE", FinalMessage("text/event-stream", "", []byte(crlf), false), wantStreamed)
	if got := FinalMessage("text/event-stream", "", []byte(stream), true); got != nil {
		t.Errorf("truncated stream: %s, want nil", got)
	}
}

func TestFinalMessagePlainAndNotMessages(t *testing.T) {
	plain := `{"id":"msg_2","type":"message","role":"assistant","content":[{"type":"text","text":"hi"}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":5,"output_tokens":2}}`
	sameJSON(t, "plain", FinalMessage("application/json", "", []byte(" "+plain+"\n"), false), plain)
	sameJSON(t, "gzip plain", FinalMessage("application/json", "gzip", gzipped(plain), false), plain)
	for name, b := range map[string]string{
		"error":       `{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}`,
		"models":      `{"data":[],"has_more":false}`,
		"token count": `{"input_tokens":12}`,
		"cut JSON":    plain[:40],
		"no start":    "event: ping\ndata: {\"type\":\"ping\"}\n\n",
		"SSE error":   "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\"}}\n\n",
		"binary":      "\x00\xff\xfe",
		"empty":       "",
		"html":        "<html>bad gateway</html>",
	} {
		ct := "application/json"
		if strings.HasPrefix(b, "event:") {
			ct = "text/event-stream"
		}
		if got := FinalMessage(ct, "", []byte(b), false); got != nil {
			t.Errorf("%s: %s, want nil", name, got)
		}
	}
}

// A stream with bad pieces still gives what can be assembled: a tool
// input that does not parse stays a string, deltas for blocks that never
// started and absurd indexes are ignored.
func TestFinalMessageOddStreams(t *testing.T) {
	s := `data: {"type":"message_start","message":{"type":"message","content":[],"usage":{"input_tokens":4,"output_tokens":1}}}

data: {"type":"content_block_start","index":99999999,"content_block":{"type":"text","text":""}}

data: {"type":"content_block_delta","index":3,"delta":{"type":"text_delta","text":"x"}}

data: {"type":"content_block_start","index":0,"content_block":{"type":"tool_use","id":"t","name":"n","input":{}}}

data: {"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":"{\"a\":"}}

data: not json

data: {"type":"message_delta","delta":{"stop_reason":"max_tokens"},"usage":{"output_tokens":64,"input_tokens":null}}

`
	sameJSON(t, "odd", FinalMessage("text/event-stream", "", []byte(s), false),
		`{"type":"message","content":[{"type":"tool_use","id":"t","name":"n","input":"{\"a\":"}],"stop_reason":"max_tokens","usage":{"input_tokens":4,"output_tokens":64}}`)
}

// FuzzFinalMessage: any bytes give nil or valid JSON, and no panic.
func FuzzFinalMessage(f *testing.F) {
	f.Add("text/event-stream", "", []byte(stream))
	f.Add("application/json", "", []byte(`{"type":"message","usage":{}}`))
	f.Add("text/event-stream", "gzip", gzipped(stream))
	f.Add("", "", []byte("data: {\"type\":\"message_start\",\"message\":{}}\n\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{}}\n\n"))
	f.Fuzz(func(t *testing.T, ct, ce string, b []byte) {
		got := FinalMessage(ct, ce, b, false)
		if got != nil && !json.Valid(got) {
			t.Fatalf("FinalMessage(%q, %q, %q) = %q: not JSON", ct, ce, b, got)
		}
	})
}
