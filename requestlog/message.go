package requestlog

import (
	"bufio"
	"bytes"
	"encoding/json"
	"mime"
	"strings"
)

// maxBlocks bounds the content blocks assembled from one stream: an index
// in the stream is trusted only this far, so a bad "index" cannot make us
// allocate without limit.
const maxBlocks = 4096

// FinalMessage is the final Messages API message a captured response body
// holds: a plain JSON message as it is, or, for an SSE stream, the
// message assembled from its events (message_start's message, the content
// blocks with their deltas applied, stop_reason, stop_sequence and usage
// from message_delta). It is nil when the body is not a message (an
// error, another route, bytes that are neither) and when it was truncated
// or not captured: a message assembled from part of a stream would show
// usage that was never final. Compressed bodies are decoded as Body does.
// The work is linear in the size of the body, and no input panics.
func FinalMessage(contentType, contentEncoding string, b []byte, truncated bool) json.RawMessage {
	if truncated || len(b) == 0 {
		return nil
	}
	if d, ok := decode(contentEncoding, b); ok {
		b = d
	}
	mt, _, _ := mime.ParseMediaType(contentType)
	if mt == "text/event-stream" || !looksJSON(b) && bytes.Contains(b, []byte("message_start")) {
		return assembleSSE(b)
	}
	if !looksJSON(b) {
		return nil
	}
	var head struct {
		Type string `json:"type"`
	}
	if err := json.Unmarshal(b, &head); err != nil || head.Type != "message" {
		return nil
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, b); err != nil {
		return nil
	}
	return buf.Bytes()
}

// sseEvent is the part of a streamed event the assembly reads.
type sseEvent struct {
	Type         string          `json:"type"`
	Message      json.RawMessage `json:"message"`
	Index        int             `json:"index"`
	ContentBlock json.RawMessage `json:"content_block"`
	Delta        json.RawMessage `json:"delta"`
	Usage        json.RawMessage `json:"usage"`
}

// blockDelta is a content_block_delta's delta.
type blockDelta struct {
	Type        string          `json:"type"`
	Text        string          `json:"text"`
	PartialJSON string          `json:"partial_json"`
	Thinking    string          `json:"thinking"`
	Signature   string          `json:"signature"`
	Citation    json.RawMessage `json:"citation"`
}

// block is a content block being assembled.
type block struct {
	fields                                 map[string]json.RawMessage
	text, input, thinking, signature       strings.Builder
	hasText, hasInput, hasThinking, hasSig bool
	citations                              []json.RawMessage
}

