package store

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/klauspost/compress/s2"
)

// Capture is the plaintext of a sealed payload: what the proxy saw of one
// request and its response. Bodies are raw bytes; payload export turns
// JSON bodies back into JSON and SSE bodies into text. Credential headers
// are already "[REDACTED]" when a Capture is made.
//
// The sealed plaintext is in one of two formats, told apart by its first
// byte:
//
//   - '{': the capture as JSON, bodies in base64 (every payload written
//     before issue 16; still read, written only by MarshalCaptureJSON).
//   - captureS2 (0x02), then one S2 block (github.com/klauspost/compress/s2:
//     its decoded length, then the compressed bytes) of: a uvarint length
//     and the capture's JSON without its bodies, a uvarint length and the
//     request body, a uvarint length and the response body. What
//     MarshalCapture and CaptureEncoder write: no base64, and Claude
//     Code's payloads (JSON and SSE) take about a third of the space, for
//     less CPU than the JSON took (docs/BENCHMARKS.md, "Compressing
//     payloads"). 0x01 is not used (zstd, measured and not kept).
type Capture struct {
	Request  CapturedMessage `json:"request"`
	Response CapturedMessage `json:"response"`
}

// CapturedMessage is one side of a capture.
type CapturedMessage struct {
	Method  string              `json:"method,omitempty"`
	Path    string              `json:"path,omitempty"` // with the query string
	Status  int                 `json:"status,omitempty"`
	Headers map[string][]string `json:"headers"`
	Body    []byte              `json:"body,omitempty"`
	// BodyOmitted is set when the body was not kept (log.payloads =
	// "headers", or a path outside log.body_paths).
	BodyOmitted bool `json:"body_omitted,omitempty"`
	// Truncated is set when Body was cut at log.payload_max_bytes.
	Truncated bool `json:"truncated,omitempty"`
}

// captureS2 is the first byte of a compressed capture.
const captureS2 = 0x02

// MaxCaptureBytes bounds a capture once decompressed: two bodies of the
// largest log.payload_max_bytes (64 MiB) and their headers. Decoding
// never allocates more than this, whatever the bytes claim.
const MaxCaptureBytes = 2*(64<<20) + 4<<20

// CaptureEncoder encodes captures for sealing, reusing its buffers. It is
// not safe for concurrent use.
type CaptureEncoder struct {
	frame, out []byte
}

// keepBuffer is the largest buffer a CaptureEncoder keeps between
// captures.
const keepBuffer = 4 << 20

// Encode returns c encoded (compressed) for sealing; the bytes are valid
// until the next call.
func (e *CaptureEncoder) Encode(c *Capture) ([]byte, error) {
	meta := *c
	meta.Request.Body, meta.Response.Body = nil, nil
	m, err := json.Marshal(&meta)
	if err != nil {
		return nil, err
	}
	n := len(m) + len(c.Request.Body) + len(c.Response.Body) + 3*binary.MaxVarintLen64
	if cap(e.frame) < n {
		e.frame = make([]byte, 0, n)
	}
	f := binary.AppendUvarint(e.frame[:0], uint64(len(m)))
	f = append(f, m...)
	f = binary.AppendUvarint(f, uint64(len(c.Request.Body)))
	f = append(f, c.Request.Body...)
	f = binary.AppendUvarint(f, uint64(len(c.Response.Body)))
	f = append(f, c.Response.Body...)
	// S2's fastest mode: it costs less CPU than base64 and the JSON did,
	// and the bodies shrink threefold. The AEAD that seals the result
	// authenticates it, so no checksum.
	out := e.out[:0]
	if need := 1 + s2.MaxEncodedLen(len(f)); cap(out) < need {
		out = make([]byte, 0, need)
	}
	out = append(out, captureS2)
	out = out[:1+len(s2.Encode(out[1:cap(out)], f))]
	e.frame, e.out = f[:0], out[:0]
	if cap(e.frame) > keepBuffer {
		e.frame = nil
	}
	if cap(e.out) > keepBuffer {
		e.out = nil
	}
	return out, nil
}

// MarshalCapture encodes c for sealing (compressed).
func MarshalCapture(c *Capture) ([]byte, error) {
	var e CaptureEncoder
	b, err := e.Encode(c)
	if err != nil {
		return nil, err
	}
	return b, nil
}

// MarshalCaptureJSON encodes c as payloads were before issue 16: JSON,
// bodies in base64. Only tests and benchmarks write it now; it is still
// read.
func MarshalCaptureJSON(c *Capture) ([]byte, error) { return json.Marshal(c) }

// UnmarshalCapture decodes an opened payload, of either format.
func UnmarshalCapture(b []byte) (*Capture, error) {
	meta, req, resp, _, framed, err := SplitCapture(b, nil)
	if err != nil {
		return nil, err
	}
	if !framed {
		meta = b
	}
	var c Capture
	if err := json.Unmarshal(meta, &c); err != nil {
		return nil, fmt.Errorf("decode payload: %w", err)
	}
	if framed {
		c.Request.Body, c.Response.Body = req, resp
	}
	return &c, nil
}

// SplitCapture takes a compressed capture apart: it decompresses b into
// buf (grown as needed and returned, to be passed again) and returns the
// JSON of the capture without its bodies and the two bodies (nil when
// empty), all pointing into buf. For a payload in the JSON format it
// returns framed false and nothing else: b is the JSON. Corrupt or
// hostile bytes give an error, and never more than MaxCaptureBytes
// allocated.
func SplitCapture(b, buf []byte) (meta, req, resp, newBuf []byte, framed bool, err error) {
	return splitCapture(b, buf, MaxCaptureBytes)
}

func splitCapture(b, buf []byte, limit int) (meta, req, resp, newBuf []byte, framed bool, err error) {
	if len(b) == 0 || b[0] != captureS2 {
		return nil, nil, nil, buf, false, nil
	}
	n, err := s2.DecodedLen(b[1:])
	if err == nil && n > limit {
		err = fmt.Errorf("decompressed payload larger than %d bytes", limit)
	}
	if err != nil {
		return nil, nil, nil, buf, true, fmt.Errorf("decode payload: %w", err)
	}
	if cap(buf) < n {
		buf = make([]byte, n)
	}
	plain, err := s2.Decode(buf[:cap(buf)], b[1:])
	if err != nil {
		return nil, nil, nil, buf, true, fmt.Errorf("decode payload: %w", err)
	}
	rest := plain
	part := func() []byte {
		n, k := binary.Uvarint(rest)
		if k <= 0 || n > uint64(len(rest)-k) {
			err = errors.New("decode payload: bad frame")
			return nil
		}
		p := rest[k : k+int(n) : k+int(n)]
		rest = rest[k+int(n):]
		if n == 0 {
			return nil
		}
		return p
	}
	meta, req, resp = part(), part(), part()
	if err == nil && len(rest) > 0 {
		err = errors.New("decode payload: bad frame")
	}
	if err != nil {
		return nil, nil, nil, plain, true, err
	}
	return meta, req, resp, plain, true, nil
}
