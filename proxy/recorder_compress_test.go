package proxy

import (
	"bytes"
	"strings"
	"testing"

	"github.com/claudeflare/claudeflare/store"
)

// The recorder stores payloads compressed (store.CaptureEncoder), and
// compresses what redaction left: the secret in the body is gone from
// what was compressed, not only from what export shows.
func TestRecorderCompressesRedactedPayload(t *testing.T) {
	secret := "sk-ant-api03-" + strings.Repeat("Q", 40)
	body := `{"model":"claude-sonnet-4-5","max_tokens":64,"messages":[{"role":"user","content":"` +
		strings.Repeat("please read handler.go and fix the failing test; ", 200) + `key ` + secret + `"}]}`
	h := newHarness(t)
	h.addOAuth("work", 0, false)
	h.reload()
	rep := h.post(body)
	if rep.status != 200 {
		t.Fatalf("%d %s", rep.status, rep.body)
	}
	id := rep.header.Get("X-Claudeflare-Request-Id")
	h.rows() // flush
	var p struct {
		KeyID  int64  `db:"key_id"`
		Sealed []byte `db:"sealed"`
	}
	err := h.ldb.R.Get(&p, `SELECT p.key_id, p.sealed FROM payloads p JOIN requests r ON r.seq = p.request_seq WHERE r.id = ?`, id)
	if err != nil {
		t.Fatal(err)
	}
	plain, err := h.vault.OpenPayload(p.KeyID, id, p.Sealed)
	if err != nil {
		t.Fatal(err)
	}
	if plain[0] == '{' || len(plain) > len(body)/4 {
		t.Fatalf("payload of %d bytes (format %#x) for a %d-byte body: not compressed", len(plain), plain[0], len(body))
	}
	_, req, _, _, framed, err := store.SplitCapture(plain, nil)
	if err != nil || !framed {
		t.Fatalf("framed %v: %v", framed, err)
	}
	want := strings.Replace(body, secret, Redacted, 1)
	if !bytes.Equal(req, []byte(want)) {
		t.Fatalf("compressed request body is not the redacted body:\n%.200s", req)
	}
}
