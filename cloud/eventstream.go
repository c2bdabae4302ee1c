package cloud

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"

	"github.com/aws/aws-sdk-go-v2/aws/protocol/eventstream"
)

// BedrockMetricsField is the field Bedrock adds to a stream's last event
// (message_stop); it is dropped, so the client sees Anthropic's event.
const BedrockMetricsField = "amazon-bedrock-invocationMetrics"

// maxFrameBytes bounds one event-stream message (its prelude's total
// length): the SDK's decoder takes the length as sent (up to 4 GiB) and
// reads the whole payload into memory. Bedrock's chunks are one
// Anthropic event each, far smaller.
const maxFrameBytes = 1 << 20

// eventStreamSSE reads Bedrock's binary event stream
// (application/vnd.amazon.eventstream) and gives Anthropic's server-sent
// events, one for each: a chunk's payload is {"bytes": base64 of an
// Anthropic stream event}; an exception becomes an SSE error event.
type eventStreamSSE struct {
	src   io.ReadCloser
	br    *bufio.Reader
	dec   *eventstream.Decoder
	model string
	buf   []byte // undelivered SSE bytes
	pay   []byte // the decoder's payload buffer
	err   error
}

func newEventStreamSSE(body io.ReadCloser, model string) io.ReadCloser {
	return &eventStreamSSE{src: body, br: bufio.NewReaderSize(body, 32<<10), dec: eventstream.NewDecoder(), model: model}
}

func (e *eventStreamSSE) Read(p []byte) (int, error) {
	for len(e.buf) == 0 {
		if e.err != nil {
			return 0, e.err
		}
		e.next()
	}
	n := copy(p, e.buf)
	e.buf = e.buf[n:]
	return n, nil
}

func (e *eventStreamSSE) Close() error { return e.src.Close() }

// next decodes one message into e.buf, or sets e.err.
func (e *eventStreamSSE) next() {
	if _, err := e.br.Peek(1); err != nil {
		// Between two messages: the end of the stream (or a read error).
		e.err = err
		return
	}
	// The prelude: total length, headers length (big-endian uint32s),
	// checked here before the decoder reads (and allocates) that much.
	if pre, err := e.br.Peek(12); err == nil {
		total, hdrs := binary.BigEndian.Uint32(pre), binary.BigEndian.Uint32(pre[4:])
		if total > maxFrameBytes || uint64(hdrs)+16 > uint64(total) {
			e.err = fmt.Errorf("bedrock event stream: a message of %d bytes (headers %d; at most %d)", total, hdrs, maxFrameBytes)
			return
		}
	}
	msg, err := e.dec.Decode(e.br, e.pay[:0])
	if err != nil {
		// Inside a message: a stream cut short is an error, never a
		// clean end (the decoder reads a short payload without one).
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		e.err = fmt.Errorf("bedrock event stream: %w", err)
		return
	}
	e.pay = msg.Payload
	switch header(msg, ":message-type") {
	case "event":
		if t := header(msg, ":event-type"); t != "chunk" {
			return // not a part of the answer
		}
		var chunk struct {
			Bytes string `json:"bytes"`
		}
		if err := json.Unmarshal(msg.Payload, &chunk); err != nil {
			e.err = errors.New("bedrock event stream: a chunk is not JSON")
			return
		}
		ev, err := base64.StdEncoding.DecodeString(chunk.Bytes)
		if err != nil {
			e.err = errors.New("bedrock event stream: a chunk's bytes are not base64")
			return
		}
		e.buf = sseEvent(ev, e.model)
	case "exception":
		code := header(msg, ":exception-type")
		var body struct {
			Message string `json:"message"`
		}
		json.Unmarshal(msg.Payload, &body)
		e.buf = sseError(exceptionCode(code), body.Message)
	case "error":
		e.buf = sseError(header(msg, ":error-code"), header(msg, ":error-message"))
	}
}

// exceptionCode names an in-stream exception (throttlingException) as
// the error answer names it (ThrottlingException).
func exceptionCode(s string) string {
	if s == "" {
		return s
	}
	return string(bytes.ToUpper([]byte(s[:1]))) + s[1:]
}

func header(m eventstream.Message, name string) string {
	v := m.Headers.Get(name)
	if v == nil {
		return ""
	}
	if s, ok := v.Get().(string); ok {
		return s
	}
	return v.String()
}

// sseEvent is one Anthropic event (its JSON) as SSE: the message's model
// set to the one the client asked for, Bedrock's metrics field dropped.
func sseEvent(ev []byte, model string) []byte {
	var m map[string]json.RawMessage
	if json.Unmarshal(ev, &m) != nil {
		return nil
	}
	var typ string
	json.Unmarshal(m["type"], &typ)
	changed := false
	if _, ok := m[BedrockMetricsField]; ok {
		delete(m, BedrockMetricsField)
		changed = true
	}
	if typ == "message_start" && model != "" {
		if msg, ok := m["message"]; ok {
			m["message"] = setModel(msg, model)
			changed = true
		}
	}
	if changed {
		ev, _ = json.Marshal(m)
	}
	return sseBytes(typ, ev)
}

func sseBytes(typ string, data []byte) []byte {
	out := make([]byte, 0, len(typ)+len(data)+16)
	out = append(out, "event: "...)
	out = append(out, typ...)
	out = append(out, "\ndata: "...)
	out = append(out, data...)
	return append(out, "\n\n"...)
}

// sseError is an Anthropic SSE error event for a provider's error code.
func sseError(code, msg string) []byte {
	typ, _ := ErrorType(code, 500)
	if code != "" {
		msg = code + ": " + msg
	}
	b := []byte(`{"type":"error","error":{"type":` + strconv.Quote(typ) + `,"message":` + strconv.Quote(oneLine(msg)) + `}}`)
	return sseBytes("error", b)
}

// sseModel passes server-sent events through, setting the model of a
// message_start event's data line to the one the client asked for.
type sseModel struct {
	src   io.ReadCloser
	br    *bufio.Reader
	model string
	buf   []byte
	mid   bool // the last read ended inside a line
	err   error
}

func newSSEModel(body io.ReadCloser, model string) io.ReadCloser {
	return &sseModel{src: body, br: bufio.NewReaderSize(body, 32<<10), model: model}
}

func (s *sseModel) Read(p []byte) (int, error) {
	for len(s.buf) == 0 {
		if s.err != nil {
			return 0, s.err
		}
		// A line longer than the reader's buffer passes through in
		// pieces (memory bounded by bytes, whatever the upstream sends);
		// only a whole line (message_start's is short) is rewritten.
		line, err := s.br.ReadSlice('\n')
		whole := !s.mid && err == nil
		s.mid = errors.Is(err, bufio.ErrBufferFull)
		if !s.mid {
			s.err = err
		}
		line = append([]byte(nil), line...)
		if whole && bytes.HasPrefix(line, []byte("data:")) && bytes.Contains(line, []byte(`"message_start"`)) {
			data := bytes.TrimSpace(line[len("data:"):])
			var m map[string]json.RawMessage
			if json.Unmarshal(data, &m) == nil {
				if msg, ok := m["message"]; ok {
					m["message"] = setModel(msg, s.model)
					if b, err := json.Marshal(m); err == nil {
						line = append(append([]byte("data: "), b...), '\n')
					}
				}
			}
		}
		s.buf = line
	}
	n := copy(p, s.buf)
	s.buf = s.buf[n:]
	return n, nil
}

func (s *sseModel) Close() error { return s.src.Close() }
