package proxy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"
)

// The cost of redacting one Claude Code-like 200 KB request body, the
// redactor of before (regular expressions, oldRedactor) against the one
// of now, in the same run:
//
//	go test -run '^$' -bench 'RedactBody|RedactHeaders' -benchmem ./proxy
//
// BenchmarkRedactBody/<body>/{old,new} give the time, MB/s and
// allocations of each; BenchmarkRedactBody/<body>/vs runs the two in turn,
// one body each, and reports the CPU time each took (the thread's, so
// that the ratio holds on a loaded machine), their ratio, and the ratio
// of the wall-clock times. The bodies:
//
//	plain:    code, prose and tool output (\n, \", \\, \u001b escapes), no secret
//	mentions: the same with the shapes' prefixes in the code (sk-ant-, cf_,
//	          "Bearer " + a variable): no secret, but candidates to check
//	secrets:  the same with ten secrets
//	plain+log.redact: plain, with one log.redact pattern besides the
//	          built-in ones (hunter[0-9]+): every view is made and scanned

// claudeCodeBody builds a /v1/messages request of about size bytes as
// Claude Code sends them deep into a session: a system prompt, tool
// definitions, and turns of text, tool calls and tool results holding
// source code and terminal output, encoded as Node does (no HTML
// escaping).
func claudeCodeBody(size int, extra func(i int) string) []byte {
	type block struct {
		Type      string         `json:"type"`
		Text      string         `json:"text,omitempty"`
		ID        string         `json:"id,omitempty"`
		Name      string         `json:"name,omitempty"`
		Input     map[string]any `json:"input,omitempty"`
		ToolUseID string         `json:"tool_use_id,omitempty"`
		Content   string         `json:"content,omitempty"`
	}
	type message struct {
		Role    string  `json:"role"`
		Content []block `json:"content"`
	}
	code := func(i int) string {
		var b strings.Builder
		for k := range 12 {
			fmt.Fprintf(&b, "func handle%d_%d(w http.ResponseWriter, r *http.Request) {\n\tif err := r.ParseForm(); err != nil {\n\t\thttp.Error(w, \"bad form: \\\"\"+err.Error()+\"\\\"\", 400)\n\t\treturn\n\t}\n\tfmt.Fprintf(w, \"%%s\\n\", r.Form.Get(\"q\")) // C:\\\\path\\\\%d\n}\n\n", i, k, k)
		}
		return b.String() + extra(i)
	}
	terminal := func(i int) string {
		return fmt.Sprintf("\x1b[32mok\x1b[0m  \tgithub.com/example/pkg%d\t0.%03ds\n\x1b[31mFAIL\x1b[0m\tgithub.com/example/other\t1.2s\n--- FAIL: TestThing (0.00s)\n    thing_test.go:42: got \"a\", want \"b\"\n", i, i%1000)
	}
	req := map[string]any{
		"model":      "claude-sonnet-4-5",
		"max_tokens": 32000,
		"stream":     true,
		"system":     []block{{Type: "text", Text: strings.Repeat("You are Claude Code, Anthropic's official CLI for Claude. Use the tools to help the user with software engineering tasks.\n", 40)}},
		"tools": []map[string]any{{
			"name":        "Bash",
			"description": "Executes a given bash command in a persistent shell session with optional timeout.\n\nUsage notes:\n  - The command argument is required.\n  - Always quote file paths that contain spaces with double quotes (e.g., cd \"path with spaces/file.txt\")\n",
			"input_schema": map[string]any{"type": "object", "properties": map[string]any{
				"command": map[string]any{"type": "string", "description": "The command to execute"},
				"timeout": map[string]any{"type": "number", "description": "Optional timeout in milliseconds (max 600000)"},
			}, "required": []string{"command"}},
		}},
	}
	var msgs []message
	for i := 0; ; i++ {
		msgs = append(msgs,
			message{Role: "user", Content: []block{{Type: "text", Text: fmt.Sprintf("Please fix the failing test in pkg%d and explain what was wrong.", i)}}},
			message{Role: "assistant", Content: []block{
				{Type: "text", Text: "I'll look at the handler first."},
				{Type: "tool_use", ID: fmt.Sprintf("toolu_%024d", i), Name: "Bash", Input: map[string]any{"command": fmt.Sprintf("cat pkg%d/handler.go && go test ./pkg%d", i, i)}},
			}},
			message{Role: "user", Content: []block{{Type: "tool_result", ToolUseID: fmt.Sprintf("toolu_%024d", i), Content: code(i) + terminal(i)}}},
		)
		req["messages"] = msgs
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(req); err != nil {
			panic(err)
		}
		if buf.Len() >= size {
			return bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
		}
	}
}

// benchBodies200K are the bodies BenchmarkRedactBody redacts.
func benchRedactBodies() []struct {
	name string
	body []byte
} {
	none := func(int) string { return "" }
	mentions := func(i int) string {
		return fmt.Sprintf("// keys look like sk-ant-api03-... and cf_...; send \"Authorization: Bearer \" + token%d\nconst prefix = \"sk-ant-\"\nvar clientPrefix = \"cf_\"\n", i)
	}
	secrets := func(i int) string {
		if i%4 != 0 {
			return ""
		}
		return fmt.Sprintf("export ANTHROPIC_API_KEY=sk-ant-api03-%040d\ncurl -H 'Authorization: Bearer tok%029d' -H \"x-claudeflare-key: cf_%043d\"\n", i, i, i)
	}
	return []struct {
		name string
		body []byte
	}{
		{"plain", claudeCodeBody(200<<10, none)},
		{"mentions", claudeCodeBody(200<<10, mentions)},
		{"secrets", claudeCodeBody(200<<10, secrets)},
	}
}

