package cloud

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"io"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws/protocol/eventstream"
)

func chunk(t *testing.T, enc *eventstream.Encoder, w io.Writer, event string) {
	t.Helper()
	var m eventstream.Message
	m.Headers.Set(":message-type", eventstream.StringValue("event"))
	m.Headers.Set(":event-type", eventstream.StringValue("chunk"))
	m.Payload = []byte(`{"bytes":"` + base64.StdEncoding.EncodeToString([]byte(event)) + `"}`)
	if err := enc.Encode(w, m); err != nil {
		t.Fatal(err)
	}
}

// The event stream becomes SSE event for event; a stream cut in the
// middle of a message is an error, never a clean end; an exception is an
// Anthropic error event.
func TestEventStreamToSSE(t *testing.T) {
	var buf bytes.Buffer
	enc := eventstream.NewEncoder()
	chunk(t, enc, &buf, `{"type":"message_start","message":{"type":"message","model":"claude-x-provider","usage":{"input_tokens":3}}}`)
	chunk(t, enc, &buf, `{"type":"ping"}`)
	var ex eventstream.Message
	ex.Headers.Set(":message-type", eventstream.StringValue("exception"))
	ex.Headers.Set(":exception-type", eventstream.StringValue("modelStreamErrorException"))
	ex.Payload = []byte(`{"message":"the model broke"}`)
	enc.Encode(&buf, ex)
	whole := buf.Bytes()

	out, err := io.ReadAll(newEventStreamSSE(io.NopCloser(bytes.NewReader(whole)), "claude-x"))
	if err != nil {
		t.Fatal(err)
	}
	want := "event: message_start\ndata: {\"message\":{\"model\":\"claude-x\",\"type\":\"message\",\"usage\":{\"input_tokens\":3}},\"type\":\"message_start\"}\n\n" +
		"event: ping\ndata: {\"type\":\"ping\"}\n\n" +
		"event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"api_error\",\"message\":\"ModelStreamErrorException: the model broke\"}}\n\n"
	if string(out) != want {
		t.Errorf("SSE\n%s\nwant\n%s", out, want)
	}

	_, err = io.ReadAll(newEventStreamSSE(io.NopCloser(bytes.NewReader(whole[:len(whole)-7])), "claude-x"))
	if err == nil || errors.Is(err, io.EOF) || !strings.Contains(err.Error(), "bedrock event stream") {
		t.Errorf("a cut stream read as %v", err)
	}
	bad := append([]byte(nil), whole...)
	bad[20] ^= 0xff // a payload byte: the message CRC fails
	if _, err := io.ReadAll(newEventStreamSSE(io.NopCloser(bytes.NewReader(bad)), "claude-x")); err == nil {
		t.Error("a corrupted message was accepted")
	}
}

// A frame whose prelude claims more than maxFrameBytes (or headers longer
// than the frame) is refused before anything that long is read.
func TestEventStreamFrameBound(t *testing.T) {
	for _, pre := range [][2]uint32{{maxFrameBytes + 1, 0}, {1 << 31, 0}, {20, 100}} {
		b := make([]byte, 16)
		binary.BigEndian.PutUint32(b, pre[0])
		binary.BigEndian.PutUint32(b[4:], pre[1])
		binary.BigEndian.PutUint32(b[8:], crc32.ChecksumIEEE(b[:8]))
		// A body as long as the prelude says: the decoder would read it all.
		src := io.MultiReader(bytes.NewReader(b), io.LimitReader(zeros{}, int64(pre[0])))
		_, err := io.ReadAll(newEventStreamSSE(io.NopCloser(src), "claude-x"))
		if err == nil || !strings.Contains(err.Error(), "bedrock event stream: a message of") {
			t.Errorf("prelude %v: read as %v", pre, err)
		}
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// countingReader counts the bytes read from it.
type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

// Vertex's SSE passes through with message_start's model set; a line
// with no end (a hostile upstream) is passed on in pieces, never held
// whole in memory.
func TestSSEModelLineBound(t *testing.T) {
	long := strings.Repeat("a", 8<<20)
	in := ": " + long + "\n" + "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"model\":\"claude-x@2025\"}}\n\n"
	src := &countingReader{r: strings.NewReader(in)}
	r := newSSEModel(io.NopCloser(src), "claude-x")
	p := make([]byte, 4096)
	n, err := r.Read(p)
	if err != nil {
		t.Fatal(err)
	}
	if src.n > 1<<20 {
		t.Errorf("the first read took %d bytes from upstream: a line is held whole", src.n)
	}
	rest, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	want := strings.Replace(in, "claude-x@2025", "claude-x", 1)
	want = strings.Replace(want, `{"type":"message_start","message":{"model":"claude-x"}}`, `{"message":{"model":"claude-x"},"type":"message_start"}`, 1)
	if got := string(p[:n]) + string(rest); got != want {
		t.Errorf("SSE changed beyond the model: got %d bytes, want %d; tail %q", len(got), len(want), got[len(got)-min(len(got), 120):])
	}
}
