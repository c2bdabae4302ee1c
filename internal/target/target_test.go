package target

import (
	"bufio"
	"errors"
	"net/http"
	"strings"
	"testing"
)

func TestPathRules(t *testing.T) {
	for target, want := range map[string]string{
		"/v1/messages?beta=true": "/v1/messages",
		"/v1/messages/":          "/v1/messages/",
		"/":                      "/",
		"/v1/a(b)":               "/v1/a(b)",
		"/v1/a%20b?q=%2F":        "/v1/a%20b",
		"/health":                "/health",
	} {
		r, err := http.ReadRequest(bufio.NewReader(strings.NewReader("GET " + target + " HTTP/1.1\r\nHost: x\r\n\r\n")))
		if err != nil {
			t.Fatal(err)
		}
		got, err := Path(r)
		if err != nil || got != want {
			t.Errorf("%s: %q %v, want %q", target, got, err, want)
		}
	}
	for _, target := range []string{"/v1//x", "/v1/.", "/v1/x/..", "/a%2Fb", "/a%5Cb", "/a%25", "/a%2E", "/a%41", "/a%0A", "/a%", "/a%4", "/a\\b", "/a\"b", "/a{b}", "/a b"} {
		r, err := http.ReadRequest(bufio.NewReader(strings.NewReader("GET " + target + " HTTP/1.1\r\nHost: x\r\n\r\n")))
		if err != nil {
			continue // refused by net/http already
		}
		if p, err := Path(r); err == nil || !errors.Is(err, ErrNotCanonical) {
			t.Errorf("%s: accepted as %q (%v)", target, p, err)
		}
	}
}
