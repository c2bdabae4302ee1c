package commands_test

import (
	"bufio"
	"context"
	"os"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/claudeflare/claudeflare/store"
)

// hostileRow is a logged request whose strings try to drive the terminal:
// clear the screen, return the cursor, fake a row, set the window title,
// flip the text direction.
func hostileRow(id string) store.Request {
	return store.Request{
		ID: id, TS: store.ToMS(time.Now()), Method: "POST", Status: 502,
		Path:    "/v1/x\x1b[2J\r\n",
		Model:   "m\x1b]0;pwned\x07",
		Account: "work\x1b[2J",
		Client:  "ua\x1b[2J\r\nFAKE\t",
		Error:   "upstream\r\n2026-01-01 FAKE ROW \x1b[31mred\u202e\\x1b \xff",
	}
}

// assertNoControl fails if out holds a byte that drives a terminal: a C0
// control other than the newline ending each line, DEL, a C1 control, or
// a bidi override; and checks that out has lines lines.
func assertNoControl(t *testing.T, what, out string, lines int) {
	t.Helper()
	for i := 0; i < len(out); {
		r, size := utf8.DecodeRuneInString(out[i:])
		if r < 0x20 && r != '\n' || r == 0x7f || r >= 0x80 && r < 0xa0 || r == '\u202e' || r == utf8.RuneError && size == 1 {
			t.Fatalf("%s: raw %U at byte %d:\n%q", what, r, i, out)
		}
		i += size
	}
	if n := strings.Count(out, "\n"); n != lines {
		t.Fatalf("%s: %d lines, want %d:\n%s", what, n, lines, out)
	}
}

// TestHumanOutputEscapesLoggedStrings lists a log row holding control
// characters with the real CLI: every table shows them escaped, never raw.
func TestHumanOutputEscapesLoggedStrings(t *testing.T) {
	c := newCLI(t)
	c.MustRun("", "init")
	db := c.openLog()
	if err := store.InsertRequests(context.Background(), db, []store.Request{hostileRow("row-1")}, nil); err != nil {
		t.Fatal(err)
	}

	out := c.MustRun("", "requests", "list", "--wide")
	assertNoControl(t, "requests list", out, 2)
	for _, want := range []string{`/v1/x\x1b[2J\r\n`, `m\x1b]0;pwned\a`, `work\x1b[2J`, `ua\x1b[2J\r\nFA…`,
		`upstream\r\n2026-01-01 FAKE ROW \x1b[31mred\u202e\\x1b \xff`} {
		if !strings.Contains(out, want) {
			t.Errorf("requests list does not show %s:\n%s", want, out)
		}
	}
	// --json is JSON-escaped as it was.
	js := c.MustRun("", "requests", "list", "--json")
	if !strings.Contains(js, `"path":"/v1/x\u001b[2J\r\n"`) {
		t.Errorf("requests list --json: %s", js)
	}

	out = c.MustRun("", "stats")
	assertNoControl(t, "stats", out, 3)
	if !strings.Contains(out, `work\x1b[2J`) {
		t.Errorf("stats:\n%s", out)
	}

	// --follow prints new rows through the same table.
	cmd := c.Cmd("", "requests", "list", "--follow", "--wide", "--interval", "20ms")
	pipe, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	lines := make(chan string)
	go func() {
		rd := bufio.NewReader(pipe)
		for {
			l, err := rd.ReadString('\n')
			if l != "" {
				lines <- l
			}
			if err != nil {
				close(lines)
				return
			}
		}
	}()
	var followed strings.Builder
	next := func() string {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("follow ended:\n%s", followed.String())
			}
			followed.WriteString(l)
			return l
		case <-time.After(10 * time.Second):
			t.Fatalf("follow printed nothing more:\n%s", followed.String())
		}
		return ""
	}
	next() // header
	next() // row-1
	if err := store.InsertRequests(context.Background(), db, []store.Request{hostileRow("row-2")}, nil); err != nil {
		t.Fatal(err)
	}
	if l := next(); !strings.Contains(l, "row-2") {
		t.Fatalf("followed %q", l)
	}
	cmd.Process.Signal(os.Interrupt)
	assertNoControl(t, "requests list --follow", followed.String(), 3)
}
