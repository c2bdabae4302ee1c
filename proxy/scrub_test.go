package proxy

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/claudeflare/claudeflare/internal/fakeapi"
)

// An upstream error answer that quotes the account's own credentials
// (in its body or its headers) reaches the client with them replaced by
// [REDACTED]: on the streamed path (a 400 passed through) and on the
// path that relays the last failure after every try failed.
func TestUpstreamErrorsScrubbed(t *testing.T) {
	h := newHarness(t)
	oid := h.addOAuth("work", 0, false)
	h.reload()
	s, err := h.vault.Secrets(context.Background(), oid)
	if err != nil {
		t.Fatal(err)
	}
	secrets := []string{s.AccessToken, s.RefreshToken}
	// Warm the credential cache: the proxy knows the refresh token too.
	if r := h.post(msgBody); r.status != 200 {
		t.Fatalf("warm up: %d %s", r.status, r.body)
	}
	quote := fmt.Sprintf(`{"type":"error","error":{"type":"invalid_request_error","message":"token %s (refresh %s) is odd"}}`, s.AccessToken, s.RefreshToken)
	check := func(what string, r reply, status int) {
		t.Helper()
		if r.status != status {
			t.Fatalf("%s: status %d, want %d: %s", what, r.status, status, r.body)
		}
		var hdr bytes.Buffer
		r.header.Write(&hdr)
		for _, sec := range secrets {
			if strings.Contains(string(r.body), sec) || strings.Contains(hdr.String(), sec) {
				t.Fatalf("%s: the account's credential reached the client:\n%s\n%s", what, hdr.String(), r.body)
			}
		}
		if !strings.Contains(string(r.body), Redacted) || !strings.Contains(r.header.Get("X-Echo"), Redacted) {
			t.Fatalf("%s: no [REDACTED] where the credential was:\n%v\n%s", what, r.header, r.body)
		}
		if e := decodeError(t, r.body); !strings.Contains(e.Error.Message, "is odd") {
			t.Fatalf("%s: the rest of the message is gone: %q", what, e.Error.Message)
		}
	}

	// A 400 streams through.
	h.api.Inject(fakeapi.Fault{Kind: fakeapi.FaultStatus, Status: 400, Body: quote,
		Headers: map[string]string{"x-echo": "Bearer " + s.AccessToken}})
	check("400", h.post(msgBody), 400)

	// A 500 on every try: the last one is relayed.
	h.api.Inject(fakeapi.Fault{Kind: fakeapi.FaultStatus, Status: 500, Body: quote, Count: -1,
		Headers: map[string]string{"x-echo": s.AccessToken}})
	check("500 on every try", h.post(msgBody), 500)
	h.api.ClearFaults()

	// An API-key account's key likewise.
	h = newHarness(t)
	kid := h.addAPIKey("keyed", 0)
	h.reload()
	ks, err := h.vault.Secrets(context.Background(), kid)
	if err != nil {
		t.Fatal(err)
	}
	secrets = []string{ks.APIKey}
	h.api.Inject(fakeapi.Fault{Kind: fakeapi.FaultStatus, Status: 403, Body: `{"type":"error","error":{"type":"permission_error","message":"key ` + ks.APIKey + ` is odd"}}`,
		Headers: map[string]string{"x-echo": ks.APIKey}})
	check("403 for an API key", h.post(msgBody), 403)
}

// The scrubber finds a secret split across the reads of a streamed body.
func TestScrubberAcrossChunks(t *testing.T) {
	sec := "sk-ant-oat01-" + strings.Repeat("A", 80)
	body := []byte(`{"message":"` + sec + `","again":"` + sec + `"}`)
	for chunk := 1; chunk <= len(body); chunk += 7 {
		sc := newScrubber([]string{sec, ""})
		var out []byte
		for i := 0; i < len(body); i += chunk {
			out = append(out, sc.next(body[i:min(i+chunk, len(body))])...)
		}
		out = append(out, sc.end()...)
		if want := `{"message":"[REDACTED]","again":"[REDACTED]"}`; string(out) != want {
			t.Fatalf("chunk %d: %s", chunk, out)
		}
	}
}

// Cookie and the forwarding headers a client sends stay here.
func TestClientIdentityHeadersNotForwarded(t *testing.T) {
	h := newHarness(t)
	h.addOAuth("work", 0, false)
	h.reload()
	hdr := http.Header{}
	for _, k := range []string{"Cookie", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto", "Forwarded", "X-Real-Ip", "Via", "X-Claudeflare-Key"} {
		hdr.Set(k, "client-secret-"+k)
	}
	hdr.Set("X-Claude-Code-Session-Id", "kept")
	if r := h.do(context.Background(), "POST", "/v1/messages", msgBody, hdr); r.status != 200 {
		t.Fatalf("%d %s", r.status, r.body)
	}
	got := h.apiRequests()
	if len(got) != 1 {
		t.Fatalf("%d upstream requests", len(got))
	}
	var sent bytes.Buffer
	got[0].Header.Write(&sent)
	if strings.Contains(sent.String(), "client-secret-") {
		t.Fatalf("client identity headers forwarded:\n%s", sent.String())
	}
	if got[0].Header.Get("X-Claude-Code-Session-Id") != "kept" {
		t.Fatalf("other headers lost:\n%s", sent.String())
	}
}
