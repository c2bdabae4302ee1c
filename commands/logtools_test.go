package commands_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/claudeflare/claudeflare/internal/logtest"
	"github.com/claudeflare/claudeflare/store"
	"github.com/claudeflare/claudeflare/vault"
)

// A test-only identity that does not open the vaults these tests make.
const otherKey = "AGE-SECRET-KEY-1M5P6MCZERUMELNUHKJ7QAPR2PHS868W8NDXUZ8NMUUJQ6R8NHZJS4AAFDQ"

// bodyToken is a credential a client put into a request body; the default
// log.redact patterns must keep it out of the log.
const bodyToken = "sk-ant-api03-BODYSECRET0123456789abcdefghijklmnop"

// send posts one message through the daemon and fails the test unless it
// is answered 200.
func send(t *testing.T, base string, stream bool, content string) {
	t.Helper()
	body := fmt.Sprintf(`{"model":"claude-sonnet-4-5","max_tokens":64,"stream":%v,"messages":[{"role":"user","content":%q}]}`, stream, content)
	req, _ := http.NewRequest("POST", base+"/v1/messages?beta=true", strings.NewReader(body))
	req.Header.Set("content-type", "application/json")
	req.Header.Set("anthropic-version", "2023-06-01")
	req.Header.Set("authorization", "Bearer sk-ant-oat01-CLIENTSIDESECRET0123456789")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Error(err)
		return
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("request failed: %d %s", resp.StatusCode, b)
	}
}

// waitRows waits until the log holds n requests (the recorder is async).
func (c *runner) waitRows(n int) []map[string]any {
	c.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		lines := jsonLines(c.t, c.MustRun("", "requests", "list", "--json"))
		if len(lines) >= n || time.Now().After(deadline) {
			if len(lines) != n {
				c.t.Fatalf("log has %d requests, want %d", len(lines), n)
			}
			return lines
		}
		time.Sleep(50 * time.Millisecond) // paces the poll
	}
}

// waitUntil polls cond until it holds, and fails the test naming what it
// waited for if it does not hold within a generous deadline.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond) // paces the poll
	}
}

func jsonLines(t *testing.T, out string) []map[string]any {
	t.Helper()
	var lines []map[string]any
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(nil, 64<<20)
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("line %d is not JSON: %v: %s", len(lines)+1, err, sc.Bytes())
		}
		lines = append(lines, m)
	}
	return lines
}

func (c *runner) assertNoSecrets(what, s string) {
	c.t.Helper()
	for _, tok := range append(c.fake.AllTokens(), bodyToken, "CLIENTSIDESECRET") {
		if strings.Contains(s, tok) {
			c.t.Fatalf("%s contains a plaintext token", what)
		}
	}
}

