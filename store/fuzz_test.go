package store

import (
	"bytes"
	"testing"
)

// FuzzCapture: any bytes either fail to decode as a payload capture or
// decode to a capture that encodes and decodes again to the same bytes
// (what export reads back is what the proxy wrote), in either format. Seeds are in
// testdata/fuzz/.
func FuzzCapture(f *testing.F) {
	f.Add([]byte(`{"request":{"method":"POST","path":"/v1/messages?beta=true","headers":{"X-Api-Key":["[REDACTED]"]},"body":"eyJhIjoxfQ=="},"response":{"status":200,"headers":{"Content-Type":["text/event-stream"]},"body":"ZXZlbnQ6IHBpbmcKCg==","truncated":true}}`))
	f.Add([]byte(`{"request":{"headers":null,"body_omitted":true},"response":{"headers":{}}}`))
	f.Add([]byte(`{"request":{"path":"\ud800\u2028\"","headers":{"":[""]}},"response":{"status":-1,"headers":null}}`))
	f.Add([]byte(`{"REQUEST":{"METHOD":"x"},"extra":[1,2,{}]}`))
	f.Add([]byte(`null`))
	z, _ := MarshalCapture(&Capture{Request: CapturedMessage{Method: "POST", Headers: map[string][]string{"A": {"b"}}, Body: []byte(`{"a":1}`)},
		Response: CapturedMessage{Status: 200, Body: []byte("event: ping\n\n")}})
	f.Add(z)
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := UnmarshalCapture(b)
		if err != nil {
			if c != nil {
				t.Fatal("capture with an error")
			}
			return
		}
		enc, err := MarshalCapture(c)
		if err != nil {
			t.Fatalf("a decoded capture does not encode: %v", err)
		}
		c2, err := UnmarshalCapture(enc)
		if err != nil {
			t.Fatalf("re-encoded capture does not decode: %v: %s", err, enc)
		}
		enc2, _ := MarshalCapture(c2)
		if !bytes.Equal(enc, enc2) {
			t.Fatalf("not stable:\n%s\n%s", enc, enc2)
		}
	})
}
