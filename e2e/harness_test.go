package e2e

import (
	"bufio"
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	_ "github.com/mattn/go-sqlite3"

	"github.com/claudeflare/claudeflare/internal/fakeapi"
	"github.com/claudeflare/claudeflare/internal/testutil"
	"github.com/claudeflare/claudeflare/store"
	"github.com/claudeflare/claudeflare/vault"
)

// world is one claudeflare installation: a data dir, a config file and
// the fake API it talks to.
type world struct {
	t       testing.TB
	fake    *fakeapi.Server
	dir     string
	data    string
	cfgPath string
	testutil.CLI
}

// newWorld makes a world whose config file holds cfg (TOML, on top of the
// defaults) and runs `claudeflare init`. tokenURL overrides the fake's
// token endpoint ("" = the fake's).
func newWorld(t testing.TB, cfg, tokenURL string) *world {
	t.Helper()
	fake := fakeapi.New()
	t.Cleanup(fake.Close)
	dir := t.TempDir()
	if tokenURL == "" {
		tokenURL = fake.TokenURL()
	}
	w := &world{t: t, fake: fake, dir: dir, data: filepath.Join(dir, "data"), cfgPath: filepath.Join(dir, "claudeflare.toml"), CLI: testutil.CLI{T: t}}
	if err := os.WriteFile(w.cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	w.Env = []string{
		"CLAUDEFLARE_TEST_AS_BINARY=1",
		"HOME=" + dir,
		"PATH=" + os.Getenv("PATH"),
		"XDG_CONFIG_HOME=" + filepath.Join(dir, "config"),
		"CLAUDEFLARE_CONFIG_PATH=" + w.cfgPath,
		"CLAUDEFLARE_DATA_DIR=" + w.data,
		"CLAUDEFLARE_UPSTREAM_URL=" + fake.URL,
		"CLAUDEFLARE_OAUTH_TOKEN_URL=" + tokenURL,
		"LOG_FORMAT=json",
		"GOTRACEBACK=all",
	}
	w.MustRun("", "init")
	return w
}

// addOAuth adds an OAuth account with a fresh refresh token from the fake.
func (w *world) addOAuth(name string) {
	w.t.Helper()
	w.MustRun(w.fake.NewOAuthAccount(name), "accounts", "add", name, "--refresh-token-stdin")
}

// addAPIKey adds an API-key account.
func (w *world) addAPIKey(name string) {
	w.t.Helper()
	w.MustRun(w.fake.NewAPIKey(name), "accounts", "add", name, "--api-key-stdin")
}

// daemon is a running `claudeflare daemon` process.
type daemon struct {
	cmd  *exec.Cmd
	url  string
	pid  int
	done chan struct{}
	err  error

	mu     sync.Mutex
	stderr bytes.Buffer
}

var listenRE = regexp.MustCompile(`listening on (http://[0-9.:\[\]]+)`)

// start runs a process of this test binary with env and waits for its
// "listening on" line.
func startProcess(t testing.TB, env []string, args ...string) *daemon {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = env
	pr, pw := io.Pipe()
	cmd.Stderr = pw
	d := &daemon{cmd: cmd, done: make(chan struct{})}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	d.pid = cmd.Process.Pid
	urlc := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			d.mu.Lock()
			if d.stderr.Len() < 8<<20 {
				d.stderr.WriteString(line + "\n")
			}
			d.mu.Unlock()
			if m := listenRE.FindStringSubmatch(line); m != nil {
				select {
				case urlc <- m[1]:
				default:
				}
			}
		}
		io.Copy(io.Discard, pr)
	}()
	go func() { d.err = cmd.Wait(); pw.Close(); close(d.done) }()
	t.Cleanup(func() { cmd.Process.Kill(); <-d.done })
	select {
	case d.url = <-urlc:
	case <-d.done:
		t.Fatalf("process exited early: %v\n%s", d.err, d.logs())
	case <-time.After(30 * time.Second):
		t.Fatalf("process did not start:\n%s", d.logs())
	}
	return d
}

// start runs `claudeflare daemon --port 0`.
func (w *world) start(args ...string) *daemon {
	w.t.Helper()
	return startProcess(w.t, w.Env, append([]string{"daemon", "--port", "0"}, args...)...)
}

func (d *daemon) logs() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.stderr.String()
}

// kill sends SIGKILL and waits for the process to be gone.
func (d *daemon) kill(t testing.TB) {
	t.Helper()
	d.cmd.Process.Signal(syscall.SIGKILL)
	select {
	case <-d.done:
	case <-time.After(30 * time.Second):
		t.Fatal("process survived SIGKILL for 30s")
	}
}

// stop sends SIGTERM and waits for the exit.
func (d *daemon) stop(t testing.TB) error {
	t.Helper()
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
		return d.err
	case <-time.After(60 * time.Second):
		t.Fatalf("daemon did not stop:\n%s", tail(d.logs(), 4000))
		return nil
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

// procStats is what /proc says about a process.
type procStats struct {
	RSS     int64 // bytes
	HWM     int64 // peak RSS, bytes
	Threads int
	FDs     int
}

func readProc(pid int) (procStats, error) {
	var ps procStats
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return ps, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		f := strings.Fields(v)
		if len(f) == 0 {
			continue
		}
		n, _ := strconv.ParseInt(f[0], 10, 64)
		switch k {
		case "VmRSS":
			ps.RSS = n << 10
		case "VmHWM":
			ps.HWM = n << 10
		case "Threads":
			ps.Threads = int(n)
		}
	}
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return ps, err
	}
	ps.FDs = len(ents)
	return ps, nil
}