func TestLogToolsOnARealDaemonLog(t *testing.T) {
	c := newCLI(t)
	c.MustRun("", "init")
	c.MustRun(c.fake.NewOAuthAccount("work"), "accounts", "add", "work", "--refresh-token-stdin", "--priority", "0")
	c.MustRun(c.fake.NewAPIKey("spare"), "accounts", "add", "spare", "--api-key-stdin", "--priority", "1")
	d := c.startDaemon()
	for i := range 6 {
		send(t, d.url, i%2 == 1, fmt.Sprintf("hello %d, my key is %s", i, bodyToken))
	}
	reqs := c.waitRows(6)

	// requests list --json: the contract's fields.
	for _, k := range []string{"id", "timestamp", "method", "path", "model", "account", "status", "attempts", "duration_ms", "ttfb_ms",
		"input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens", "streamed", "end_state", "error", "client"} {
		if _, ok := reqs[0][k]; !ok {
			t.Errorf("requests list --json: no %q in %v", k, reqs[0])
		}
	}
	if reqs[0]["account"] != "work" || reqs[0]["status"] != 200.0 || reqs[0]["path"] != "/v1/messages?beta=true" || reqs[1]["streamed"] != true {
		t.Errorf("requests list: %v / %v", reqs[0], reqs[1])
	}
	last := jsonLines(t, c.MustRun("", "requests", "list", "--json", "--limit", "2"))
	if len(last) != 2 || last[1]["id"] != reqs[5]["id"] || last[0]["id"] != reqs[4]["id"] {
		t.Errorf("--limit 2: %v", last)
	}
	if n := len(jsonLines(t, c.MustRun("", "requests", "list", "--status", "5xx", "--json"))); n != 0 {
		t.Errorf("--status 5xx: %d rows", n)
	}
	if n := len(jsonLines(t, c.MustRun("", "requests", "list", "--json", "--account", "spare", "--since", "1h"))); n != 0 {
		t.Errorf("--account spare: %d rows", n)
	}
	table := c.MustRun("", "requests", "list")
	if !strings.Contains(table, "TIME") || strings.Count(table, "\n") != 7 {
		t.Errorf("table:\n%s", table)
	}

	// payload export: JSON line by line, usage reachable, SSE as text,
	// no plaintext token anywhere.
	out := c.MustRun("", "payload", "export")
	c.assertNoSecrets("payload export", out)
	rows := jsonLines(t, out)
	if len(rows) != 6 {
		t.Fatalf("export: %d lines", len(rows))
	}
	for i, r := range rows {
		req, resp := r["request"].(map[string]any), r["response"].(map[string]any)
		if r["id"] != reqs[i]["id"] || r["account"] != "work" || r["status"] != 200.0 || r["truncated"] != false {
			t.Errorf("row %d: %v", i, r)
		}
		if h := req["headers"].(map[string]any); h["authorization"] != "[REDACTED]" {
			t.Errorf("row %d: authorization header %v", i, h["authorization"])
		}
		content := req["body"].(map[string]any)["messages"].([]any)[0].(map[string]any)["content"].(string)
		if !strings.Contains(content, "[REDACTED]") {
			t.Errorf("row %d: request body content %q", i, content)
		}
		if i%2 == 0 {
			if _, ok := resp["body"].(map[string]any)["usage"].(map[string]any); !ok {
				t.Errorf("row %d: .response.body.usage missing: %v", i, resp["body"])
			}
		} else if s, _ := resp["body"].(string); !strings.Contains(s, "event: message_stop") {
			t.Errorf("row %d: SSE body is not text: %v", i, resp["body"])
		}
	}
	one := jsonLines(t, c.MustRun("", "payload", "export", "--id", reqs[3]["id"].(string)))
	if len(one) != 1 || one[0]["id"] != reqs[3]["id"] {
		t.Errorf("--id: %v", one)
	}

	// --output: atomic, 0600, the same lines.
	file := filepath.Join(c.dir, "out", "export.ndjson")
	os.MkdirAll(filepath.Dir(file), 0o700)
	if o := c.MustRun("", "payload", "export", "--output", file); o != "" {
		t.Errorf("--output printed %q", o)
	}
	b, err := os.ReadFile(file)
	if err != nil || string(b) != out {
		t.Errorf("--output file differs from stdout (%v)", err)
	}
	if st, _ := os.Stat(file); st == nil || st.Mode().Perm() != 0o600 {
		t.Errorf("--output mode %v", st)
	}

	// The wrong key: a clear error, nothing written, no temp file left.
	c.Env = append(c.Env, "CLAUDEFLARE_ENCRYPTION_KEY="+otherKey)
	bad := filepath.Join(c.dir, "out", "bad.ndjson")
	o, errs, code := c.Run("", "payload", "export", "--output", bad)
	if code != 1 || o != "" || !strings.HasPrefix(errs, "claudeflare: ") || !strings.Contains(errs, "does not open") {
		t.Errorf("wrong key: exit %d, stdout %q, stderr %q", code, o, errs)
	}
	if ents, _ := os.ReadDir(filepath.Dir(bad)); len(ents) != 1 {
		t.Errorf("wrong key left files: %v", ents)
	}
	c.Env = c.Env[:len(c.Env)-1]

	// stats: one line per account and one for the pool.
	st := jsonLines(t, c.MustRun("", "stats", "--json"))
	if len(st) != 3 || st[0]["account"] != "work" || st[0]["requests"] != 6.0 || st[0]["status"] != "ok" ||
		st[1]["account"] != "spare" || st[1]["requests"] != 0.0 || st[2]["scope"] != "pool" || st[2]["requests"] != 6.0 || st[2]["accounts"] != 2.0 {
		t.Errorf("stats: %v", st)
	}
	if st[0]["input_tokens"].(float64) == 0 || st[0]["median_duration_ms"] == nil || st[0]["last_used"] == nil {
		t.Errorf("stats work: %v", st[0])
	}
	text := c.MustRun("", "stats")
	if !strings.Contains(text, "ACCOUNT") || !strings.Contains(text, "TOTAL") {
		t.Errorf("stats table:\n%s", text)
	}

	if err := d.stop(t, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	// Nothing in the data dir or the outputs holds a token either.
	filepath.Walk(filepath.Join(c.dir, "data"), func(p string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() {
			b, _ := os.ReadFile(p)
			c.assertNoSecrets(p, string(b))
		}
		return nil
	})
}

// sealer opens the vault in the CLI's data dir, for writing payloads the
// export must open.
func (c *runner) sealer() func(string, []byte) (int64, []byte, error) {
	c.t.Helper()
	dir := filepath.Join(c.dir, "data")
	vdb, err := store.OpenVault(dir)
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { vdb.Close() })
	v, err := vault.Open(context.Background(), vdb, vault.KeySource{DataDir: dir}, vault.Options{})
	if err != nil {
		c.t.Fatal(err)
	}
	return v.SealPayload
}

