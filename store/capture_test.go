package store

import (
	"bytes"
	"encoding/binary"
	"reflect"
	"runtime"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
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
		if z[0] != captureZstd || j[0] != '{' {
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

// Corrupt compressed captures give one clear error, and a decompression
// bomb (a frame that decodes to more than the limit, whatever its header
// says) fails without allocating much more than the limit.
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
	compress := func(f []byte) []byte { return zstdEncoder().EncodeAll(f, []byte{captureZstd}) }
	meta := []byte(`{"request":{"headers":null},"response":{"headers":null}}`)
	cases := map[string][]byte{
		"cut short":         good[:len(good)/2],
		"only the format":   {captureZstd},
		"not zstd":          append([]byte{captureZstd}, "not a zstd frame at all"...),
		"bit flipped":       func() []byte { b := bytes.Clone(good); b[len(b)/2] ^= 0x40; return b }(),
		"length past end":   compress(append(binary.AppendUvarint(nil, 1<<40), meta...)),
		"two parts":         compress(frame(meta, []byte("req"))),
		"trailing bytes":    compress(append(frame(meta, nil, nil), 0)),
		"bad varint":        compress(bytes.Repeat([]byte{0xff}, 12)),
		"meta not JSON":     compress(frame([]byte("{"), nil, nil)),
		"empty frame":       compress(nil),
		"content size 1TiB": zstdHeaderOnly(1 << 40),
	}
	for name, b := range cases {
		c, err := UnmarshalCapture(b)
		if err == nil || c != nil || !strings.HasPrefix(err.Error(), "decode payload: ") || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: capture %v, error %v", name, c, err)
		}
	}
	if _, err := UnmarshalCapture(zstdHeaderOnly(1 << 40)); !strings.Contains(err.Error(), "larger than") {
		t.Errorf("1 TiB frame: %v", err)
	}

	// Bombs against a decoder limited to 1 MiB: 16 MiB of zeros, with
	// and without the content size in the frame's header.
	const limit = 1 << 20
	dec := newCaptureDecoder(limit)
	defer dec.Close()
	zeros := make([]byte, 16<<20)
	withSize := zstdEncoder().EncodeAll(frame(meta, zeros, nil), []byte{captureZstd})
	var streamed bytes.Buffer
	streamed.WriteByte(captureZstd)
	w, _ := zstd.NewWriter(&streamed, zstd.WithEncoderConcurrency(1))
	w.Write(frame(meta, zeros, nil))
	w.Close()
	zeros = nil
	var h zstd.Header
	if err := h.Decode(streamed.Bytes()[1:]); err != nil || h.HasFCS {
		t.Fatalf("the streamed bomb has its content size in the header (%v)", err)
	}
	for name, b := range map[string][]byte{"with content size": withSize, "without content size": streamed.Bytes()} {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		_, _, _, _, framed, err := splitCapture(b, nil, dec)
		runtime.ReadMemStats(&after)
		if !framed || err == nil || !strings.Contains(err.Error(), "larger than") {
			t.Errorf("%s bomb (%d bytes): %v", name, len(b), err)
		}
		if n := after.TotalAlloc - before.TotalAlloc; n > 8*limit {
			t.Errorf("%s bomb: %d bytes allocated decoding it, limit %d", name, n, limit)
		}
	}
}

// zstdHeaderOnly is a zstd frame whose header claims size bytes of
// content, followed by one empty last block.
func zstdHeaderOnly(size uint64) []byte {
	b := []byte{captureZstd, 0x28, 0xb5, 0x2f, 0xfd, 0xe0} // magic; single segment, 8-byte content size
	b = binary.LittleEndian.AppendUint64(b, size)
	return append(b, 0x01, 0x00, 0x00) // last block, raw, empty
}
