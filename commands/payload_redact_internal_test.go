package commands

import (
	"bytes"
	"strings"
	"testing"

	"github.com/claudeflare/claudeflare/proxy"
)

// payload export redacts each line again as a whole: response.message
// joins a stream's text deltas, each redacted alone when captured, so a
// key the model wrote in two deltas comes back whole in the message.
func TestRedactingWriterCatchesAJoinedSecret(t *testing.T) {
	secret := "sk-ant-api03-" + strings.Repeat("abcdefghij", 8)
	line := `{"response":{"body":"data: {\"delta\":{\"text\":\"sk-ant-\"}}\ndata: {\"delta\":{\"text\":\"` +
		secret[len("sk-ant-"):] + `\"}}\n","message":{"content":[{"type":"text","text":"` + secret + `"}]}}}` + "\n"
	var out bytes.Buffer
	w := redactingWriter{w: &out, redact: proxy.RedactFunc(nil)}
	if n, err := w.Write([]byte(line)); err != nil || n != len(line) {
		t.Fatalf("Write = %d, %v", n, err)
	}
	if strings.Contains(out.String(), secret) {
		t.Fatalf("the joined secret reached the export: %s", out.String())
	}
	if !strings.Contains(out.String(), "[REDACTED]") || !strings.HasSuffix(out.String(), "}\n") {
		t.Fatalf("line not redacted in place: %s", out.String())
	}
}
