package proxy

import (
	"bytes"
	"compress/flate"
	"compress/gzip"
	"compress/zlib"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/claudeflare/claudeflare/config"
)

// Secrets of every built-in kind, as a client might put them in a request.
const (
	antKey    = "sk-ant-api03-" + "RAWSECRET0123456789abcdefghijklmnopqrstuv"
	clientKey = "cf_" + "CLIENTKEYSECRET0123456789abcdefghijklmnopqr"
	bearerTok = "oauthSECRET0123456789abcdef/ghij+klm="
	// escAnt is an Anthropic key as JSON may carry it: every '-' escaped.
	escAnt     = `sk\u002dant\u002dapi03\u002d` + "ESCSECRET0123456789abcdefghijklmnop"
	escAntText = "ESCSECRET0123456789abcdefghijklmnop"
)

func gz(t *testing.T, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := gzip.NewWriter(&buf)
	w.Write(b)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func zl(t *testing.T, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := zlib.NewWriter(&buf)
	w.Write(b)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func rawDeflate(t *testing.T, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, _ := flate.NewWriter(&buf, flate.BestSpeed)
	w.Write(b)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func testRecorder(t *testing.T, maxBytes int64, extra ...string) *recorder {
	t.Helper()
	var res []*regexp.Regexp
	for _, p := range extra {
		res = append(res, regexp.MustCompile(p))
	}
	return newRecorder(nil, nil, slog.New(slog.NewTextHandler(io.Discard, nil)), time.Now, recorderOptions{
		Payloads: "full", MaxBytes: maxBytes, Redact: res,
	})
}

// secretsIn lists the secrets (or the distinctive part of an escaped one)
// found in b.
func secretsIn(b []byte) []string {
	var found []string
	for _, s := range []string{"RAWSECRET", "CLIENTKEYSECRET", "oauthSECRET", escAntText, "hunter", "PLAINBR", "PCTSECRET"} {
		if bytes.Contains(b, []byte(s)) {
			found = append(found, s)
		}
	}
	return found
}

// TestRedactBodyEncodings stores a body holding every kind of secret in
// each content coding: what is stored is the decoded body, redacted, or a
// note when the coding cannot be decoded; never a secret.
func TestRedactBodyEncodings(t *testing.T) {
	plain := []byte(`{"model":"claude-sonnet-4-5","messages":[{"role":"user","content":"keys: ` + antKey + ` ` + clientKey +
		` ` + escAnt + ` Authorization: Bearer ` + strings.ReplaceAll(bearerTok, "/", `\/`) + `"}]}`)
	if got := secretsIn(plain); len(got) != 4 {
		t.Fatalf("the test body holds %v", got)
	}
	r := testRecorder(t, 1<<20)
	cases := []struct {
		name     string
		coding   []string
		body     []byte
		capCut   bool
		want     string // "" = the redacted plain body
		wantTrun bool
	}{
		{name: "identity", body: plain},
		{name: "identity named", coding: []string{"identity"}, body: plain},
		{name: "gzip", coding: []string{"gzip"}, body: gz(t, plain)},
		{name: "x-gzip upper case", coding: []string{"X-GZIP"}, body: gz(t, plain)},
		{name: "gzip unlabelled", body: gz(t, plain)},
		{name: "deflate (zlib)", coding: []string{"deflate"}, body: zl(t, plain)},
		{name: "deflate (raw)", coding: []string{"deflate"}, body: rawDeflate(t, plain)},
		{name: "deflate then gzip", coding: []string{"deflate, gzip"}, body: gz(t, zl(t, plain))},
		{name: "two header lines", coding: []string{"deflate", "gzip"}, body: gz(t, zl(t, plain))},
		{name: "gzip captured in part", coding: []string{"gzip"}, body: gz(t, plain)[:len(gz(t, plain))-12], capCut: true, wantTrun: true},
		{name: "br", coding: []string{"br"}, body: []byte("PLAINBR " + antKey), want: "[REDACTED: undecodable br body]"},
		{name: "zstd", coding: []string{"zstd"}, body: []byte("PLAINBR " + antKey), want: "[REDACTED: undecodable zstd body]"},
		{name: "zstd unlabelled", body: append([]byte("\x28\xb5\x2f\xfd"), "PLAINBR "+antKey...), want: "[REDACTED: undecodable zstd body]"},
		{name: "gzip then br", coding: []string{"gzip, br"}, body: gz(t, plain), want: "[REDACTED: undecodable br body]"},
		{name: "corrupt gzip", coding: []string{"gzip"}, body: []byte("PLAINBR " + antKey), want: "[REDACTED: undecodable gzip body]"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := http.Header{"Content-Encoding": c.coding}
			if c.coding == nil {
				h = http.Header{}
			}
			got, trunc := r.body(c.body, h, c.capCut)
			if s := secretsIn(got); len(s) > 0 {
				t.Fatalf("stored body holds %v: %q", s, got)
			}
			if c.want != "" {
				if string(got) != c.want {
					t.Fatalf("stored %q, want %q", got, c.want)
				}
				return
			}
			if trunc != c.wantTrun {
				t.Errorf("truncated = %v", trunc)
			}
			if !bytes.HasPrefix(got, []byte(`{"model":"claude-sonnet-4-5","messages":[{"role":"user","content":"keys: [REDACTED] [REDACTED] [REDACTED] Authorization: [REDACTED]`)) {
				t.Fatalf("stored %q", got)
			}
			if !c.wantTrun && !json.Valid(got) {
				t.Fatalf("redaction broke the JSON: %s", got)
			}
		})
	}
}

// TestRedactJSONEscapes finds secrets however JSON escapes them, replaces
// them with the escaped bytes they came from, and leaves other escapes be.
func TestRedactJSONEscapes(t *testing.T) {
	r := testRecorder(t, 1<<20, `hunter[0-9]+`, `(?i)passw[o0]rd=\S+`, `(?i)token=\w+`).red
	for _, c := range []struct{ in, want string }{
		{`"` + escAnt + `"`, `"[REDACTED]"`},
		{`"\u0073k-ant-api03-` + escAntText + `"`, `"[REDACTED]"`},
		{`"sk-\u0061nt-api03-` + escAntText + `\n"`, `"[REDACTED]\n"`},
		{`"cf\u005f` + clientKey[3:] + `"`, `"[REDACTED]"`},
		{`"cf_CLIENTKEYSECRET\u0030123456789abcdefghijklmnopqr"`, `"[REDACTED]"`},
		{`"Bearer ` + strings.ReplaceAll(bearerTok, "/", `\/`) + `"`, `"[REDACTED]"`},
		{`"bearer\u0020` + bearerTok + `"`, `"[REDACTED]"`},
		// JSON text inside a JSON string: escaped twice.
		{`{"input":"{\"key\":\"sk\\u002dant-` + escAntText + `\"}"}`, `{"input":"{\"key\":\"[REDACTED]\"}"}`},
		// log.redact patterns are matched through escapes too.
		{`"pw hunter\u00342 and hunter7"`, `"pw [REDACTED] and [REDACTED]"`},
		// Case-insensitive patterns, fast path (a literal prefix) or not.
		{`"x BeArEr\t` + bearerTok + ` y"`, `"x [REDACTED] y"`},
		{`"PassW0rd=abc TOKEN=xyz"`, `"[REDACTED] [REDACTED]"`},
		{`"PassW0rd\u003dabc tok\u0065n=xyz"`, `"[REDACTED] [REDACTED]"`},
		// Surrogate pairs and other escapes around a secret.
		{`"\ud83d\ude00 sk\u002dant-` + escAntText + ` \ud83d"`, `"\ud83d\ude00 [REDACTED] \ud83d"`},
		// Nothing to redact: bytes kept as they are.
		{`"a\nb \u00e9 \/ \\ \" sk-ant-short \x"`, `"a\nb \u00e9 \/ \\ \" sk-ant-short \x"`},
		// Cut short in the middle of an escape.
		{`"sk\u002dant-` + escAntText + `\u00`, `"[REDACTED]\u00`},
	} {
		got := string(r.bytes([]byte(c.in)))
		if got != c.want {
			t.Errorf("redact %s\n got %s\nwant %s", c.in, got, c.want)
		}
	}
	// Paths, header values and other short strings: %XX escapes too.
	for in, want := range map[string]string{
		"/v1/x?k=sk%2Dant%2dapi03%2DPCTSECRET0123456789&b=1": "/v1/x?k=[REDACTED]&b=1",
		"/v1/x?k=%63f_PCTSECRET0123456789abcdef%":            "/v1/x?k=[REDACTED]%",
		"/v1/x?q=100%25%zz%":                                 "/v1/x?q=100%25%zz%",
	} {
		if got := r.string(in); got != want {
			t.Errorf("redact %s\n got %s\nwant %s", in, got, want)
		}
	}
	// SSE: JSON in data lines.
	sse := "event: content_block_delta\ndata: {\"delta\":{\"text\":\"" + escAnt + "\"}}\n\n"
	if got := r.bytes([]byte(sse)); bytes.Contains(got, []byte(escAntText)) {
		t.Errorf("SSE kept the key: %s", got)
	}
}

// TestRedactStraddlingTheCap redacts a secret that starts before
// log.payload_max_bytes and ends after it, in a request and in a
// response body, rather than storing its first part.
func TestRedactStraddlingTheCap(t *testing.T) {
	r := testRecorder(t, 64)
	body := []byte(strings.Repeat("x", 50) + antKey + " " + strings.Repeat("y", 100))
	got, trunc := r.body(body, http.Header{}, false)
	if string(got) != strings.Repeat("x", 50)+"[REDACTED] "+strings.Repeat("y", 3) || !trunc {
		t.Fatalf("request body %q truncated=%v", got, trunc)
	}
	cb := getCapBuf(64)
	cb.Write(body)
	got, trunc = r.body(cb.b, http.Header{}, cb.truncated)
	if bytes.Contains(got, []byte("sk-ant-api")) || !trunc || len(got) != 64 {
		t.Fatalf("response body %q truncated=%v", got, trunc)
	}
}

// TestRedactionThroughTheProxy sends secrets through the proxy in a gzip
// body, JSON-escaped, in a header and in the query string, and reads back
// what the request log stored: none of them, in the sealed payload or in
// the request row, and nothing of them in the log's files.
func TestRedactionThroughTheProxy(t *testing.T) {
	h := newHarness(t, withConfig(func(c *config.Config) {
		c.Log.Redact = []string{`hunter[0-9]+`} // replaces the defaults: the built-ins still apply
		*c = withRedactors(t, *c)
	}))
	h.addOAuth("work", 0, false)
	h.reload()

	body := `{"model":"claude-sonnet-4-5","max_tokens":64,"messages":[{"role":"user","content":"` +
		antKey + " " + clientKey + " " + escAnt + ` hunter\u00342"}]}`
	rep := h.do(context.Background(), http.MethodPost, "/v1/messages?beta=true", string(gz(t, []byte(body))),
		http.Header{"Content-Encoding": {"gzip"}, "X-Note": {"Bearer " + bearerTok}, "X-Claudeflare-Key": {"RAWSECRET-relay-key"}})
	if rep.err != nil || rep.status == 0 {
		t.Fatalf("gzip request: %v", rep.err)
	}
	gzID := rep.header.Get("X-Claudeflare-Request-Id")

	// The fake echoes the query in its answer: secrets in the row's path
	// and in the response body.
	rep = h.do(context.Background(), http.MethodPost, "/v1/echo?key="+clientKey+"&ant="+antKey+"&pct=sk%2Dant%2Dapi03%2DPCTSECRET0123456789", msgBody, nil)
	if rep.status != 200 || !strings.Contains(string(rep.body), clientKey) {
		t.Fatalf("echo: %d %s", rep.status, rep.body)
	}
	echoID := rep.header.Get("X-Claudeflare-Request-Id")

	// A model name is the client's text, which the upstream echoes.
	if rep := h.post(strings.Replace(msgBody, "claude-sonnet-4-5", "claude "+antKey, 1)); rep.status != 200 {
		t.Fatalf("model: %d %s", rep.status, rep.body)
	}

	rep = h.do(context.Background(), http.MethodPost, "/v1/messages", "PLAINBR "+antKey, http.Header{"Content-Encoding": {"br"}})
	brID := rep.header.Get("X-Claudeflare-Request-Id")

	c := openCapture(t, h, gzID)
	if s := secretsIn(c.Request.Body); len(s) > 0 {
		t.Fatalf("stored gzip request body holds %v: %s", s, c.Request.Body)
	}
	if !strings.Contains(string(c.Request.Body), `"content":"[REDACTED] [REDACTED] [REDACTED] [REDACTED]"`) {
		t.Fatalf("stored gzip request body not decoded and redacted: %q", c.Request.Body)
	}
	if c.Request.Headers["X-Note"][0] != Redacted || c.Request.Headers["X-Claudeflare-Key"][0] != Redacted {
		t.Fatalf("headers stored as %q", c.Request.Headers)
	}
	c = openCapture(t, h, echoID)
	if s := secretsIn(append([]byte(c.Request.Path), c.Response.Body...)); len(s) > 0 || len(c.Response.Body) == 0 {
		t.Fatalf("stored echo holds %v: path %q, response %s", s, c.Request.Path, c.Response.Body)
	}
	c = openCapture(t, h, brID)
	if string(c.Request.Body) != "[REDACTED: undecodable br body]" {
		t.Fatalf("stored br request body %q", c.Request.Body)
	}
	for _, row := range h.rows() {
		if s := secretsIn([]byte(row.Path + row.Model + row.Client + row.Error)); len(s) > 0 {
			t.Fatalf("request row holds %v: %+v", s, row)
		}
	}
	if p := h.lastRow().Path; p != "/v1/messages" {
		t.Fatalf("path %q", p)
	}
	// The sealed payloads and the rows, on disk.
	files, _ := filepath.Glob(filepath.Join(h.dir, "log.db*"))
	if len(files) == 0 {
		t.Fatal("no log.db")
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if s := secretsIn(b); len(s) > 0 {
			t.Fatalf("%s holds %v", f, s)
		}
	}
}

// BenchmarkRedact redacts a 256 KiB request body like Claude Code's (JSON
// with many escapes), with the escape rounds, against the patterns alone.
func BenchmarkRedact(b *testing.B) {
	line := `{"type":"text","text":"func main() {\n\tfmt.Printf(\"hello %d \\\\ world\", 1)\n}\n"},`
	body := []byte(`{"model":"claude-sonnet-4-5","messages":[` + strings.Repeat(line, 256<<10/len(line)) + `{}]}`)
	r := newRedactor(nil)
	b.Run("redactor", func(b *testing.B) {
		b.SetBytes(int64(len(body)))
		for b.Loop() {
			r.bytes(body)
		}
	})
	b.Run("patterns-only", func(b *testing.B) {
		b.SetBytes(int64(len(body)))
		for b.Loop() {
			r.findAll(body, func(int, int) {})
		}
	})
}

// FuzzRedact hides a key in arbitrary JSON text, each of its characters
// escaped or not as mask says, possibly escaped twice: the redacted text
// never holds the key once unescaped, and JSON stays JSON.
func FuzzRedact(f *testing.F) {
	f.Add("before", "after", uint64(0), false)
	f.Add("x\\\"\u2028\U0001F600", "\\", uint64(0x5555), true)
	f.Add("sk-ant-", "ZZZZ", uint64(1<<40-1), false)
	f.Add("\xff\x00", "\"}", uint64(8), true)
	r := newRedactor(nil)
	const key = "sk-ant-api03-FUZZSECRET0123456789"
	f.Fuzz(func(t *testing.T, before, after string, mask uint64, twice bool) {
		var esc strings.Builder
		for i, c := range []byte(key) {
			if mask>>(i%64)&1 == 1 {
				fmt.Fprintf(&esc, `\u%04x`, c)
			} else {
				esc.WriteByte(c)
			}
		}
		q := func(s string) string { b, _ := json.Marshal(s); return string(b[1 : len(b)-1]) }
		// The string's content: before, the key, after.
		content := q(before) + esc.String() + q(after)
		doc := `{"a":"` + content + `"}`
		if twice {
			// JSON text holding that string, as the content of a string.
			doc = `{"b":"` + q(doc) + `"}`
		}
		if !json.Valid([]byte(doc)) {
			t.Fatalf("bad test document %s", doc)
		}
		out := r.bytes([]byte(doc))
		if !json.Valid(out) {
			t.Fatalf("redaction broke the JSON:\n in %s\nout %s", doc, out)
		}
		var v struct{ A, B string }
		json.Unmarshal(out, &v)
		if twice {
			var in struct{ A string }
			if err := json.Unmarshal([]byte(v.B), &in); err == nil {
				v.A = in.A
			} else {
				v.A = v.B
			}
		}
		if strings.Contains(v.A, "FUZZSECRET0123456789") || strings.Contains(string(out), "FUZZSECRET0123456789") {
			t.Fatalf("key kept:\n in %s\nout %s", doc, out)
		}
	})
}

// TestRedactorPatterns: the defaults of log.redact are the built-in
// shapes, which are not run again as patterns; a case-insensitive
// pattern with a literal prefix takes the fast path, the literal found in
// a lower-cased copy.
func TestRedactorPatterns(t *testing.T) {
	cfg := config.Default()
	if r := newRedactor(cfg.Redactors()); len(r.pats) != 0 {
		t.Fatalf("%d patterns besides the built-in shapes, want 0", len(r.pats))
	}
	r := newRedactor(append(cfg.Redactors(), regexp.MustCompile(`(?i)bearer\s+\S+`)))
	if len(r.pats) != 1 || string(r.pats[0].fold) != "bearer" {
		t.Fatalf("patterns %+v, want one with the fast path", r.pats)
	}
	for expr, want := range map[string]string{`(?i)token=\w+`: "", `(?i)(?:api)key`: "", `(?i)PASSWD:\s`: "", `(?i)bearer\s`: "bearer", `bearer`: "", `(?i)ab`: ""} {
		if got := foldPrefix(expr); got != want {
			t.Errorf("foldPrefix(%s) = %q, want %q", expr, got, want)
		}
	}
}