func (c *runner) openLog() *store.DB {
	c.t.Helper()
	if err := vault.EnsureDataDir(filepath.Join(c.dir, "data")); err != nil {
		c.t.Fatal(err)
	}
	db, err := store.OpenLog(filepath.Join(c.dir, "data"))
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { db.Close() })
	return db
}

func TestCleanupAndExportWhileTheDaemonServes(t *testing.T) {
	c := newCLI(t)
	c.MustRun("", "init")
	c.MustRun(c.fake.NewOAuthAccount("work"), "accounts", "add", "work", "--refresh-token-stdin")
	// A year-old log of 20,000 requests with payloads.
	old := time.Now().Add(-365 * 24 * time.Hour)
	db := c.openLog()
	if err := logtest.Fill(context.Background(), db, logtest.Options{N: 20000, Start: old, Step: time.Second, Seal: c.sealer(), Batch: 5000}); err != nil {
		t.Fatal(err)
	}
	d := c.startDaemon()

	// Steady traffic until told to stop; every request must succeed.
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var mu sync.Mutex
	sent := 0
	for w := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ctx.Err() == nil; i++ {
				send(t, d.url, (i+w)%2 == 1, "steady")
				mu.Lock()
				sent++
				mu.Unlock()
			}
		}()
	}
	served := func() int {
		mu.Lock()
		defer mu.Unlock()
		return sent
	}
	// The cleanup and the export start only once traffic is being served.
	waitUntil(t, "requests to be served before the cleanup", func() bool { return served() >= 4 })

	dry := c.MustRun("", "cleanup", "--older-than", "30d", "--dry-run")
	if !strings.HasPrefix(dry, "would delete 20000 requests and 20000 payloads older than ") {
		t.Errorf("dry run: %q", dry)
	}
	var exportOut string
	var exportErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		var code int
		var errs string
		exportOut, errs, code = c.Run("", "payload", "export")
		if code != 0 {
			exportErr = fmt.Errorf("export: exit %d: %s", code, errs)
		}
	}()
	res := jsonLines(t, c.MustRun("", "cleanup", "--older-than", "30d", "--vacuum", "--json"))
	if len(res) != 1 || res[0]["requests"] != 20000.0 || res[0]["payloads"] != 20000.0 || res[0]["complete"] != true || res[0]["freed_bytes"].(float64) <= 0 {
		t.Errorf("cleanup: %v", res)
	}
	// The daemon keeps serving after the cleanup and its vacuum.
	after := served()
	waitUntil(t, "requests to be served after the cleanup", func() bool { return served() >= after+4 })
	stop()
	wg.Wait()
	if err := d.stop(t, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if exportErr != nil {
		t.Fatal(exportErr)
	}
	lines := jsonLines(t, exportOut)
	if len(lines) < sent/2 {
		t.Errorf("export during cleanup: %d lines", len(lines))
	}
	t.Logf("%d requests served during cleanup and export; export printed %d lines", sent, len(lines))
	c.assertNoSecrets("export", exportOut)
	// No row that should stay is lost: every request sent is in the log,
	// with its payload; the old ones are gone.
	var reqs, pays, olds int
	db.R.Get(&reqs, `SELECT count(*) FROM requests`)
	db.R.Get(&pays, `SELECT count(*) FROM payloads`)
	db.R.Get(&olds, `SELECT count(*) FROM requests WHERE ts < ?`, store.ToMS(old.Add(24*time.Hour)))
	if sent == 0 || reqs != sent || pays != sent || olds != 0 {
		t.Errorf("sent %d requests; log has %d requests, %d payloads, %d old", sent, reqs, pays, olds)
	}
}

// follower runs `requests list --follow` as a process.
type follower struct {
	out  *bufio.Reader
	pipe io.ReadCloser
	done chan error
	proc *os.Process
}

