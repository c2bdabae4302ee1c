package store

import (
	"encoding/json"
	"fmt"
)

// Capture is the plaintext of a sealed payload: what the proxy saw of one
// request and its response. Bodies are raw bytes (base64 in this JSON);
// payload export turns JSON bodies back into JSON and SSE bodies into text.
// Credential headers are already "[REDACTED]" when a Capture is made.
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

// MarshalCapture encodes c for sealing.
func MarshalCapture(c *Capture) ([]byte, error) { return json.Marshal(c) }

// UnmarshalCapture decodes an opened payload.
func UnmarshalCapture(b []byte) (*Capture, error) {
	var c Capture
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("decode payload: %w", err)
	}
	return &c, nil
}
