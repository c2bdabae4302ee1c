package requestlog

import "github.com/claudeflare/claudeflare/store"

// DecodeCaptureForTest decodes with the fast path only (after
// decompressing a compressed capture), failing where it would fall back.
func DecodeCaptureForTest(b []byte) (*store.Capture, error) {
	var d captureDecoder
	meta, req, resp, _, framed, err := store.SplitCapture(b, nil)
	if err != nil {
		return nil, err
	}
	if !framed {
		meta = b
	}
	if !d.fast(meta) {
		return nil, errFallback
	}
	if framed {
		d.c.Request.Body, d.c.Response.Body = req, resp
	}
	return &d.c, nil
}

var errFallback = errorString("fast capture decoder fell back")

type errorString string

func (e errorString) Error() string { return string(e) }
