package proxy

import (
	"bytes"
	"encoding/json"
	"sync"
)

// Usage is what one response reported about tokens.
type Usage struct {
	Model                    string
	InputTokens              int64
	OutputTokens             int64
	CacheReadInputTokens     int64
	CacheCreationInputTokens int64
	// CacheCreation5m and CacheCreation1h split the cache writes by
	// lifetime (usage.cache_creation), when the answer did.
	CacheCreation5m int64
	CacheCreation1h int64
	// ServerToolUse is usage.server_tool_use as sent (compact JSON), ""
	// when absent.
	ServerToolUse string
}

// maxSSELine bounds the bytes the tap keeps of one line. The lines it cares
// about (message_start, message_delta, error) are small; longer lines are
// content and are skipped.
const maxSSELine = 64 << 10

// sseTap watches an event stream as it passes to the client. It keeps at
// most one partial line (bounded by maxSSELine) and decodes only the events
// that carry usage or an error; everything else is skipped by name.
type sseTap struct {
	Usage     Usage
	Stopped   bool   // message_stop seen
	ErrorType string // type of an in-stream error event, e.g. overloaded_error
	ErrorMsg  string

	event   []byte // current event name
	line    []byte // partial line carried between writes
	skip    bool   // current line overflowed: drop it up to the next newline
	evBuf   [32]byte
	dataBuf []byte // data lines of the current event, only for wanted events
}

var sseTapPool = sync.Pool{New: func() any { return new(sseTap) }}

// getSSETap returns a clean tap from the pool; putSSETap gives it back
// (its buffers are kept if they stayed small).
func getSSETap() *sseTap { return sseTapPool.Get().(*sseTap) }

func putSSETap(t *sseTap) {
	if cap(t.line) > 8<<10 || cap(t.dataBuf) > 8<<10 {
		return
	}
	*t = sseTap{line: t.line[:0], dataBuf: t.dataBuf[:0]}
	sseTapPool.Put(t)
}

// Write feeds bytes of the stream. It never fails.
func (t *sseTap) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			t.carry(p)
			break
		}
		if len(t.line) > 0 || t.skip {
			t.carry(p[:i])
			if !t.skip {
				t.handleLine(t.line)
			}
			t.line, t.skip = t.line[:0], false
		} else if i <= maxSSELine {
			t.handleLine(p[:i])
		}
		p = p[i+1:]
	}
	return n, nil
}

func (t *sseTap) carry(p []byte) {
	if t.skip {
		return
	}
	if len(t.line)+len(p) > maxSSELine {
		t.line, t.skip = t.line[:0], true
		return
	}
	t.line = append(t.line, p...)
}

// Close ends the stream: a final event without a trailing blank line is
// still dispatched.
func (t *sseTap) Close() {
	if len(t.line) > 0 && !t.skip {
		t.handleLine(t.line)
		t.line = t.line[:0]
	}
	t.dispatch()
}

func (t *sseTap) handleLine(l []byte) {
	l = bytes.TrimSuffix(l, []byte{'\r'})
	if len(l) == 0 {
		t.dispatch()
		return
	}
	switch {
	case bytes.HasPrefix(l, []byte("event:")):
		v := bytes.TrimPrefix(l[len("event:"):], []byte{' '})
		if len(v) > len(t.evBuf) {
			v = v[:len(t.evBuf)]
		}
		t.event = append(t.evBuf[:0], v...)
	case bytes.HasPrefix(l, []byte("data:")):
		if !t.wanted() {
			return
		}
		v := bytes.TrimPrefix(l[len("data:"):], []byte{' '})
		if len(t.dataBuf)+len(v) > maxSSELine {
			return
		}
		if len(t.dataBuf) > 0 {
			t.dataBuf = append(t.dataBuf, '\n')
		}
		t.dataBuf = append(t.dataBuf, v...)
	}
}