func (c *runner) follow(args ...string) *follower {
	c.t.Helper()
	cmd := c.Cmd("", append([]string{"requests", "list", "--follow", "--json", "--interval", "20ms"}, args...)...)
	pipe, err := cmd.StdoutPipe()
	if err != nil {
		c.t.Fatal(err)
	}
	var errb bytes.Buffer
	cmd.Stderr = &errb
	if err := cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	f := &follower{out: bufio.NewReader(pipe), pipe: pipe, done: make(chan error, 1), proc: cmd.Process}
	go func() {
		err := cmd.Wait()
		if err != nil {
			err = fmt.Errorf("%w: %s", err, errb.String())
		}
		f.done <- err
	}()
	c.t.Cleanup(func() { cmd.Process.Kill() })
	return f
}

func (f *follower) line(t *testing.T) map[string]any {
	t.Helper()
	type res struct {
		s   string
		err error
	}
	ch := make(chan res, 1)
	go func() { s, err := f.out.ReadString('\n'); ch <- res{s, err} }()
	select {
	case r := <-ch:
		if r.err != nil {
			t.Fatalf("follow: %v", r.err)
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(r.s), &m); err != nil {
			t.Fatalf("follow line %q: %v", r.s, err)
		}
		return m
	case <-time.After(10 * time.Second):
		t.Fatal("follow printed nothing")
	}
	return nil
}

func (f *follower) wait(t *testing.T) error {
	t.Helper()
	select {
	case err := <-f.done:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("follow did not exit")
	}
	return nil
}

func insertRow(t *testing.T, db *store.DB, id string) {
	t.Helper()
	err := store.InsertRequests(context.Background(), db, []store.Request{{ID: id, TS: store.ToMS(time.Now()), Method: "POST", Path: "/v1/messages", Account: "work", Status: 200}}, nil)
	if err != nil {
		t.Fatal(err)
	}
}

func TestFollowSeesNewRowsAndExitsCleanly(t *testing.T) {
	c := newCLI(t)
	db := c.openLog()
	for i := range 15 {
		insertRow(t, db, fmt.Sprintf("before-%02d", i))
	}
	f := c.follow()
	// The last 10 rows first, like tail -f.
	if m := f.line(t); m["id"] != "before-05" {
		t.Fatalf("first line %v", m)
	}
	for range 9 {
		f.line(t)
	}
	insertRow(t, db, "after-1")
	if m := f.line(t); m["id"] != "after-1" {
		t.Fatalf("followed %v", m)
	}
	insertRow(t, db, "after-2")
	if m := f.line(t); m["id"] != "after-2" {
		t.Fatalf("followed %v", m)
	}
	// SIGINT: exit 0.
	f.proc.Signal(os.Interrupt)
	if err := f.wait(t); err != nil {
		t.Fatalf("after SIGINT: %v", err)
	}

	// A closed pipe (`| head -1`): exit 0 at the next write.
	f = c.follow("--limit", "1")
	f.line(t)
	f.pipe.Close()
	insertRow(t, db, "after-3")
	insertRow(t, db, "after-4")
	if err := f.wait(t); err != nil {
		t.Fatalf("after the reader went away: %v", err)
	}
}

