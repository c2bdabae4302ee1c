package proxy

import (
	"net/http"
	"reflect"
	"testing"
)

func TestOutboundHeader(t *testing.T) {
	in := http.Header{
		"Authorization":     {"Bearer client-key"},
		"X-Api-Key":         {"client-key"},
		"Host":              {"127.0.0.1:8080"},
		"Accept-Encoding":   {"gzip, deflate, br, zstd"},
		"Connection":        {"keep-alive, X-Drop-Me"},
		"X-Drop-Me":         {"1"},
		"Keep-Alive":        {"timeout=5"},
		"Transfer-Encoding": {"chunked"},
		"Te":                {"trailers"},
		"Content-Length":    {"12"},
		"Anthropic-Version": {"2023-06-01"},
		"Anthropic-Beta":    {"claude-code-20250219, oauth-2025-04-20,fine-grained-tool-streaming-2025-05-14"},
		"User-Agent":        {"claude-cli/2.0"},
	}
	out := outboundHeader(in)
	setCredentials(out, "oauth", "tok")
	want := http.Header{
		"Anthropic-Version": {"2023-06-01"},
		"Anthropic-Beta":    {"claude-code-20250219, oauth-2025-04-20,fine-grained-tool-streaming-2025-05-14"}, // byte for byte
		"User-Agent":        {"claude-cli/2.0"},
		"Authorization":     {"Bearer tok"},
	}
	if !reflect.DeepEqual(out, want) {
		t.Fatalf("got %v\nwant %v", out, want)
	}
	if in.Get("Authorization") != "Bearer client-key" {
		t.Fatal("input modified")
	}

	out = outboundHeader(in)
	setCredentials(out, "apikey", "sk-ant-api")
	if out.Get("X-Api-Key") != "sk-ant-api" || out.Get("Authorization") != "" {
		t.Fatalf("apikey: %v", out)
	}
	if out.Get("Anthropic-Beta") != in.Get("Anthropic-Beta") {
		t.Fatal("apikey account must not touch anthropic-beta")
	}
}

func TestMergeBeta(t *testing.T) {
	for _, tc := range []struct {
		in   []string
		want string
	}{
		{nil, OAuthBeta},
		{[]string{""}, OAuthBeta},
		{[]string{OAuthBeta}, OAuthBeta},
		{[]string{"a"}, "a," + OAuthBeta},
		{[]string{" a , b "}, " a , b ," + OAuthBeta}, // the client's value byte for byte
		{[]string{"a, " + OAuthBeta + " ,b"}, "a, " + OAuthBeta + " ,b"},
		{[]string{"a, b", "b,c"}, "a,b,c," + OAuthBeta},
		{[]string{"a," + OAuthBeta + ",a"}, "a," + OAuthBeta + ",a"}, // the client's duplicate is the client's
		{[]string{OAuthBeta + ",a," + OAuthBeta}, OAuthBeta + ",a"},
	} {
		if got := mergeBeta(tc.in, OAuthBeta); got != tc.want {
			t.Errorf("mergeBeta(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestRedactHeader(t *testing.T) {
	h := http.Header{"Authorization": {"Bearer sk-ant-oat-secret"}, "X-Api-Key": {"k1", "k2"}, "Content-Type": {"application/json"}}
	r := redactHeader(h)
	if r["Authorization"][0] != Redacted || r["X-Api-Key"][1] != Redacted || r["Content-Type"][0] != "application/json" {
		t.Fatalf("%v", r)
	}
	if h.Get("Authorization") != "Bearer sk-ant-oat-secret" {
		t.Fatal("original modified")
	}
}

func TestCopyResponseHeader(t *testing.T) {
	src := http.Header{"Content-Type": {"text/event-stream"}, "Connection": {"close, X-Hop"}, "X-Hop": {"1"}, "Request-Id": {"req_1"}}
	dst := http.Header{}
	copyResponseHeader(dst, src)
	if !reflect.DeepEqual(dst, http.Header{"Content-Type": {"text/event-stream"}, "Request-Id": {"req_1"}}) {
		t.Fatalf("%v", dst)
	}
}