// assembleSSE assembles the final message of an event stream; nil when
// the stream has no message_start with a message in it.
func assembleSSE(b []byte) json.RawMessage {
	var msg map[string]json.RawMessage
	var blocks []*block
	var data []byte
	flush := func() {
		if len(data) == 0 {
			return
		}
		var ev sseEvent
		if json.Unmarshal(data, &ev) == nil {
			msg, blocks = apply(msg, blocks, &ev)
		}
		data = data[:0]
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(nil, len(b)+1) // one line may be the whole body, never more
	for sc.Scan() {
		line := sc.Bytes()
		switch {
		case len(line) == 0:
			flush()
		case bytes.HasPrefix(line, []byte("data:")):
			v := bytes.TrimPrefix(line[len("data:"):], []byte(" "))
			if len(data) > 0 {
				data = append(data, '\n')
			}
			data = append(data, v...)
		}
	}
	flush()
	if msg == nil {
		return nil
	}
	content := make([]json.RawMessage, 0, len(blocks))
	for _, bl := range blocks {
		if bl != nil {
			content = append(content, bl.final())
		}
	}
	msg["content"] = marshal(content)
	return marshal(msg)
}

// apply folds one event into the message being assembled.
func apply(msg map[string]json.RawMessage, blocks []*block, ev *sseEvent) (map[string]json.RawMessage, []*block) {
	switch ev.Type {
	case "message_start":
		var m map[string]json.RawMessage
		if json.Unmarshal(ev.Message, &m) == nil && m != nil {
			return m, nil
		}
	case "content_block_start":
		var f map[string]json.RawMessage
		if msg == nil || ev.Index < 0 || ev.Index > len(blocks) || ev.Index >= maxBlocks || json.Unmarshal(ev.ContentBlock, &f) != nil || f == nil {
			break
		}
		bl := &block{fields: f}
		if ev.Index == len(blocks) {
			blocks = append(blocks, bl)
		} else {
			blocks[ev.Index] = bl
		}
	case "content_block_delta":
		var d blockDelta
		if msg == nil || ev.Index < 0 || ev.Index >= len(blocks) || json.Unmarshal(ev.Delta, &d) != nil {
			break
		}
		blocks[ev.Index].add(&d)
	case "message_delta":
		if msg == nil {
			break
		}
		var d map[string]json.RawMessage
		if json.Unmarshal(ev.Delta, &d) == nil {
			for k, v := range d {
				msg[k] = v
			}
		}
		msg["usage"] = mergeUsage(msg["usage"], ev.Usage)
	}
	return msg, blocks
}

func (bl *block) add(d *blockDelta) {
	switch d.Type {
	case "text_delta":
		bl.text.WriteString(d.Text)
		bl.hasText = true
	case "input_json_delta":
		bl.input.WriteString(d.PartialJSON)
		bl.hasInput = true
	case "thinking_delta":
		bl.thinking.WriteString(d.Thinking)
		bl.hasThinking = true
	case "signature_delta":
		bl.signature.WriteString(d.Signature)
		bl.hasSig = true
	case "citations_delta":
		if len(d.Citation) > 0 {
			bl.citations = append(bl.citations, d.Citation)
		}
	}
}

// final is the block with its deltas applied: text, thinking and the
// signature appended to what content_block_start gave, a tool's input
// parsed from its JSON pieces (kept as a string if they do not parse).
func (bl *block) final() json.RawMessage {
	appendTo := func(key string, s *strings.Builder) {
		var prev string
		json.Unmarshal(bl.fields[key], &prev)
		bl.fields[key] = appendJSONString(nil, prev+s.String())
	}
	if bl.hasText {
		appendTo("text", &bl.text)
	}
	if bl.hasThinking {
		appendTo("thinking", &bl.thinking)
	}
	if bl.hasSig {
		appendTo("signature", &bl.signature)
	}
	if bl.hasInput {
		in := []byte(bl.input.String())
		var buf bytes.Buffer
		switch {
		case len(bytes.TrimSpace(in)) == 0:
			bl.fields["input"] = json.RawMessage("{}")
		case json.Compact(&buf, in) == nil:
			bl.fields["input"] = buf.Bytes()
		default:
			bl.fields["input"] = appendJSONString(nil, in)
		}
	}
	if len(bl.citations) > 0 {
		var prev []json.RawMessage
		json.Unmarshal(bl.fields["citations"], &prev)
		bl.fields["citations"] = marshal(append(prev, bl.citations...))
	}
	return marshal(bl.fields)
}

// mergeUsage is message_start's usage with every non-null field of
// message_delta's usage in its place (the delta's counts are cumulative).
func mergeUsage(start, delta json.RawMessage) json.RawMessage {
	var u, d map[string]json.RawMessage
	if json.Unmarshal(delta, &d) != nil || len(d) == 0 {
		return start
	}
	if json.Unmarshal(start, &u) != nil || u == nil {
		u = make(map[string]json.RawMessage, len(d))
	}
	for k, v := range d {
		if !bytes.Equal(bytes.TrimSpace(v), []byte("null")) {
			u[k] = v
		}
	}
	return marshal(u)
}

// marshal writes v as compact JSON without HTML escaping, as the rest of
// the export does; v holds only values that always marshal.
func marshal(v any) json.RawMessage {
	var buf bytes.Buffer
	e := json.NewEncoder(&buf)
	e.SetEscapeHTML(false)
	if err := e.Encode(v); err != nil {
		return json.RawMessage("null")
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
}