// wanted reports whether the current event's data must be decoded. An
// event without a name is decoded too: its type is inside the data.
func (t *sseTap) wanted() bool {
	switch string(t.event) {
	case "", "message_start", "message_delta", "message_stop", "error":
		return true
	}
	return false
}

type usageJSON struct {
	InputTokens              *int64 `json:"input_tokens"`
	OutputTokens             *int64 `json:"output_tokens"`
	CacheReadInputTokens     *int64 `json:"cache_read_input_tokens"`
	CacheCreationInputTokens *int64 `json:"cache_creation_input_tokens"`
	CacheCreation            *struct {
		Ephemeral5m *int64 `json:"ephemeral_5m_input_tokens"`
		Ephemeral1h *int64 `json:"ephemeral_1h_input_tokens"`
	} `json:"cache_creation"`
	ServerToolUse json.RawMessage `json:"server_tool_use"`
}

// maxServerToolUse bounds the server_tool_use object kept (a few counts).
const maxServerToolUse = 1 << 10

type errorJSON struct {
	Type    string `json:"type"`
	Message string `json:"message"`
}

type sseData struct {
	Type    string `json:"type"`
	Message *struct {
		Model string     `json:"model"`
		Usage *usageJSON `json:"usage"`
	} `json:"message"`
	Usage *usageJSON `json:"usage"`
	Error *errorJSON `json:"error"`
}

func (t *sseTap) dispatch() {
	ev := string(t.event)
	t.event = t.event[:0]
	data := t.dataBuf
	t.dataBuf = t.dataBuf[:0]
	if ev == "message_stop" {
		t.Stopped = true
		return
	}
	if len(data) == 0 {
		return
	}
	var d sseData
	if json.Unmarshal(data, &d) != nil {
		return
	}
	if ev == "" {
		ev = d.Type
	}
	switch ev {
	case "message_start":
		if d.Message != nil {
			if d.Message.Model != "" {
				t.Usage.Model = d.Message.Model
			}
			t.Usage.merge(d.Message.Usage)
		}
	case "message_delta":
		t.Usage.merge(d.Usage)
	case "message_stop":
		t.Stopped = true
	case "error":
		if d.Error != nil {
			t.ErrorType, t.ErrorMsg = d.Error.Type, d.Error.Message
		} else {
			t.ErrorType = "error"
		}
	}
}

// merge takes every count the event sent; later events (message_delta)
// carry cumulative counts, so they replace earlier ones.
func (u *Usage) merge(j *usageJSON) {
	if j == nil {
		return
	}
	if j.InputTokens != nil {
		u.InputTokens = *j.InputTokens
	}
	if j.OutputTokens != nil {
		u.OutputTokens = *j.OutputTokens
	}
	if j.CacheReadInputTokens != nil {
		u.CacheReadInputTokens = *j.CacheReadInputTokens
	}
	if j.CacheCreationInputTokens != nil {
		u.CacheCreationInputTokens = *j.CacheCreationInputTokens
	}
	if c := j.CacheCreation; c != nil {
		if c.Ephemeral5m != nil {
			u.CacheCreation5m = *c.Ephemeral5m
		}
		if c.Ephemeral1h != nil {
			u.CacheCreation1h = *c.Ephemeral1h
		}
	}
	if st := serverToolUse(j.ServerToolUse); st != "" {
		u.ServerToolUse = st
	}
}

// serverToolUse is the server_tool_use value as compact JSON text, or ""
// when it is absent, null, not an object or oversized.
func serverToolUse(raw json.RawMessage) string {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || raw[0] != '{' || len(raw) > maxServerToolUse {
		return ""
	}
	var b bytes.Buffer
	if json.Compact(&b, raw) != nil {
		return ""
	}
	return b.String()
}

// jsonTap extracts usage from a non-streamed JSON body without holding it:
// it keeps the first and the last few KiB. A body that fits is decoded
// whole; a longer one is searched for "model" in its head and "usage" in
// its tail (the Messages API puts usage last).
type jsonTap struct {
	head  []byte
	tail  []byte // ring buffer of the last tailSize bytes
	pos   int    // next write position in tail once full
	full  bool
	total int64
}

