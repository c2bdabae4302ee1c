package e2e

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/claudeflare/claudeflare/internal/fakeapi"
)

// Message batches and files live on the account that created them
// (issue 15 item 4): the daemon remembers the owner across a restart, and
// a batch or file upload over server.max_body_bytes streams to the
// upstream instead of being buffered.

const ownedConfig = `
lb_strategy = "session"
retry_delay_ms = 10

[server]
max_body_bytes = 1048576
max_inflight_body_bytes = 2097152

[log]
flush_interval = "100ms"
`

// ownedCall sends one request to the daemon and returns its status and
// decoded JSON body.
func ownedCall(t *testing.T, url, method, path string, body io.Reader) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest(method, url+path, body)
	req.Header.Set("Anthropic-Version", "2023-06-01")
	req.Header.Set("X-Api-Key", "client-placeholder")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var v map[string]any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("%s %s: %d, not JSON: %.300s", method, path, resp.StatusCode, b)
	}
	return resp.StatusCode, v
}

// A batch and a file created through account a are fetched from a after
// a daemon restart, while b, added since, is first in order and serves
// every other call.
func TestOwnedBatchAfterRestart(t *testing.T) {
	w := newWorld(t, ownedConfig, "")
	w.addOAuth("a")
	d := w.start()
	st, v := ownedCall(t, d.url, http.MethodPost, "/v1/messages/batches", strings.NewReader(`{"requests":[]}`))
	batch, _ := v["id"].(string)
	if st != http.StatusOK || !strings.HasPrefix(batch, "msgbatch_") {
		t.Fatalf("create batch: %d %v", st, v)
	}
	st, v = ownedCall(t, d.url, http.MethodPost, "/v1/files", strings.NewReader("some file"))
	file, _ := v["id"].(string)
	if st != http.StatusOK || !strings.HasPrefix(file, "file_") {
		t.Fatalf("create file: %d %v", st, v)
	}
	if err := d.stop(t); err != nil {
		t.Fatalf("daemon stop: %v", err)
	}

	w.MustRun(w.fake.NewOAuthAccount("b"), "accounts", "add", "b", "--refresh-token-stdin")
	w.MustRun("", "accounts", "edit", "a", "--priority", "5")
	d = w.start()
	if st, v := ownedCall(t, d.url, http.MethodGet, "/v1/messages/batches", nil); st != http.StatusOK || v["account"] != "b" {
		t.Fatalf("batch listing (no id) after restart: %d %v, want b's answer (first in order)", st, v)
	}
	for _, p := range []string{"/v1/messages/batches/" + batch, "/v1/messages/batches/" + batch + "/results", "/v1/files/" + file + "/content"} {
		if st, v := ownedCall(t, d.url, http.MethodGet, p, nil); st != http.StatusOK || v["account"] != "a" {
			t.Fatalf("GET %s after restart: %d %v", p, st, v)
		}
	}
	seen := 0
	for _, r := range w.fake.Requests() {
		if strings.Contains(r.Path, batch) || strings.Contains(r.Path, file) {
			seen++
			if r.Account != "a" || r.Status != http.StatusOK {
				t.Fatalf("%s reached %s (%d)", r.Path, r.Account, r.Status)
			}
		}
	}
	if seen < 3 {
		t.Fatalf("the fake saw %d requests for the batch and file, want the 3 GETs at least", seen)
	}
}

// A file upload eight times server.max_body_bytes, four times what the
// daemon may hold of bodies in flight (server.max_inflight_body_bytes),
// arrives whole: it streamed through. A messages body over the limit is
// still refused with 413.
func TestOwnedBigFileStreams(t *testing.T) {
	w := newWorld(t, ownedConfig, "")
	w.addOAuth("a")
	d := w.start()
	big := make([]byte, 8<<20)
	rand.Read(big)
	sum := sha256.Sum256(big)
	st, v := ownedCall(t, d.url, http.MethodPost, "/v1/files", bytes.NewReader(big))
	if st != http.StatusOK || v["size_bytes"] != float64(len(big)) || v["sha256"] != hex.EncodeToString(sum[:]) {
		delete(v, "sha256")
		t.Fatalf("upload: %d %v", st, v)
	}
	if owner := w.fake.OwnerOf(v["id"].(string)); owner != "a" {
		t.Fatalf("file owned by %q", owner)
	}
	st, v = ownedCall(t, d.url, http.MethodPost, "/v1/messages", bytes.NewReader(big))
	if st != http.StatusRequestEntityTooLarge {
		t.Fatalf("big messages body: %d %v", st, v)
	}
	for _, r := range w.fake.Requests() {
		if r.Path == fakeapi.MessagesPath {
			t.Fatalf("the refused messages body reached the upstream")
		}
	}
}
