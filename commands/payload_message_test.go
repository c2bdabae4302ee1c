//go:build linux

package commands_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/claudeflare/claudeflare/internal/fakeapi"
)

// TestPayloadExportMessageUsage runs the README's
// `payload export --since 1h | jq '.response.message.usage'` on a real
// daemon's log of streamed and plain answers: every line's usage is what
// the fake API sent, the streamed ones assembled from message_start and
// message_delta, and the text is the text it sent.
func TestPayloadExportMessageUsage(t *testing.T) {
	c := newCLI(t)
	c.MustRun("", "init")
	c.MustRun(c.fake.NewOAuthAccount("work"), "accounts", "add", "work", "--refresh-token-stdin")
	u := fakeapi.Usage{InputTokens: 1234, OutputTokens: 567, CacheReadInputTokens: 89, CacheCreationInputTokens: 10}
	c.fake.SetUsage(u)
	d := c.startDaemon()
	for i := range 4 {
		send(t, d.url, i%2 == 1, fmt.Sprintf("hello %d", i))
	}
	c.waitRows(4)
	out, errs, code := c.Run("", "payload", "export", "--since", "1h")
	if code != 0 || errs != "" {
		t.Fatalf("payload export: exit %d, stderr %q (a script's stderr stays empty)", code, errs)
	}
	want := fmt.Sprintf(`{"input_tokens":%d,"output_tokens":%d,"cache_read_input_tokens":%d,"cache_creation_input_tokens":%d}`,
		u.InputTokens, u.OutputTokens, u.CacheReadInputTokens, u.CacheCreationInputTokens)
	var wantUsage any
	json.Unmarshal([]byte(want), &wantUsage)

	// The jq expression, in Go: .response.message.usage of every line.
	rows := jsonLines(t, out)
	if len(rows) != 4 {
		t.Fatalf("export: %d lines, want 4", len(rows))
	}
	for i, r := range rows {
		msg, _ := r["response"].(map[string]any)["message"].(map[string]any)
		if !reflect.DeepEqual(msg["usage"], wantUsage) {
			t.Errorf("row %d (streamed %v): .response.message.usage = %v, want %s", i, i%2 == 1, msg["usage"], want)
		}
		content, _ := msg["content"].([]any)
		if len(content) != 1 || content[0].(map[string]any)["text"] != c.fake.ResponseText() || msg["stop_reason"] != "end_turn" {
			t.Errorf("row %d: message %v", i, msg)
		}
	}

	// And with jq itself where it is installed: the README's exact line.
	jq, err := exec.LookPath("jq")
	if err != nil {
		t.Log("jq not installed: the README line checked in Go only")
		return
	}
	cmd := exec.Command(jq, "-c", ".response.message.usage")
	cmd.Stdin = strings.NewReader(out)
	got, err := cmd.Output()
	if err != nil {
		t.Fatalf("jq: %v", err)
	}
	lines := strings.Split(strings.TrimSpace(string(got)), "\n")
	if len(lines) != 4 {
		t.Fatalf("jq printed %q", got)
	}
	for i, l := range lines {
		var g any
		if json.Unmarshal([]byte(l), &g) != nil || !reflect.DeepEqual(g, wantUsage) {
			t.Errorf("jq line %d: %s, want %s", i, l, want)
		}
	}
}

// openPTY opens a pseudo-terminal: the master to read what is written,
// the slave to hand to a process as its terminal.
func openPTY(t *testing.T) (master, slave *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminal: %v", err)
	}
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		m.Close()
		t.Skipf("unlock pty: %v", err)
	}
	n, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		m.Close()
		t.Skipf("pty number: %v", err)
	}
	s, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		m.Close()
		t.Skipf("open pty: %v", err)
	}
	t.Cleanup(func() { m.Close() })
	return m, s
}

// TestPayloadExportSummaryOnATerminal: with stderr a terminal, export to a
// file says how many requests went where; in a script it says nothing.
func TestPayloadExportSummaryOnATerminal(t *testing.T) {
	c := newCLI(t)
	c.MustRun("", "init")
	c.MustRun(c.fake.NewOAuthAccount("work"), "accounts", "add", "work", "--refresh-token-stdin")
	d := c.startDaemon()
	for i := range 3 {
		send(t, d.url, i == 1, "hi")
	}
	c.waitRows(3)
	file := filepath.Join(c.dir, "export.ndjson")

	run := func(args ...string) string {
		t.Helper()
		master, slave := openPTY(t)
		cmd := c.Cmd("", args...)
		var stdout bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, slave
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		slave.Close() // the child holds its own copy; EOF (EIO) once it exits
		var term bytes.Buffer
		io.Copy(&term, master)
		if err := cmd.Wait(); err != nil {
			t.Fatalf("%v: %v, terminal %q", args, err, term.String())
		}
		return term.String()
	}
	got := run("payload", "export", "--output", file)
	if !strings.Contains(got, "claudeflare: 3 requests exported to "+file) {
		t.Errorf("terminal shows %q, want the summary", got)
	}
	if b, err := os.ReadFile(file); err != nil || bytes.Count(b, []byte("\n")) != 3 {
		t.Errorf("%s: %d lines (%v)", file, bytes.Count(b, []byte("\n")), err)
	}
	if got := run("--quiet", "payload", "export", "--output", file); strings.Contains(got, "exported") {
		t.Errorf("--quiet on a terminal shows %q", got)
	}
	// In a script (stderr not a terminal): nothing but the lines.
	if o, errs, code := c.Run("", "payload", "export", "--output", file); code != 0 || o != "" || errs != "" {
		t.Errorf("script: exit %d, stdout %q, stderr %q", code, o, errs)
	}
}
