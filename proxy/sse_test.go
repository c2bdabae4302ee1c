package proxy

import (
	"fmt"
	"strings"
	"testing"
)

const sseTranscript = "event: message_start\n" +
	`data: {"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","model":"claude-sonnet-4-5","content":[],"usage":{"input_tokens":25,"cache_creation_input_tokens":7,"cache_read_input_tokens":11,"output_tokens":1}}}` + "\n\n" +
	"event: ping\ndata: {\"type\": \"ping\"}\n\n" +
	"event: content_block_start\n" + `data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}` + "\n\n" +
	"event: content_block_delta\n" + `data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello"}}` + "\n\n" +
	"event: content_block_stop\n" + `data: {"type":"content_block_stop","index":0}` + "\n\n" +
	"event: message_delta\n" + `data: {"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":15}}` + "\n\n" +
	"event: message_stop\n" + `data: {"type":"message_stop"}` + "\n\n"

func TestSSETapUsage(t *testing.T) {
	for _, chunk := range []int{1, 2, 3, 7, 64, 1 << 20} {
		t.Run(fmt.Sprint(chunk), func(t *testing.T) {
			var tap sseTap
			b := []byte(strings.ReplaceAll(sseTranscript, "\n", "\r\n"))
			if chunk%2 == 0 {
				b = []byte(sseTranscript)
			}
			for len(b) > 0 {
				k := min(chunk, len(b))
				tap.Write(b[:k])
				b = b[k:]
			}
			tap.Close()
			want := Usage{Model: "claude-sonnet-4-5", InputTokens: 25, OutputTokens: 15, CacheReadInputTokens: 11, CacheCreationInputTokens: 7}
			if tap.Usage != want || !tap.Stopped || tap.ErrorType != "" {
				t.Fatalf("got %+v stopped=%v err=%q", tap.Usage, tap.Stopped, tap.ErrorType)
			}
		})
	}
}

func TestSSETapError(t *testing.T) {
	var tap sseTap
	tap.Write([]byte("event: message_start\n" + `data: {"type":"message_start","message":{"model":"m","usage":{"input_tokens":3}}}` + "\n\n"))
	tap.Write([]byte("event: error\n" + `data: {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}` + "\n\n"))
	tap.Close()
	if tap.ErrorType != "overloaded_error" || tap.Stopped || tap.Usage.InputTokens != 3 {
		t.Fatalf("%+v", tap)
	}
}

func TestSSETapBounded(t *testing.T) {
	var tap sseTap
	huge := "event: content_block_delta\ndata: " + strings.Repeat("x", 10*maxSSELine) + "\n\n"
	tap.Write([]byte(huge))
	tap.Write([]byte("event: message_delta\n" + `data: {"type":"message_delta","usage":{"output_tokens":9}}` + "\n\n"))
	if cap(tap.line) > 2*maxSSELine {
		t.Fatalf("line buffer grew to %d", cap(tap.line))
	}
	if tap.Usage.OutputTokens != 9 {
		t.Fatalf("%+v", tap.Usage)
	}
}

func TestJSONTap(t *testing.T) {
	small := `{"id":"msg_1","type":"message","role":"assistant","model":"claude-opus-4","content":[{"type":"text","text":"hi"}],"stop_reason":"end_turn","usage":{"input_tokens":12,"cache_creation_input_tokens":0,"cache_read_input_tokens":4,"output_tokens":6}}`
	big := `{"id":"msg_1","type":"message","role":"assistant","model":"claude-opus-4","content":[{"type":"text","text":"` +
		strings.Repeat("lorem ipsum ", 20000) + `"}],"stop_reason":"end_turn","usage":{"input_tokens":12,"cache_creation_input_tokens":0,"cache_read_input_tokens":4,"output_tokens":6}}`
	want := Usage{Model: "claude-opus-4", InputTokens: 12, OutputTokens: 6, CacheReadInputTokens: 4}
	for name, body := range map[string]string{"small": small, "big": big} {
		for _, chunk := range []int{1, 100, 5000, 1 << 20} {
			if name == "big" && chunk == 1 {
				continue
			}
			var tap jsonTap
			b := []byte(body)
			for len(b) > 0 {
				k := min(chunk, len(b))
				tap.Write(b[:k])
				b = b[k:]
			}
			got, _ := tap.Result()
			if got != want {
				t.Fatalf("%s/%d: %+v", name, chunk, got)
			}
			if len(tap.head) > jsonHeadSize || cap(tap.tail) > jsonTailSize {
				t.Fatalf("%s: tap grew", name)
			}
		}
	}
	var tap jsonTap
	tap.Write([]byte(`{"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}`))
	if _, et := tap.Result(); et != "rate_limit_error" {
		t.Fatalf("error type %q", et)
	}
}

func FuzzSSE(f *testing.F) {
	f.Add([]byte(sseTranscript), 5)
	f.Add([]byte("data: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":1}}}\n\n"), 1)
	f.Add([]byte("event: error\ndata: {\"type\":\"error\",\"error\":null}\n\n"), 3)
	f.Add([]byte("event: message_delta\ndata: {\"usage\":{\"output_tokens\":\"x\"}}\r\n\r\n"), 2)
	f.Add([]byte(":comment\nevent:\ndata\n\n\n"), 4)
	f.Fuzz(func(t *testing.T, b []byte, chunk int) {
		if chunk <= 0 {
			chunk = 1
		}
		var whole, split sseTap
		whole.Write(b)
		whole.Close()
		for p := b; len(p) > 0; {
			k := min(chunk, len(p))
			split.Write(p[:k])
			p = p[k:]
		}
		split.Close()
		if whole.Usage != split.Usage || whole.Stopped != split.Stopped || whole.ErrorType != split.ErrorType {
			t.Fatalf("chunking changed the result: %+v vs %+v", whole, split)
		}
		if len(split.line) > maxSSELine || len(split.dataBuf) > maxSSELine+1 {
			t.Fatal("unbounded")
		}
		var jt jsonTap
		jt.Write(b)
		jt.Result()
	})
}
