package proxy

import (
	"bytes"
	"fmt"
	"net/http"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/claudeflare/claudeflare/internal/testutil"
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

// claudeCodeBody is the Claude Code-like request body of about size
// bytes the benchmarks share (testutil.ClaudeCodeBody).
func claudeCodeBody(size int, extra func(i int) string) []byte {
	return testutil.ClaudeCodeBody(size, extra)
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