func TestCleanupCommand(t *testing.T) {
	c := newCLI(t)
	db := c.openLog()
	old := time.Now().Add(-48*time.Hour + 30*time.Second)
	if err := logtest.Fill(context.Background(), db, logtest.Options{N: 100, Start: old, Step: time.Minute, Seal: func(_ string, p []byte) (int64, []byte, error) { return 1, p, nil }}); err != nil {
		t.Fatal(err)
	}
	// rows 0..99 from 48h ago, a minute apart: 60 of them are older than 47h.
	count := func() (r, p int) {
		db.R.Get(&r, `SELECT count(*) FROM requests`)
		db.R.Get(&p, `SELECT count(*) FROM payloads`)
		return r, p
	}
	out := c.MustRun("", "cleanup", "--older-than", "47h", "--dry-run")
	if !strings.HasPrefix(out, "would delete 60 requests and 60 payloads older than ") {
		t.Errorf("dry run: %q", out)
	}
	if r, p := count(); r != 100 || p != 100 {
		t.Fatalf("dry run deleted: %d %d", r, p)
	}
	out = c.MustRun("", "cleanup", "--older-than", "46h", "--type", "payloads", "--json")
	if lines := jsonLines(t, out); len(lines) != 1 || lines[0]["payloads"] != 100.0 || lines[0]["type"] != "payloads" {
		t.Errorf("payloads: %q", out)
	}
	if r, p := count(); r != 100 || p != 0 {
		t.Fatalf("after payloads cleanup: %d %d", r, p)
	}
	out = c.MustRun("", "cleanup", "--older-than", "47h", "--type", "requests", "--json")
	if lines := jsonLines(t, out); len(lines) != 1 || lines[0]["requests"] != 60.0 || lines[0]["type"] != "requests" || lines[0]["dry_run"] != false {
		t.Errorf("requests --json: %s", out)
	}
	if r, _ := count(); r != 40 {
		t.Fatalf("after requests cleanup: %d", r)
	}
	// --force: everything of a type.
	out = c.MustRun("", "cleanup", "--type", "all", "--force", "--vacuum", "--json")
	if lines := jsonLines(t, out); len(lines) != 1 || lines[0]["requests"] != 40.0 || lines[0]["before"] != nil {
		t.Errorf("--force: %q", out)
	}
	if r, _ := count(); r != 0 {
		t.Fatalf("after --force: %d", r)
	}
	for _, args := range [][]string{
		{"cleanup"},
		{"cleanup", "--type", "requests"},
		{"cleanup", "--older-than", "soon"},
		{"cleanup", "--older-than", "1d", "--type", "logs"},
		{"cleanup", "extra", "--older-than", "1d"},
		{"requests", "list", "--status", "abc"},
		{"requests", "list", "--since", "-5m"},
	} {
		if _, errs, code := c.Run("", args...); code != 2 || !strings.HasPrefix(errs, "claudeflare: ") {
			t.Errorf("%v: exit %d, %q; want a usage error", args, code, errs)
		}
	}
}

// TestExportShowsWhatWasCaptured runs the daemon under each privacy
// setting and checks that payload export shows exactly what was kept.
func TestExportShowsWhatWasCaptured(t *testing.T) {
	for _, tc := range []struct {
		name, config string
		check        func(t *testing.T, rows []map[string]any)
	}{
		{"headers only", "[log]\npayloads = \"headers\"\n", func(t *testing.T, rows []map[string]any) {
			for _, r := range rows {
				req, resp := r["request"].(map[string]any), r["response"].(map[string]any)
				if req["body"] != nil || resp["body"] != nil || req["body_omitted"] != true || resp["body_omitted"] != true {
					t.Errorf("bodies kept: %v", r)
				}
				if req["headers"].(map[string]any)["content-type"] != "application/json" {
					t.Errorf("headers not kept: %v", req["headers"])
				}
			}
		}},
		{"off", "[log]\npayloads = \"off\"\n", func(t *testing.T, rows []map[string]any) {
			if len(rows) != 0 {
				t.Errorf("%d payloads exported with payloads off", len(rows))
			}
		}},
		{"body paths", "[log]\nbody_paths = [\"/v1/messages/count_tokens\"]\n", func(t *testing.T, rows []map[string]any) {
			for _, r := range rows {
				if req := r["request"].(map[string]any); req["body"] != nil || req["body_omitted"] != true {
					t.Errorf("body outside body_paths kept: %v", req)
				}
			}
		}},
		{"custom redact", "[log]\nredact = ['secret-[0-9]+']\n", func(t *testing.T, rows []map[string]any) {
			for _, r := range rows {
				content := r["request"].(map[string]any)["body"].(map[string]any)["messages"].([]any)[0].(map[string]any)["content"]
				if content != "my [REDACTED] is safe" {
					t.Errorf("content %q", content)
				}
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newCLI(t)
			cfg := filepath.Join(c.dir, "claudeflare.toml")
			if err := os.WriteFile(cfg, []byte(tc.config), 0o600); err != nil {
				t.Fatal(err)
			}
			c.Env = append(c.Env, "CLAUDEFLARE_CONFIG_PATH="+cfg)
			c.MustRun(c.fake.NewAPIKey("work"), "accounts", "add", "work", "--api-key-stdin")
			d := c.startDaemon()
			send(t, d.url, false, "my secret-12345 is safe")
			send(t, d.url, true, "my secret-12345 is safe")
			c.waitRows(2)
			if err := d.stop(t, syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			out := c.MustRun("", "payload", "export")
			c.assertNoSecrets("export", out)
			if strings.Contains(out, "secret-12345") && tc.name == "custom redact" {
				t.Error("custom redact pattern not applied")
			}
			rows := jsonLines(t, out)
			if tc.name != "off" && len(rows) != 2 {
				t.Fatalf("%d rows exported", len(rows))
			}
			tc.check(t, rows)
		})
	}
}
