package requestlog

import "github.com/claudeflare/claudeflare/store"

// DecodeCaptureForTest decodes with the fast path only, failing where it
// would fall back.
func DecodeCaptureForTest(b []byte) (*store.Capture, error) {
	var d captureDecoder
	if !d.fast(b) {
		return nil, errFallback
	}
	return &d.c, nil
}

var errFallback = errorString("fast capture decoder fell back")

type errorString string

func (e errorString) Error() string { return string(e) }
