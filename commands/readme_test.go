//go:build linux

package commands_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"filippo.io/age"

	"github.com/claudeflare/claudeflare/internal/testutil"
)

// TestReadmeExamples runs the README's shell examples, so they cannot rot.
//
// The rule. Every fenced block of README.md whose info string is empty,
// "sh", "shell", "bash" or "console" is an example; other languages (toml,
// json, ...) are not run. Each line of an example (backslash continuations
// joined, a leading "$ " prompt dropped, blank and comment-only lines
// ignored) is a command, and must be one of:
//
//   - `claudeflare ...` or `./claudeflare ...`: run by bash (-o pipefail, so
//     a failing claudeflare in a pipe fails the line) with `claudeflare` on
//     PATH being the real binary, in a work dir holding the files the
//     examples read (refresh-token.txt, api-key.txt, new-token.txt,
//     setup-token.txt, each a live credential of the fake Anthropic API);
//   - `claudeflare daemon` (or ./claudeflare daemon): the test starts the
//     daemon itself on a free port and waits for its /health;
//   - `curl ...`: run against that daemon, localhost:8080 and
//     127.0.0.1:8080 replaced by its address;
//   - a crontab line (five time fields, then one of the above): its command
//     runs, and must print nothing, since cron mails what a job prints.
//
// Every line must exit 0 (no example shows an error), and a line piped into
// jq must print no bare `null` (a field the output no longer has). Lines
// run in README order on one data dir, against a real daemon whose upstream
// and token endpoint are the fake API. Placeholders are filled in: `01JD...`
// with a logged request id, `age1...` with a fresh recipient, $KEY with a
// viewer key created when a line first needs it.
//
// A block that cannot run here is marked in the README, on the line
// before its fence:
//
//	<!-- test: skip (reason) -->             the whole block
//	<!-- test: skip-lines 2,3 (reason) -->   those commands of the block
//
// Any other line (go, sudo, export, ssh, a cron line, ...) fails the test,
// so a new example cannot slip in untested.
func TestReadmeExamples(t *testing.T) {
	for _, tool := range []string{"bash", "curl", "jq"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed: the README examples need it", tool)
		}
	}
	blocks := readmeBlocks(t, "../README.md")
	r := newReadmeRun(t)
	ran := 0
	for _, b := range blocks {
		if b.skip != "" {
			t.Logf("README line %d: block skipped: %s", b.line, b.skip)
			continue
		}
		for i, cmd := range b.cmds {
			if reason, ok := b.skipLines[i+1]; ok {
				t.Logf("README line %d: %q skipped: %s", b.line, cmd, reason)
				continue
			}
			r.run(b.line, cmd)
			ran++
		}
	}
	if ran < 20 {
		t.Errorf("only %d README commands ran: did the block markers or the fences change?", ran)
	}
}

type readmeBlock struct {
	line      int    // the opening fence's line number
	skip      string // why the whole block is skipped, or ""
	skipLines map[int]string
	cmds      []string
}

var (
	skipRE      = regexp.MustCompile(`^<!-- test: skip \((.+)\) -->$`)
	skipLinesRE = regexp.MustCompile(`^<!-- test: skip-lines ([0-9,]+) \((.+)\) -->$`)
	runTags     = map[string]bool{"": true, "sh": true, "shell": true, "bash": true, "console": true}
)