func BenchmarkRedactBody(b *testing.B) {
	bodies := benchRedactBodies()
	user := []*regexp.Regexp{regexp.MustCompile(`hunter[0-9]+`)}
	bodies = append(bodies, struct {
		name string
		body []byte
	}{"plain+log.redact", bodies[0].body})
	for _, c := range bodies {
		oldR, newR := newOldRedactor(nil), newRedactor(nil)
		if strings.HasSuffix(c.name, "+log.redact") {
			oldR, newR = newOldRedactor(user), newRedactor(user)
		}
		if got, want := newR.bytes(c.body), oldR.bytes(c.body); !bytes.Equal(got, want) {
			b.Fatalf("%s: the two redactors disagree", c.name)
		}
		b.Run(c.name+"/old", func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(c.body)))
			for b.Loop() {
				oldR.bytes(c.body)
			}
		})
		b.Run(c.name+"/new", func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(c.body)))
			for b.Loop() {
				newR.bytes(c.body)
			}
		})
		b.Run(c.name+"/vs", func(b *testing.B) {
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			var wOld, wNew, cOld, cNew time.Duration
			for b.Loop() {
				t0, c0 := time.Now(), threadCPU()
				oldR.bytes(c.body)
				t1, c1 := time.Now(), threadCPU()
				newR.bytes(c.body)
				t2, c2 := time.Now(), threadCPU()
				wOld, wNew = wOld+t1.Sub(t0), wNew+t2.Sub(t1)
				cOld, cNew = cOld+c1-c0, cNew+c2-c1
			}
			n := float64(b.N)
			b.ReportMetric(float64(cOld.Microseconds())/n, "old_cpu_us")
			b.ReportMetric(float64(cNew.Microseconds())/n, "new_cpu_us")
			b.ReportMetric(float64(cNew)/float64(max(cOld, 1)), "cpu_new/old")
			b.ReportMetric(float64(wNew)/float64(wOld), "wall_new/old")
			b.ReportMetric(0, "ns/op")
		})
	}
}

// BenchmarkRedactHeaders redacts the headers of a small request and its
// answer, as every captured request does, before and now.
func BenchmarkRedactHeaders(b *testing.B) {
	req := http.Header{
		"Accept": {"application/json"}, "Anthropic-Beta": {"claude-code-20250219,oauth-2025-04-20,interleaved-thinking-2025-05-14"},
		"Anthropic-Dangerous-Direct-Browser-Access": {"true"}, "Anthropic-Version": {"2023-06-01"},
		"Content-Type": {"application/json"}, "User-Agent": {"claude-cli/2.0.14 (external, cli)"},
		"X-App": {"cli"}, "X-Stainless-Arch": {"x64"}, "X-Stainless-Lang": {"js"}, "X-Stainless-Os": {"Linux"},
		"X-Stainless-Package-Version": {"0.60.0"}, "X-Stainless-Retry-Count": {"0"}, "X-Stainless-Runtime": {"node"},
		"X-Stainless-Runtime-Version": {"v22.17.0"}, "X-Stainless-Timeout": {"600"}, "Authorization": {"Bearer " + bearerTok},
	}
	resp := http.Header{
		"Content-Type": {"text/event-stream; charset=utf-8"}, "Request-Id": {"req_011CUdxrN5hJ7bd9TvCx8dEj"},
		"Anthropic-Organization-Id": {"5b4d2e0c-8a2e-4f0e-9a7b-3c1d2e3f4a5b"}, "Cache-Control": {"no-cache"},
		"Anthropic-Ratelimit-Unified-Status": {"allowed"}, "Anthropic-Ratelimit-Unified-5h-Utilization": {"0.42"},
		"Anthropic-Ratelimit-Unified-Reset": {"1764680400"}, "Via": {"1.1 google"}, "Cf-Ray": {"98a1b2c3d4e5f607-AMS"},
	}
	oldR, newR := newOldRedactor(nil), newRedactor(nil)
	b.Run("old", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			oldR.header(req)
			oldR.header(resp)
		}
	})
	b.Run("new", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			newR.header(req)
			newR.header(resp)
		}
	})
	b.Run("vs", func(b *testing.B) {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		var cOld, cNew time.Duration
		for b.Loop() {
			c0 := threadCPU()
			for range 100 {
				oldR.header(req)
				oldR.header(resp)
			}
			c1 := threadCPU()
			for range 100 {
				newR.header(req)
				newR.header(resp)
			}
			c2 := threadCPU()
			cOld, cNew = cOld+c1-c0, cNew+c2-c1
		}
		n := float64(b.N) * 100
		b.ReportMetric(float64(cOld.Nanoseconds())/n/1e3, "old_cpu_us")
		b.ReportMetric(float64(cNew.Nanoseconds())/n/1e3, "new_cpu_us")
		b.ReportMetric(float64(cNew)/float64(max(cOld, 1)), "cpu_new/old")
		b.ReportMetric(0, "ns/op")
	})
}
