package store

import (
	"bytes"
	"encoding/binary"
	"reflect"
	"runtime"
	"strings"
	"testing"

	"github.com/klauspost/compress/s2"
)

func testCapture() *Capture {
	return &Capture{
		Request: CapturedMessage{Method: "POST", Path: "/v1/messages?beta=true",
			Headers: map[string][]string{"Content-Type": {"application/json"}, "Authorization": {"[REDACTED]"}},
			Body:    []byte(`{"model":"claude-sonnet-4-5","messages":[{"role":"user","content":"` + strings.Repeat("say hello ", 500) + `"}]}`)},
		Response: CapturedMessage{Status: 200, Headers: map[string][]string{"Content-Type": {"text/event-stream"}},
			Body: []byte(strings.Repeat("event: ping\ndata: {\"type\":\"ping\"}\n\n", 100)), Truncated: true},
	}
}

// Both formats decode to the capture that was encoded: the compressed one
// MarshalCapture writes now, and the JSON one every older payload is in.
func TestCaptureFormats(t *testing.T) {
	for _, c := range []*Capture{
		testCapture(),
		{Request: CapturedMessage{Method: "GET", Path: "/v1/models", BodyOmitted: true}, Response: CapturedMessage{Status: 404, BodyOmitted: true}},
		{},
	} {
		z, err := MarshalCapture(c)
		if err != nil {
			t.Fatal(err)
		}
		j, err := MarshalCaptureJSON(c)
		if err != nil {
			t.Fatal(err)
		}
		if z[0] != captureS2 || j[0] != '{' {
			t.Fatalf("format bytes %#x %#x", z[0], j[0])
		}
		if len(c.Request.Body) > 0 && len(z) >= len(c.Request.Body)/4 {
			t.Errorf("compressed capture of %d bytes for a %d-byte body", len(z), len(c.Request.Body))
		}
		for _, b := range [][]byte{z, j} {
			got, err := UnmarshalCapture(b)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, c) {
				t.Fatalf("format %#x decodes to\n%+v\nwant\n%+v", b[0], got, c)
			}
		}
	}
	// The encoder reuses its buffers: what it returned last stays valid
	// until the next call, and the next capture is encoded whole.
	var e CaptureEncoder
	a, _ := e.Encode(testCapture())
	a = bytes.Clone(a)
	small := &Capture{Request: CapturedMessage{Method: "GET", Body: []byte("x")}}
	b, _ := e.Encode(small)
	if got, err := UnmarshalCapture(b); err != nil || !reflect.DeepEqual(got, small) {
		t.Fatalf("second capture decodes to %+v, %v", got, err)
	}
	if got, err := UnmarshalCapture(a); err != nil || !reflect.DeepEqual(got, testCapture()) {
		t.Fatalf("first capture decodes to %+v, %v", got, err)
	}
}

// Corrupt compressed captures give one clear error, and a capture that
// claims (or would decode to) more than the limit fails without
// allocating more than the limit.
func TestCaptureCorrupt(t *testing.T) {
	good, _ := MarshalCapture(testCapture())
	frame := func(parts ...[]byte) []byte {
		var f []byte
		for _, p := range parts {
			f = binary.AppendUvarint(f, uint64(len(p)))
			f = append(f, p...)
		}
		return f
	}
	compress := func(f []byte) []byte { return append([]byte{captureS2}, s2.Encode(nil, f)...) }
	// claims is an S2 block whose header claims n decoded bytes, with
	// data that is not that.
	claims := func(n uint64, data []byte) []byte {
		return append(binary.AppendUvarint([]byte{captureS2}, n), data...)
	}
	meta := []byte(`{"request":{"headers":null},"response":{"headers":null}}`)
	cases := map[string][]byte{
		"cut short":         good[:len(good)/2],
		"only the format":   {captureS2},
		"not s2":            append([]byte{captureS2}, "not an s2 block at all"...),
		"bit flipped":       func() []byte { b := bytes.Clone(good); b[len(b)/2] ^= 0x40; return b }(),
		"length past end":   compress(append(binary.AppendUvarint(nil, 1<<40), meta...)),
		"two parts":         compress(frame(meta, []byte("req"))),
		"trailing bytes":    compress(append(frame(meta, nil, nil), 0)),
		"bad varint":        compress(bytes.Repeat([]byte{0xff}, 12)),
		"meta not JSON":     compress(frame([]byte("{"), nil, nil)),
		"empty frame":       compress(nil),
		"claims too little": claims(10, s2.Encode(nil, frame(meta, make([]byte, 1000), nil))[2:]),
		"claims 1 TiB":      claims(1<<40, nil),
		"claims the limit":  claims(MaxCaptureBytes+1, []byte{0}),
	}
	for name, b := range cases {
		c, err := UnmarshalCapture(b)
		if err == nil || c != nil || !strings.HasPrefix(err.Error(), "decode payload: ") || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: capture %v, error %v", name, c, err)
		}
	}
	if _, err := UnmarshalCapture(claims(MaxCaptureBytes+1, []byte{0})); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("a capture claiming more than MaxCaptureBytes: %v", err)
	}

	// Against a limit of 1 MiB: 16 MiB of zeros, and a few bytes that
	// claim 16 MiB or just the limit.
	const limit = 1 << 20
	bomb := compress(frame(meta, make([]byte, 16<<20), nil))
	for name, b := range map[string][]byte{"16 MiB of zeros": bomb, "claims 16 MiB": claims(16<<20, []byte{0}), "claims 1 MiB": claims(limit, []byte{0, 0, 0})} {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		_, _, _, _, framed, err := splitCapture(b, nil, limit)
		runtime.ReadMemStats(&after)
		if !framed || err == nil || !strings.HasPrefix(err.Error(), "decode payload: ") {
			t.Errorf("%s (%d bytes): %v", name, len(b), err)
		}
		if n := after.TotalAlloc - before.TotalAlloc; n > 2*limit {
			t.Errorf("%s: %d bytes allocated decoding it, limit %d", name, n, limit)
		}
	}
	if _, _, _, _, _, err := splitCapture(bomb, nil, limit); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("bomb: %v", err)
	}
}