// readmeBlocks reads the shell examples of the README and their markers.
func readmeBlocks(t *testing.T, path string) []readmeBlock {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(data), "\n")
	var blocks []readmeBlock
	for i := 0; i < len(lines); i++ {
		tag, ok := strings.CutPrefix(lines[i], "```")
		if !ok {
			continue
		}
		start := i
		var body []string
		for i++; i < len(lines) && !strings.HasPrefix(lines[i], "```"); i++ {
			body = append(body, lines[i])
		}
		if !runTags[strings.TrimSpace(tag)] {
			continue
		}
		b := readmeBlock{line: start + 1, skipLines: map[int]string{}, cmds: commandLines(body)}
		if start > 0 {
			prev := strings.TrimSpace(lines[start-1])
			if m := skipRE.FindStringSubmatch(prev); m != nil {
				b.skip = m[1]
			} else if m := skipLinesRE.FindStringSubmatch(prev); m != nil {
				for _, n := range strings.Split(m[1], ",") {
					k, _ := strconv.Atoi(n)
					if k < 1 || k > len(b.cmds) {
						t.Fatalf("README line %d: skip-lines names command %s; the block has %d", start, n, len(b.cmds))
					}
					b.skipLines[k] = m[2]
				}
			} else if strings.HasPrefix(prev, "<!-- test:") {
				t.Fatalf("README line %d: marker %q is neither `<!-- test: skip (reason) -->` nor `<!-- test: skip-lines N,M (reason) -->`", start, prev)
			}
		}
		blocks = append(blocks, b)
	}
	if len(blocks) == 0 {
		t.Fatal("README.md has no shell examples: did the fences change?")
	}
	return blocks
}

