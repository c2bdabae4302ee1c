package store

import (
	"bytes"
	"encoding/binary"
	"reflect"
	"runtime"
	"slices"
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
	part := func(p []byte) []byte { return append(binary.LittleEndian.AppendUint32(nil, uint32(len(p))), p...) }
	framed := func(meta, req, resp []byte) []byte {
		return slices.Concat([]byte{captureS2}, part(meta), part(req), part(resp))
	}
	// claims is an S2 block whose header claims n decoded bytes, with
	// data that is not that.
	claims := func(n uint64, data []byte) []byte { return append(binary.AppendUvarint(nil, n), data...) }
	meta := []byte(`{"request":{"headers":null},"response":{"headers":null}}`)
	body := s2.Encode(nil, bytes.Repeat([]byte("say hello "), 100))
	cases := map[string][]byte{
		"cut short":         good[:len(good)/2],
		"only the format":   {captureS2},
		"not s2":            framed(meta, []byte("not an s2 block at all"), nil),
		"length past end":   append([]byte{captureS2, 0xff, 0xff, 0xff, 0x7f}, meta...),
		"two parts":         slices.Concat([]byte{captureS2}, part(meta), part(body)),
		"trailing bytes":    append(framed(meta, body, nil), 0),
		"meta not JSON":     framed([]byte("{"), nil, nil),
		"no meta":           framed(nil, body, nil),
		"body cut short":    framed(meta, body[:len(body)-3], nil),
		"claims too little": framed(meta, claims(10, body[2:]), nil),
		"claims 1 TiB":      framed(meta, claims(1<<40, nil), nil),
		"claims the limit":  framed(meta, nil, claims(MaxCaptureBytes+1, []byte{0})),
		"two halves":        framed(meta, claims(MaxCaptureBytes/2+1, []byte{0}), claims(MaxCaptureBytes/2+1, []byte{0})),
	}
	if _, err := UnmarshalCapture(append([]byte{0x03}, good[1:]...)); err == nil || !strings.Contains(err.Error(), "unknown format 0x03") {
		t.Errorf("a later format: %v", err)
	}
	for name, b := range cases {
		c, err := UnmarshalCapture(b)
		if err == nil || c != nil || !strings.HasPrefix(err.Error(), "decode payload: ") || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: capture %v, error %v", name, c, err)
		}
	}
	for _, name := range []string{"claims the limit", "two halves"} {
		if _, err := UnmarshalCapture(cases[name]); err == nil || !strings.Contains(err.Error(), "larger than") {
			t.Errorf("%s: %v", name, err)
		}
	}

	// Against a limit of 1 MiB: 16 MiB of zeros, and a few bytes that
	// claim 16 MiB or just the limit.
	const limit = 1 << 20
	bomb := framed(meta, s2.Encode(nil, make([]byte, 16<<20)), nil)
	for name, b := range map[string][]byte{
		"16 MiB of zeros": bomb,
		"claims 16 MiB":   framed(meta, claims(16<<20, []byte{0}), nil),
		"claims 1 MiB":    framed(meta, nil, claims(limit, []byte{0, 0, 0})),
	} {
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
