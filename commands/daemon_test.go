package commands_test

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/claudeflare/claudeflare/internal/fakeapi"
	"github.com/claudeflare/claudeflare/internal/testcert"
	"github.com/claudeflare/claudeflare/internal/testutil"
)

// runner runs the claudeflare binary (this test binary re-executed) as a real
// process with env on top of a clean environment.
type runner struct {
	testutil.CLI
	t    *testing.T
	dir  string
	fake *fakeapi.Server
}

func newCLI(t *testing.T) *runner {
	t.Helper()
	fake := fakeapi.New()
	t.Cleanup(fake.Close)
	dir := t.TempDir()
	return &runner{t: t, dir: dir, fake: fake, CLI: testutil.CLI{T: t, Env: []string{
		"CLAUDEFLARE_TEST_AS_BINARY=1",
		"HOME=" + dir,
		"PATH=" + os.Getenv("PATH"),
		"XDG_CONFIG_HOME=" + filepath.Join(dir, "config"),
		"CLAUDEFLARE_DATA_DIR=" + filepath.Join(dir, "data"),
		"CLAUDEFLARE_UPSTREAM_URL=" + fake.URL,
		"CLAUDEFLARE_OAUTH_TOKEN_URL=" + fake.TokenURL(),
		"LOG_FORMAT=json",
		"LOG_LEVEL=debug",
	}}}
}

// daemon is a running `claudeflare daemon` process.
type daemon struct {
	cmd    *exec.Cmd
	url    string
	mu     sync.Mutex
	stderr bytes.Buffer
	done   chan struct{}
	err    error
}

var listenRE = regexp.MustCompile(`listening on (https?://[0-9.:\[\]]+)`)

func (c *runner) startDaemon(args ...string) *daemon {
	c.t.Helper()
	cmd := c.Cmd("", append([]string{"daemon", "--port", "0"}, args...)...)
	pr, pw := io.Pipe()
	cmd.Stderr = pw
	d := &daemon{cmd: cmd, done: make(chan struct{})}
	if err := cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	urlc := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			line := sc.Text()
			d.mu.Lock()
			d.stderr.WriteString(line + "\n")
			d.mu.Unlock()
			if m := listenRE.FindStringSubmatch(line); m != nil {
				select {
				case urlc <- m[1]:
				default:
				}
			}
		}
	}()
	go func() { d.err = cmd.Wait(); pw.Close(); close(d.done) }()
	c.t.Cleanup(func() { cmd.Process.Kill(); <-d.done })
	select {
	case d.url = <-urlc:
	case <-d.done:
		c.t.Fatalf("daemon exited early: %v\n%s", d.err, d.logs())
	case <-time.After(20 * time.Second):
		c.t.Fatalf("daemon did not start:\n%s", d.logs())
	}
	return d
}

func (d *daemon) logs() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.stderr.String()
}

// stop sends sig and waits for the exit.
func (d *daemon) stop(t *testing.T, sig os.Signal) error {
	t.Helper()
	d.cmd.Process.Signal(sig)
	select {
	case <-d.done:
		return d.err
	case <-time.After(30 * time.Second):
		t.Fatalf("daemon did not stop:\n%s", d.logs())
		return nil
	}
}