const (
	jsonHeadSize = 4 << 10
	jsonTailSize = 8 << 10
)

var jsonTapPool = sync.Pool{New: func() any { return new(jsonTap) }}

func getJSONTap() *jsonTap { return jsonTapPool.Get().(*jsonTap) }

func putJSONTap(t *jsonTap) {
	*t = jsonTap{head: t.head[:0], tail: t.tail[:0]}
	jsonTapPool.Put(t)
}

func (t *jsonTap) Write(p []byte) (int, error) {
	n := len(p)
	t.total += int64(n)
	if len(t.head) < jsonHeadSize {
		k := min(jsonHeadSize-len(t.head), len(p))
		if t.head == nil {
			t.head = make([]byte, 0, jsonHeadSize)
		}
		t.head = append(t.head, p[:k]...)
		p = p[k:]
	}
	if len(p) == 0 {
		return n, nil
	}
	if t.tail == nil {
		t.tail = make([]byte, 0, jsonTailSize)
	}
	if len(p) >= jsonTailSize {
		t.tail = append(t.tail[:0], p[len(p)-jsonTailSize:]...)
		t.pos, t.full = 0, true
		return n, nil
	}
	for len(p) > 0 {
		if !t.full {
			k := min(jsonTailSize-len(t.tail), len(p))
			t.tail = append(t.tail, p[:k]...)
			p = p[k:]
			if len(t.tail) == jsonTailSize {
				t.full, t.pos = true, 0
			}
			continue
		}
		k := copy(t.tail[t.pos:], p)
		p = p[k:]
		t.pos = (t.pos + k) % jsonTailSize
	}
	return n, nil
}

// tailBytes returns the tail in stream order.
func (t *jsonTap) tailBytes() []byte {
	if !t.full || t.pos == 0 {
		return t.tail
	}
	out := make([]byte, 0, len(t.tail))
	out = append(out, t.tail[t.pos:]...)
	return append(out, t.tail[:t.pos]...)
}

type messageJSON struct {
	Type  string     `json:"type"`
	Model string     `json:"model"`
	Usage *usageJSON `json:"usage"`
	Error *errorJSON `json:"error"`
}

// Result decodes what the tap saw.
func (t *jsonTap) Result() (u Usage, errType string) {
	tail := t.tailBytes()
	if t.total <= jsonHeadSize+jsonTailSize { // nothing was overwritten
		whole := make([]byte, 0, len(t.head)+len(tail))
		whole = append(append(whole, t.head...), tail...)
		var m messageJSON
		if json.Unmarshal(whole, &m) == nil {
			u.Model = m.Model
			u.merge(m.Usage)
			if m.Error != nil {
				errType = m.Error.Type
			}
			return u, errType
		}
	}
	u.Model = findString(t.head, `"model"`)
	if i := bytes.LastIndex(tail, []byte(`"usage"`)); i >= 0 {
		rest := tail[i+len(`"usage"`):]
		rest = bytes.TrimLeft(rest, " \t\r\n")
		if len(rest) > 0 && rest[0] == ':' {
			dec := json.NewDecoder(bytes.NewReader(rest[1:]))
			var uj usageJSON
			if dec.Decode(&uj) == nil {
				u.merge(&uj)
			}
		}
	}
	return u, ""
}

// findString finds `key: "value"` in b and returns the value, or "".
func findString(b []byte, key string) string {
	i := bytes.Index(b, []byte(key))
	if i < 0 {
		return ""
	}
	rest := bytes.TrimLeft(b[i+len(key):], " \t\r\n")
	if len(rest) == 0 || rest[0] != ':' {
		return ""
	}
	rest = bytes.TrimLeft(rest[1:], " \t\r\n")
	var s string
	if json.NewDecoder(bytes.NewReader(rest)).Decode(&s) != nil {
		return ""
	}
	return s
}
