package proxy

import (
	"bufio"
	"net/http"
	"slices"
	"strings"
	"testing"
)

// FuzzCredentialHeaders parses arbitrary header lines as net/http's server
// would and checks what leaves the proxy: upstream, the client's own
// credentials, Host, hop-by-hop headers and the headers Connection names
// are gone and exactly the account's credential is set (with the OAuth
// beta merged in once, the client's other betas kept); in a payload
// capture every credential header is [REDACTED]. Seeds are in
// testdata/fuzz/.
func FuzzCredentialHeaders(f *testing.F) {
	f.Add("Authorization", "Bearer sk-ant-oat01-client", "X-Api-Key", "sk-ant-api03-client", "Anthropic-Beta", "oauth-2025-04-20, x", "secret-token", true)
	f.Add("authorization", "Basic dXNlcjpwYXNz", "Connection", "keep-alive, Anthropic-Beta", "anthropic-beta", "a,,a , b", "k", false)
	f.Add("Cookie", "session=abc", "Proxy-Authorization", "Bearer p", "Set-Cookie", "x=y", "sk-ant-api03-account", false)
	f.Add("X-API-KEY", "dup", "x-api-key", "dup2", "Te", "trailers", "tok", true)
	f.Add("Anthropic-Beta", "", "Anthropic-Beta", "oauth-2025-04-20", "Keep-Alive", "timeout=5", "tok", true)
	f.Fuzz(func(t *testing.T, k1, v1, k2, v2, k3, v3, secret string, oauth bool) {
		raw := "POST /v1/messages HTTP/1.1\r\nHost: proxy\r\nContent-Length: 0\r\n" +
			k1 + ": " + v1 + "\r\n" + k2 + ": " + v2 + "\r\n" + k3 + ": " + v3 + "\r\n\r\n"
		req, err := http.ReadRequest(bufio.NewReader(strings.NewReader(raw)))
		if err != nil {
			return // net/http would have answered 400
		}
		in := req.Header
		out := outboundHeader(in)
		for _, k := range []string{"Authorization", "X-Api-Key", "Host", "Content-Length", "Connection", "Keep-Alive", "Te", "Transfer-Encoding", "Upgrade", "Proxy-Authorization"} {
			if _, ok := out[k]; ok {
				t.Fatalf("%s passed upstream: %v", k, out)
			}
		}
		for _, v := range in.Values("Connection") {
			for _, f := range strings.Split(v, ",") {
				if n := http.CanonicalHeaderKey(strings.TrimSpace(f)); n != "" {
					if _, ok := out[n]; ok {
						t.Fatalf("%s, named by Connection, passed upstream", n)
					}
				}
			}
		}
		betaBefore := out.Values("Anthropic-Beta")
		kind := "apikey"
		if oauth {
			kind = "oauth"
		}
		setCredentials(out, kind, secret)
		if oauth {
			if got := out["Authorization"]; len(got) != 1 || got[0] != "Bearer "+secret {
				t.Fatalf("Authorization = %q", got)
			}
			if _, ok := out["X-Api-Key"]; ok {
				t.Fatal("an OAuth request carries x-api-key")
			}
			beta := out["Anthropic-Beta"]
			if len(beta) != 1 {
				t.Fatalf("anthropic-beta = %q", beta)
			}
			var flags []string
			for _, f := range strings.Split(beta[0], ",") {
				flags = append(flags, strings.TrimSpace(f))
			}
			if n := strings.Count(","+strings.Join(flags, ",")+",", ","+OAuthBeta+","); n != 1 {
				t.Fatalf("anthropic-beta %q holds %s %d times", beta[0], OAuthBeta, n)
			}
			for _, v := range betaBefore {
				for _, f := range strings.Split(v, ",") {
					if f = strings.TrimSpace(f); f != "" && !slices.Contains(flags, f) {
						t.Fatalf("client beta %q lost: %q -> %q", f, betaBefore, beta[0])
					}
				}
			}
		} else {
			if got := out["X-Api-Key"]; len(got) != 1 || got[0] != secret {
				t.Fatalf("X-Api-Key = %q", got)
			}
			if _, ok := out["Authorization"]; ok {
				t.Fatal("an API-key request carries authorization")
			}
		}

		red := redactHeader(in)
		for k, vs := range red {
			if credentialHeaders[k] {
				for _, v := range vs {
					if v != Redacted {
						t.Fatalf("captured %s: %q", k, v)
					}
				}
				continue
			}
			if !slices.Equal(vs, in[k]) {
				t.Fatalf("captured %s changed: %q -> %q", k, in[k], vs)
			}
		}
		if len(red) != len(in) {
			t.Fatalf("capture has %d headers, request %d", len(red), len(in))
		}
	})
}