func postMessages(t *testing.T, base string, stream bool) (*http.Response, []byte) {
	t.Helper()
	body := fmt.Sprintf(`{"model":"claude-sonnet-4-5","max_tokens":64,"stream":%v,"messages":[{"role":"user","content":"hi"}]}`, stream)
	req, _ := http.NewRequest("POST", base+"/v1/messages?beta=true", strings.NewReader(body))
	req.Header.Set("content-type", "application/json")
	req.Header.Set("anthropic-version", "2023-06-01")
	req.Header.Set("x-api-key", "client-placeholder")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

func TestDaemonServesAccountsAddedByCLI(t *testing.T) {
	c := newCLI(t)
	c.MustRun("", "init")
	d := c.startDaemon()

	// No accounts yet: 503 telling the user what to do.
	resp, body := postMessages(t, d.url, false)
	if resp.StatusCode != 503 || !bytes.Contains(body, []byte("accounts add")) {
		t.Fatalf("no accounts: %d %s", resp.StatusCode, body)
	}
	if resp.Header.Get("x-claudeflare-request-id") == "" {
		t.Error("no x-claudeflare-request-id")
	}

	// An account added by the CLI while the daemon runs is used without a signal.
	c.MustRun(c.fake.NewOAuthAccount("work"), "accounts", "add", "work", "--refresh-token-stdin")
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, body = postMessages(t, d.url, false)
		if resp.StatusCode == 200 || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if resp.StatusCode != 200 {
		t.Fatalf("after accounts add: %d %s", resp.StatusCode, body)
	}
	var msg struct {
		Usage struct {
			InputTokens int64 `json:"input_tokens"`
		} `json:"usage"`
	}
	if err := json.Unmarshal(body, &msg); err != nil || msg.Usage.InputTokens == 0 {
		t.Fatalf("response: %s", body)
	}
	resp, body = postMessages(t, d.url, true)
	if resp.StatusCode != 200 || !bytes.Contains(body, []byte("event: message_stop")) {
		t.Fatalf("stream: %d %s", resp.StatusCode, body)
	}

	// A second daemon on the same data dir refuses to start.
	_, errs, code := c.Run("", "daemon", "--port", "0")
	if code != 1 || !strings.Contains(errs, "another claudeflare daemon is running") {
		t.Fatalf("second daemon: exit %d: %s", code, errs)
	}

	// SIGTERM: graceful, exit 0, and the request log was flushed.
	if err := d.stop(t, syscall.SIGTERM); err != nil {
		t.Fatalf("daemon exit: %v\n%s", err, d.logs())
	}
	logs := d.logs()
	for _, tok := range c.fake.AllTokens() {
		if strings.Contains(logs, tok) {
			t.Fatal("daemon log contains a token")
		}
	}
	var n int
	out := c.MustRun("", "accounts", "list", "--json")
	if _, err := fmt.Sscanf(regexp.MustCompile(`"requests":(\d+)`).FindString(out), `"requests":%d`, &n); err != nil || n != 2 {
		t.Fatalf("accounts list after 2 requests: %s", out)
	}
}

func TestDaemonRefusesNonLoopbackWithoutClientKeys(t *testing.T) {
	c := newCLI(t)
	_, errs, code := c.Run("", "daemon", "--host", "0.0.0.0", "--port", "0")
	if code != 1 || !strings.Contains(errs, "non-loopback") {
		t.Fatalf("exit %d: %s", code, errs)
	}
}

func TestExitCodes(t *testing.T) {
	c := newCLI(t)
	cfg := filepath.Join(c.dir, "bad.toml")
	os.WriteFile(cfg, []byte("port = 8080\nlb_stratgy = \"session\"\n"), 0o600)
	for _, tc := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"nosuchcommand"}, 2, ""},
		{[]string{"accounts", "add"}, 2, "NAME"},
		{[]string{"accounts", "add", "x", "--tier", "3", "--api-key-stdin"}, 2, "tier"},
		{[]string{"--config", cfg, "accounts", "list"}, 2, `lb_stratgy`},
		{[]string{"--config", filepath.Join(c.dir, "missing.toml"), "accounts", "list"}, 2, "missing.toml"},
		{[]string{"accounts", "pause", "nobody"}, 1, "no such account"},
	} {
		_, errs, code := c.Run("", tc.args...)
		if code != tc.code || !strings.HasPrefix(errs, "claudeflare: ") || !strings.Contains(errs, tc.msg) {
			t.Errorf("%v: exit %d, stderr %q; want exit %d mentioning %q", tc.args, code, errs, tc.code, tc.msg)
		}
	}
	_, errs, _ := c.Run("", "--config", cfg, "accounts", "list")
	if !strings.Contains(errs, "bad.toml:2") {
		t.Errorf("config error does not name the line: %q", errs)
	}
}

