package proxy

import (
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"testing"

	"github.com/claudeflare/claudeflare/internal/testutil"
)

// BenchmarkRedactRealBody redacts a 200 KB Claude Code-like body whose
// tool results hold real Go source (net/http from GOROOT, with %XX
// escapes and "Bearer" in its text), as the process benchmarks send it.
func BenchmarkRedactRealBody(b *testing.B) {
	var src []byte
	for _, f := range []string{"server.go", "transport.go", "request.go"} {
		b, _ := os.ReadFile(filepath.Join(runtime.GOROOT(), "src", "net", "http", f))
		src = append(src, b...)
	}
	if len(src) < 64<<10 {
		b.Skip("no Go source in GOROOT")
	}
	const piece = 6 << 10
	body := testutil.ClaudeCodeBody(200<<10, func(i int) string {
		off := (i * piece) % (len(src) - piece)
		return string(src[off : off+piece])
	})
	r := newRedactor(nil)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		r.bytes(body)
	}
}

// unescapePercentByByte is unescapePercent as it was, one byte at a
// time: the reference the run-copying version is checked against.
func unescapePercentByByte(b []byte) ([]byte, []int32) {
	out := make([]byte, 0, len(b))
	pos := make([]int32, 0, len(b)+1)
	for j := 0; j < len(b); {
		if b[j] == '%' && j+2 < len(b) {
			if h, ok := hex4([]byte{'0', '0', b[j+1], b[j+2]}); ok {
				out, pos = append(out, byte(h)), append(pos, int32(j))
				j += 3
				continue
			}
		}
		out, pos = append(out, b[j]), append(pos, int32(j))
		j++
	}
	return out, append(pos, int32(len(b)))
}

// TestUnescapePercentAsBefore: the percent view, which copies the runs
// between escapes at once into reused buffers, gives what it gave one
// byte at a time, the text and each byte's origin.
func TestUnescapePercentAsBefore(t *testing.T) {
	pieces := []string{"%", "%2", "%2D", "%2d", "%zz", "%%41", "a", "sk-ant-", "bearer ", "%20", "%E2%84%AA", "xyz", "%0"}
	var out []byte
	var pos []int32
	for n := range 4000 {
		var b []byte
		for k := range 1 + n%23 {
			b = append(b, pieces[(n*7+k*k*3+k)%len(pieces)]...)
		}
		wantText, wantPos := unescapePercentByByte(b)
		out, pos = unescapePercent(out[:0], pos[:0], b)
		if string(out) != string(wantText) || !slices.Equal(pos, wantPos) {
			t.Fatalf("%q: got %q %v, want %q %v", b, out, pos, wantText, wantPos)
		}
	}
}