// commandLines joins continuations and drops prompts, blanks and comments.
func commandLines(body []string) []string {
	var cmds []string
	cur := ""
	for _, l := range body {
		if s, ok := strings.CutSuffix(l, `\`); ok {
			cur += s
			continue
		}
		l = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(cur+l), "$ "))
		cur = ""
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		cmds = append(cmds, l)
	}
	return cmds
}

// readmeRun is the state the README's commands share, in order.
type readmeRun struct {
	c        *runner
	work     string   // the shell's working directory
	env      []string // the shell's environment
	d        *daemon
	host     string // the daemon's host:port
	rows     []map[string]any
	keyAdded bool
}

func newReadmeRun(t *testing.T) *readmeRun {
	c := newCLI(t)
	r := &readmeRun{c: c, work: filepath.Join(c.dir, "work")}
	bin := filepath.Join(c.dir, "bin")
	for _, d := range []string{r.work, bin} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	// The real binary: this test binary, which runs the CLI when
	// CLAUDEFLARE_TEST_AS_BINARY=1 (TestMain), as claudeflare on PATH and
	// as ./claudeflare in the work dir.
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for _, link := range []string{filepath.Join(bin, "claudeflare"), filepath.Join(r.work, "claudeflare")} {
		if err := os.Symlink(self, link); err != nil {
			t.Fatal(err)
		}
	}
	files := map[string]string{
		"refresh-token.txt": c.fake.NewOAuthAccount("work"),
		"api-key.txt":       c.fake.NewAPIKey("pool"),
		"new-token.txt":     c.fake.NewOAuthAccount("work"),
		"setup-token.txt":   c.fake.NewSetupToken("ci", 24*time.Hour),
	}
	for name, secret := range files {
		if err := os.WriteFile(filepath.Join(r.work, name), []byte(secret+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, kv := range c.Env {
		if !strings.HasPrefix(kv, "PATH=") {
			r.env = append(r.env, kv)
		}
	}
	r.env = append(r.env, "PATH="+bin+string(os.PathListSeparator)+os.Getenv("PATH"),
		"CLAUDEFLARE_PASSPHRASE_NEW=correct horse battery staple 42")
	return r
}

var (
	daemonLineRE = regexp.MustCompile(`^(\./)?claudeflare daemon(\s|$)`)
	cfLineRE     = regexp.MustCompile(`^(\./)?claudeflare\s`)
	jqPipeRE     = regexp.MustCompile(`\|\s*jq\s`)
	logReaders   = regexp.MustCompile(`claudeflare (requests|payload|stats|simulate)\s`)
)

// cronRE is a crontab line's five time fields.
var cronRE = regexp.MustCompile(`^[0-9*][0-9*,/-]* [0-9*][0-9*,/-]* [0-9*][0-9*,/-]* [0-9*][0-9*,/-]* [0-9*][0-9*,/-]*\s+`)

// lineKind says how a README command runs: "daemon", "claudeflare",
// "curl", or "" when the test cannot run it.
func lineKind(cmd string) string {
	switch {
	case daemonLineRE.MatchString(cmd):
		return "daemon"
	case cfLineRE.MatchString(cmd):
		return "claudeflare"
	case strings.HasPrefix(cmd, "curl "):
		return "curl"
	}
	return ""
}

// run runs one README command as the rule above says.
func (r *readmeRun) run(at int, cmd string) {
	t := r.c.t
	t.Helper()
	fields := cronRE.FindString(cmd)
	cron := fields != ""
	cmd = strings.TrimPrefix(cmd, fields)
	switch lineKind(cmd) {
	case "daemon":
		r.startDaemon()
		return
	case "curl":
		if r.d == nil {
			t.Fatalf("README line %d: %q needs the daemon, and no example before it starts one", at, cmd)
		}
	case "":
		t.Fatalf("README line %d: the test cannot run %q: make it a claudeflare or curl line, or mark the block `<!-- test: skip (why) -->` or `<!-- test: skip-lines N (why) -->`", at, cmd)
	}
	line := r.fillIn(at, cmd)
	sh := exec.Command("bash", "-o", "pipefail", "-c", line)
	sh.Dir, sh.Env = r.work, r.env
	var out, errb bytes.Buffer
	sh.Stdout, sh.Stderr = &out, &errb
	if err := sh.Run(); err != nil {
		t.Fatalf("README line %d: %s: %v\nstdout: %s\nstderr: %s", at, line, err, out.String(), errb.String())
	}
	if jqPipeRE.MatchString(cmd) {
		sc := bufio.NewScanner(strings.NewReader(out.String()))
		for sc.Scan() {
			if strings.TrimSpace(sc.Text()) == "null" {
				t.Errorf("README line %d: %s: jq printed null: the output no longer has that field\nstdout: %s", at, line, out.String())
				break
			}
		}
	}
	if cron && out.Len()+errb.Len() > 0 {
		// cron mails whatever a job prints: a quiet job prints nothing.
		t.Errorf("README line %d: the crontab line printed something\nstdout: %s\nstderr: %s", at, out.String(), errb.String())
	}
	r.c.assertNoSecrets(fmt.Sprintf("README line %d output", at), out.String()+errb.String())
	if strings.Contains(cmd, "--to-passphrase") {
		// The vault is now opened with the passphrase it was given.
		r.env = append(r.env, "CLAUDEFLARE_PASSPHRASE=correct horse battery staple 42")
	}
	t.Logf("README line %d: %s: ok", at, cmd)
}

// fillIn prepares what a line needs and replaces the README's placeholders.
func (r *readmeRun) fillIn(at int, cmd string) string {
	t := r.c.t
	t.Helper()
	if logReaders.MatchString(cmd) && r.rows == nil {
		r.logSomeRequests(at)
	}
	if strings.Contains(cmd, "01JD...") {
		if r.rows == nil {
			r.logSomeRequests(at)
		}
		id, _ := r.rows[0]["id"].(string)
		if id == "" {
			t.Fatalf("requests list --json: no id in %v", r.rows[0])
		}
		cmd = strings.ReplaceAll(cmd, "01JD...", id)
	}
	if strings.Contains(cmd, "age1...") {
		id, err := age.GenerateX25519Identity()
		if err != nil {
			t.Fatal(err)
		}
		cmd = strings.ReplaceAll(cmd, "age1...", id.Recipient().String())
	}
	if strings.Contains(cmd, "$KEY") && !r.keyAdded {
		r.addViewerKey(at)
	}
	if r.host != "" {
		cmd = strings.NewReplacer("localhost:8080", r.host, "127.0.0.1:8080", r.host).Replace(cmd)
	}
	return cmd
}

// startDaemon stands in for `claudeflare daemon`: the daemon on a free
// port, ready once /health answers.
func (r *readmeRun) startDaemon() {
	t := r.c.t
	if r.d != nil {
		t.Fatal("the README starts a second daemon on the same data dir")
	}
	r.d = r.c.startDaemon()
	u, err := url.Parse(r.d.url)
	if err != nil {
		t.Fatal(err)
	}
	r.host = u.Host
	r.c.t.Logf("claudeflare daemon: started on %s", r.host)
	testutil.WaitFor(t, "the daemon's /health", func() bool {
		resp, err := http.Get(r.d.url + "/health")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return true
	})
}

// logSomeRequests sends requests through the daemon so that the log
// examples have rows to read.
func (r *readmeRun) logSomeRequests(at int) {
	t := r.c.t
	if r.d == nil {
		t.Fatalf("README line %d reads the request log, and no example before it starts the daemon", at)
	}
	testutil.WaitFor(t, "the daemon to see the examples' accounts", func() bool {
		resp, err := http.Get(r.d.url + "/health")
		if err != nil {
			return false
		}
		var h struct {
			Usable int `json:"usable_accounts"`
		}
		err = json.NewDecoder(resp.Body).Decode(&h)
		resp.Body.Close()
		return err == nil && h.Usable > 0
	})
	for i := range 3 {
		send(t, r.d.url, i == 1, fmt.Sprintf("readme %d", i))
	}
	r.rows = r.c.waitRows(3)
}

// addViewerKey creates the $KEY the curl examples send, and waits until
// the daemon enforces keys.
func (r *readmeRun) addViewerKey(at int) {
	t := r.c.t
	if r.d == nil {
		t.Fatalf("README line %d sends $KEY, and no example before it starts the daemon", at)
	}
	key := strings.TrimSpace(r.c.MustRun("", "apikey", "create", "readme", "--role", "viewer"))
	r.env = append(r.env, "KEY="+key)
	r.keyAdded = true
	testutil.WaitFor(t, "the daemon to require the new client key", func() bool {
		resp, err := http.Get(r.d.url + "/api/accounts")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusUnauthorized
	})
}

// TestReadmeRule: the rule refuses what it cannot run and reads the
// markers, so an unmarked new example fails TestReadmeExamples.
func TestReadmeRule(t *testing.T) {
	for cmd, want := range map[string]string{
		"claudeflare accounts list":        "claudeflare",
		"./claudeflare init":               "claudeflare",
		"claudeflare daemon":               "daemon",
		"./claudeflare daemon --port 8787": "daemon",
		"curl -s localhost:8080/health":    "curl",
		"go build -o claudeflare .":        "",
		"sudo install -m 0755 claudeflare": "",
		"export ANTHROPIC_BASE_URL=x":      "",
		"claude":                           "",
		"cf doctor":                        "",
	} {
		if got := lineKind(cmd); got != want {
			t.Errorf("lineKind(%q) = %q, want %q", cmd, got, want)
		}
	}
	if got := cronRE.FindString("17 3 * * *  claudeflare --quiet cleanup"); got != "17 3 * * *  " {
		t.Errorf("cron fields: %q", got)
	}
	readme := filepath.Join(t.TempDir(), "README.md")
	os.WriteFile(readme, []byte("<!-- test: skip (why) -->\n```sh\ngo build\n```\n\n"+
		"<!-- test: skip-lines 2 (remote) -->\n```console\n$ claudeflare backup x \\\n  --no-log\n# note\nclaudeflare backup - | ssh h\n```\n"+
		"```toml\nport = 1\n```\n```\n17 3 * * *  claudeflare cleanup\n```\n"), 0o600)
	b := readmeBlocks(t, readme)
	if len(b) != 3 || b[0].skip != "why" || b[1].skip != "" || b[1].skipLines[2] != "remote" ||
		strings.Join(b[1].cmds, "|") != "claudeflare backup x   --no-log|claudeflare backup - | ssh h" || b[2].skip != "" {
		t.Errorf("blocks: %+v", b)
	}
}
