package store

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

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
//   - captureS2 (0x02), then three parts, each a 4-byte little-endian
//     length and its bytes: the capture's JSON without its bodies, the
//     request body and the response body, each body an S2 block
//     (github.com/klauspost/compress/s2: its decoded length, then the
//     compressed bytes; an empty part for no body). What MarshalCapture
//     and CaptureEncoder write: no base64; each body is compressed
//     straight from the capture's buffer, with no copy in between; Claude
//     Code's payloads (JSON and SSE) take about a third of the space, for
//     less CPU than the JSON took (docs/BENCHMARKS.md, "Compressing
//     payloads"). 0x01 is not used (zstd: measured, not kept).
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

// CaptureEncoder encodes captures for sealing, reusing its buffer. It is
// not safe for concurrent use.
type CaptureEncoder struct {
	out []byte
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
	need := 1 + 3*4 + len(m) + maxS2(c.Request.Body) + maxS2(c.Response.Body)
	out := e.out[:0]
	if cap(out) < need {
		out = make([]byte, 0, need)
	}
	out = append(out, captureS2)
	out = binary.LittleEndian.AppendUint32(out, uint32(len(m)))
	out = append(out, m...)
	out = appendS2(out, c.Request.Body)
	out = appendS2(out, c.Response.Body)
	if e.out = out[:0]; cap(e.out) > keepBuffer {
		e.out = nil
	}
	return out, nil
}

func maxS2(body []byte) int {
	if len(body) == 0 {
		return 0
	}
	return s2.MaxEncodedLen(len(body))
}

// appendS2 appends body as a part: its S2 block's length and the block,
// compressed straight into dst's spare capacity (grown if short). S2's default mode is its fastest: it costs less
// CPU than base64 and the JSON did, and the bodies shrink threefold. The
// AEAD that seals the result authenticates it, so no checksum.
func appendS2(dst, body []byte) []byte {
	at := len(dst)
	dst = append(dst, 0, 0, 0, 0)
	if len(body) == 0 {
		return dst
	}
	dst = slices.Grow(dst, maxS2(body))
	n := len(s2.Encode(dst[len(dst):cap(dst)], body))
	binary.LittleEndian.PutUint32(dst[at:], uint32(n))
	return dst[:len(dst)+n]
}

// MarshalCapture encodes c for sealing (compressed).
func MarshalCapture(c *Capture) ([]byte, error) {
	var e CaptureEncoder
	return e.Encode(c)
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

var errBadFrame = errors.New("bad frame")

// SplitCapture takes a compressed capture apart: it returns the JSON of
// the capture without its bodies (pointing into b) and the two bodies
// (nil when empty) decompressed into buf, which is grown as needed and
// returned, to be passed again. For a payload in the JSON format it
// returns framed false and nothing else: b is the JSON. Another first
// byte is an unknown format, an error. Corrupt or hostile bytes give an
// error, and never more than MaxCaptureBytes allocated.
func SplitCapture(b, buf []byte) (meta, req, resp, newBuf []byte, framed bool, err error) {
	return splitCapture(b, buf, MaxCaptureBytes)
}

func splitCapture(b, buf []byte, limit int) (meta, req, resp, newBuf []byte, framed bool, err error) {
	if len(b) > 0 && b[0] != '{' && b[0] != captureS2 {
		return nil, nil, nil, buf, false, fmt.Errorf("decode payload: unknown format 0x%02x (written by a later claudeflare?)", b[0])
	}
	if len(b) == 0 || b[0] != captureS2 {
		return nil, nil, nil, buf, false, nil
	}
	rest := b[1:]
	part := func() []byte {
		if len(rest) < 4 || uint64(binary.LittleEndian.Uint32(rest)) > uint64(len(rest)-4) {
			err = errBadFrame
			return nil
		}
		n := int(binary.LittleEndian.Uint32(rest))
		p := rest[4 : 4+n : 4+n]
		rest = rest[4+n:]
		return p
	}
	meta, zreq, zresp := part(), part(), part()
	if err == nil && len(rest) > 0 {
		err = errBadFrame
	}
	var nreq, nresp int
	if err == nil && len(zreq) > 0 {
		nreq, err = s2.DecodedLen(zreq)
	}
	if err == nil && len(zresp) > 0 {
		nresp, err = s2.DecodedLen(zresp)
	}
	if err == nil && nreq+nresp > limit {
		err = fmt.Errorf("decompressed payload larger than %d bytes", limit)
	}
	if err != nil {
		return nil, nil, nil, buf, true, fmt.Errorf("decode payload: %w", err)
	}
	if cap(buf) < nreq+nresp {
		buf = make([]byte, nreq+nresp)
	}
	buf = buf[:nreq+nresp]
	if len(zreq) > 0 {
		req, err = s2.Decode(buf[:nreq:nreq], zreq)
	}
	if err == nil && len(zresp) > 0 {
		resp, err = s2.Decode(buf[nreq:nreq+nresp:nreq+nresp], zresp)
	}
	if err != nil {
		return nil, nil, nil, buf, true, fmt.Errorf("decode payload: %w", err)
	}
	if len(req) == 0 {
		req = nil
	}
	if len(resp) == 0 {
		resp = nil
	}
	return meta, req, resp, buf, true, nil
}