// With client keys, the real daemon asks for one on every route but
// /health, and logs which key made each request.
func TestDaemonClientKeys(t *testing.T) {
	c := newCLI(t)
	c.MustRun(c.fake.NewAPIKey("pool"), "accounts", "add", "pool", "--api-key-stdin")
	key := strings.TrimSpace(c.MustRun("", "apikey", "create", "laptop"))
	if !strings.HasPrefix(key, "cf_") {
		t.Fatalf("apikey create printed %q", key)
	}
	c.MustRun("", "apikey", "create", "desktop")
	d := c.startDaemon()
	do := func(method, path, auth string) (*http.Response, []byte) {
		req, _ := http.NewRequest(method, d.url+path, strings.NewReader(`{"model":"m","max_tokens":1,"messages":[{"role":"user","content":"x"}]}`))
		if auth != "" {
			req.Header.Set("x-api-key", auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp, b
	}
	if resp, body := do("POST", "/v1/messages", ""); resp.StatusCode != 401 || resp.Header.Get("x-should-retry") != "false" || !bytes.Contains(body, []byte(`"authentication_error"`)) {
		t.Fatalf("no key: %d %s", resp.StatusCode, body)
	}
	if resp, _ := do("POST", "/v1/messages", "cf_wrong"); resp.StatusCode != 401 {
		t.Fatalf("wrong key: %d", resp.StatusCode)
	}
	if resp, body := do("POST", "/v1/messages", key); resp.StatusCode != 200 {
		t.Fatalf("good key: %d %s", resp.StatusCode, body)
	}
	if resp, _ := do("GET", "/health", ""); resp.StatusCode != 200 {
		t.Fatalf("/health: %d", resp.StatusCode)
	}
	if resp, body := do("GET", "/metrics", key); resp.StatusCode != 403 || !bytes.Contains(body, []byte("permission_error")) {
		t.Fatalf("/metrics with an api key: %d %s", resp.StatusCode, body)
	}
	// A revoked key stops working within seconds, without a signal. (Had
	// it been the last key, the proxy would be open again on loopback.)
	c.MustRun("", "apikey", "revoke", "laptop")
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, _ := do("POST", "/v1/messages", key)
		if resp.StatusCode == 401 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("revoked key still accepted: %d", resp.StatusCode)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := d.stop(t, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(d.logs(), key) {
		t.Fatal("the daemon logged a client key")
	}
	out := c.MustRun("", "requests", "list", "--json")
	if !strings.Contains(out, `"client":"laptop"`) {
		t.Fatalf("request log does not name the client key: %s", out)
	}
}

// server.tls_cert and server.tls_key make the real daemon serve HTTPS.
func TestDaemonServesHTTPS(t *testing.T) {
	c := newCLI(t)
	c.MustRun(c.fake.NewAPIKey("pool"), "accounts", "add", "pool", "--api-key-stdin")
	certFile, keyFile, cert := testcert.Write(t, c.dir)
	cfg := filepath.Join(c.dir, "claudeflare.toml")
	os.WriteFile(cfg, []byte(fmt.Sprintf("[server]\ntls_cert = %q\ntls_key = %q\n", certFile, keyFile)), 0o600)
	c.Env = append(c.Env, "CLAUDEFLARE_CONFIG_PATH="+cfg)
	d := c.startDaemon()
	if !strings.HasPrefix(d.url, "https://") {
		t.Fatalf("daemon announced %s", d.url)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	req, _ := http.NewRequest("POST", d.url+"/v1/messages", strings.NewReader(`{"model":"m","max_tokens":1,"messages":[{"role":"user","content":"x"}]}`))
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.TLS == nil {
		t.Fatalf("over HTTPS: %d %s", resp.StatusCode, body)
	}
	// Plain HTTP to the TLS listener gets Go's 400, never an answer.
	if resp, err := http.Get(strings.Replace(d.url, "https://", "http://", 1) + "/health"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == 200 {
			t.Fatal("plain HTTP served alongside HTTPS")
		}
	}
}

// SIGHUP re-reads the config file: a live setting (a client limit)
// applies at once, and the restart settings that changed are logged once,
// by key, exactly (from the settings table).
func TestDaemonSIGHUPReload(t *testing.T) {
	c := newCLI(t)
	c.MustRun(c.fake.NewAPIKey("pool"), "accounts", "add", "pool", "--api-key-stdin")
	cfg := filepath.Join(c.dir, "claudeflare.toml")
	if err := os.WriteFile(cfg, []byte("[log]\nqueue_size = 100\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c.Env = append(c.Env, "CLAUDEFLARE_CONFIG_PATH="+cfg)
	d := c.startDaemon()
	for i := 0; i < 3; i++ {
		if resp, body := postMessages(t, d.url, false); resp.StatusCode != 200 {
			t.Fatalf("before reload: %d %s", resp.StatusCode, body)
		}
	}
	if err := os.WriteFile(cfg, []byte("client_id = \"another-client\"\n[log]\nqueue_size = 200\n[limits]\nrequests_per_minute = 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := d.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(d.logs(), `"msg":"reloaded"`) {
		if time.Now().After(deadline) {
			t.Fatalf("no reload logged:\n%s", d.logs())
		}
		time.Sleep(20 * time.Millisecond)
	}
	var restart [][]string
	for _, line := range strings.Split(d.logs(), "\n") {
		var l struct {
			Msg  string   `json:"msg"`
			Keys []string `json:"keys"`
		}
		if json.Unmarshal([]byte(line), &l) == nil && strings.Contains(l.Msg, "take effect on restart") {
			restart = append(restart, l.Keys)
		}
	}
	if len(restart) != 1 || strings.Join(restart[0], ",") != "client_id,log.queue_size" {
		t.Fatalf("restart keys logged: %v, want once [client_id log.queue_size]\n%s", restart, d.logs())
	}
	// requests_per_minute = 1 applies at once: within two requests one is
	// refused by the client limit.
	limited := false
	for i := 0; i < 2 && !limited; i++ {
		resp, body := postMessages(t, d.url, false)
		limited = resp.StatusCode == 429 && bytes.Contains(body, []byte("not an Anthropic rate limit"))
	}
	if !limited {
		t.Fatalf("limits.requests_per_minute = 1 not applied after SIGHUP")
	}
}