func (d *daemon) proc(t testing.TB) procStats {
	t.Helper()
	ps, err := readProc(d.pid)
	if err != nil {
		t.Fatalf("read /proc of the daemon: %v", err)
	}
	return ps
}

// resetPeak resets VmHWM so that the next reading is the peak from now.
func (d *daemon) resetPeak() error {
	return os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", d.pid), []byte("5"), 0)
}

// openFDs lists the daemon's open files (link targets), for reports.
func (d *daemon) openFDs() []string {
	dir := fmt.Sprintf("/proc/%d/fd", d.pid)
	ents, _ := os.ReadDir(dir)
	var out []string
	for _, e := range ents {
		l, err := os.Readlink(filepath.Join(dir, e.Name()))
		if err == nil {
			out = append(out, l)
		}
	}
	sort.Strings(out)
	return out
}

// health is the daemon's /health.
type health struct {
	Status         string `json:"status"`
	Accounts       int    `json:"accounts"`
	UsableAccounts int    `json:"usable_accounts"`
	AccountList    []struct {
		Name   string `json:"name"`
		Status string `json:"status"`
		Usable bool   `json:"usable"`
		Reason string `json:"reason"`
	} `json:"account_list"`
	Recorder map[string]any `json:"recorder"`
	raw      []byte
}

func (d *daemon) health(t testing.TB) health {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(d.url + "/health")
	if err != nil {
		t.Fatalf("GET /health: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var h health
	if resp.StatusCode != 200 || json.Unmarshal(b, &h) != nil {
		t.Fatalf("GET /health: %d %s", resp.StatusCode, b)
	}
	h.raw = b
	return h
}

// recorderCount reads a number from /health's recorder object (0 when
// absent).
func (h health) recorderCount(key string) int64 {
	if f, ok := h.Recorder[key].(float64); ok {
		return int64(f)
	}
	return 0
}

// metrics scrapes /metrics into name{labels} -> value; nil when the
// daemon does not serve it (yet).
func (d *daemon) metrics() map[string]float64 {
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(d.url + "/metrics")
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
		return nil
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		out[line[:i]] = v
	}
	return out
}

// goroutines is go_goroutines from /metrics, or -1 when not served.
func (d *daemon) goroutines() int {
	m := d.metrics()
	if v, ok := m["go_goroutines"]; ok {
		return int(v)
	}
	return -1
}

// integrity runs PRAGMA integrity_check (and the foreign key check) on a
// database file the daemon left behind.
func integrity(path string) error {
	db, err := sql.Open("sqlite3", "file:"+path+"?_busy_timeout=10000")
	if err != nil {
		return err
	}
	defer db.Close()
	rows, err := db.Query("PRAGMA integrity_check")
	if err != nil {
		return fmt.Errorf("integrity_check %s: %w", filepath.Base(path), err)
	}
	var msgs []string
	for rows.Next() {
		var s string
		rows.Scan(&s)
		msgs = append(msgs, s)
	}
	rows.Close()
	if len(msgs) != 1 || msgs[0] != "ok" {
		return fmt.Errorf("integrity_check %s: %s", filepath.Base(path), strings.Join(msgs, "; "))
	}
	rows, err = db.Query("PRAGMA foreign_key_check")
	if err != nil {
		return fmt.Errorf("foreign_key_check %s: %w", filepath.Base(path), err)
	}
	defer rows.Close()
	if rows.Next() {
		return fmt.Errorf("foreign_key_check %s: violations", filepath.Base(path))
	}
	return nil
}

// loggedIDs reads every request id in the log.
func loggedIDs(path string) (map[string]bool, error) {
	db, err := sql.Open("sqlite3", "file:"+path+"?_busy_timeout=10000")
	if err != nil {
		return nil, err
	}
	defer db.Close()
	rows, err := db.Query("SELECT id FROM requests")
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]bool{}
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		out[id] = true
	}
	return out, rows.Err()
}

// storedRefreshTokens opens the vault (the daemon must not be running
// with refreshes in flight) and returns each OAuth account's stored
// refresh token by name, and each account's status.
func (w *world) storedRefreshTokens() (map[string]string, map[string]string) {
	w.t.Helper()
	ctx := context.Background()
	db, err := store.OpenVault(w.data)
	if err != nil {
		w.t.Fatal(err)
	}
	defer db.Close()
	v, err := vault.Open(ctx, db, vault.KeySource{DataDir: w.data}, vault.Options{})
	if err != nil {
		w.t.Fatal(err)
	}
	accts, err := store.ListAccounts(ctx, db)
	if err != nil {
		w.t.Fatal(err)
	}
	toks, status := map[string]string{}, map[string]string{}
	for _, a := range accts {
		status[a.Name] = a.Status
		if a.Kind != store.KindOAuth {
			continue
		}
		s, err := v.Secrets(ctx, a.ID)
		if err != nil {
			w.t.Fatalf("secrets of %s: %v", a.Name, err)
		}
		toks[a.Name] = s.RefreshToken
	}
	return toks, status
}

// hashFiles returns the SHA-256 of every file in dir whose name starts
// with prefix.
func hashFiles(t testing.TB, dir, prefix string) map[string]string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), prefix) || e.IsDir() {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		out[e.Name()] = fmt.Sprintf("%x", sha256sum(b))
	}
	return out
}

// percentile of sorted durations.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted)-1) * p)
	return sorted[i]
}

func sortDurations(d []time.Duration) {
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
}

// envInt reads an integer knob from the environment.
func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// envDuration reads a duration knob from the environment.
func envDuration(name string, def time.Duration) time.Duration {
	if v, err := time.ParseDuration(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

func mb(n int64) string { return fmt.Sprintf("%.1f MB", float64(n)/(1<<20)) }
