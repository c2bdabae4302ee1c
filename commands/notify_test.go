package commands_test

import (
	"bufio"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// notifyListener is a systemd NOTIFY_SOCKET: a unix datagram socket.
type notifyListener struct {
	t    *testing.T
	conn *net.UnixConn
	path string
	msgs chan string
}

func listenNotify(t *testing.T) *notifyListener {
	t.Helper()
	// Socket paths are limited to 108 bytes; t.TempDir() can be longer.
	dir, err := os.MkdirTemp("", "cfnotify")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	n := &notifyListener{t: t, conn: conn, path: path, msgs: make(chan string, 64)}
	go func() {
		buf := make([]byte, 4096)
		for {
			k, err := conn.Read(buf)
			if err != nil {
				close(n.msgs)
				return
			}
			n.msgs <- string(buf[:k])
		}
	}()
	return n
}

// expect waits for the next datagram and checks that its first line is
// want; it returns every field of the datagram.
func (n *notifyListener) expect(want string) map[string]string {
	n.t.Helper()
	select {
	case m, ok := <-n.msgs:
		if !ok {
			n.t.Fatalf("notify socket closed while waiting for %s", want)
		}
		fields := map[string]string{}
		lines := strings.Split(m, "\n")
		for _, l := range lines {
			k, v, _ := strings.Cut(l, "=")
			fields[k] = v
		}
		if lines[0] != want {
			n.t.Fatalf("notify: got %q, want %s first", m, want)
		}
		return fields
	case <-time.After(20 * time.Second):
		n.t.Fatalf("notify: no %s within 20s", want)
	}
	return nil
}

func (n *notifyListener) none() {
	n.t.Helper()
	select {
	case m := <-n.msgs:
		n.t.Fatalf("unexpected notification %q", m)
	case <-time.After(200 * time.Millisecond):
	}
}

// TestSystemdNotify runs the real daemon with NOTIFY_SOCKET pointing at a
// datagram socket and checks the sd_notify protocol: READY=1 once the
// listener is bound, RELOADING=1 then READY=1 around SIGHUP, STOPPING=1 on
// SIGTERM.
func TestSystemdNotify(t *testing.T) {
	c := newCLI(t)
	c.MustRun("", "init")
	n := listenNotify(t)
	c.Env = append(c.Env, "NOTIFY_SOCKET="+n.path)
	d := c.startDaemon()

	ready := n.expect("READY=1")
	if !strings.Contains(ready["STATUS"], strings.TrimPrefix(d.url, "http://")) {
		t.Errorf("STATUS=%q does not name the address %s", ready["STATUS"], d.url)
	}
	// READY=1 means the listener is bound: a request succeeds at once.
	resp, _ := postMessages(t, d.url, false)
	if resp.StatusCode != 503 { // no accounts yet
		t.Fatalf("after READY=1: %d", resp.StatusCode)
	}

	for i := 0; i < 2; i++ {
		if err := d.cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		reloading := n.expect("RELOADING=1")
		if reloading["MONOTONIC_USEC"] == "" {
			t.Errorf("RELOADING=1 without MONOTONIC_USEC: %v", reloading)
		}
		n.expect("READY=1")
		n.none()
	}
	resp, _ = postMessages(t, d.url, false)
	if resp.StatusCode != 503 {
		t.Fatalf("after reload: %d", resp.StatusCode)
	}

	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	n.expect("STOPPING=1")
	select {
	case <-d.done:
		if d.err != nil {
			t.Fatalf("daemon exit: %v\n%s", d.err, d.logs())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("daemon did not stop:\n%s", d.logs())
	}
}

// TestSystemdNotifyAbstractSocket checks the '@' (abstract namespace)
// form of NOTIFY_SOCKET.
func TestSystemdNotifyAbstractSocket(t *testing.T) {
	c := newCLI(t)
	name := "@claudeflare-test-" + filepath.Base(c.dir)
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		t.Fatalf("abstract unix socket: %v", err)
	}
	defer conn.Close()
	c.Env = append(c.Env, "NOTIFY_SOCKET="+name)
	d := c.startDaemon()
	conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	buf := make([]byte, 4096)
	k, err := conn.Read(buf)
	if err != nil || !strings.HasPrefix(string(buf[:k]), "READY=1") {
		t.Fatalf("abstract socket: %q %v", buf[:k], err)
	}
	d.stop(t, syscall.SIGTERM)
}

// TestSystemdUnit checks the shipped unit file for the settings the
// daemon relies on, and has systemd-analyze verify it when available.
func TestSystemdUnit(t *testing.T) {
	path := "../contrib/systemd/claudeflare.service"
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got := map[string][]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		if l == "" || strings.HasPrefix(l, "#") || strings.HasPrefix(l, "[") {
			continue
		}
		k, v, _ := strings.Cut(l, "=")
		got[k] = append(got[k], v)
	}
	for k, want := range map[string]string{
		"Type":                    "notify",
		"StateDirectory":          "claudeflare",
		"Environment":             "CLAUDEFLARE_DATA_DIR=%S/claudeflare",
		"LoadCredential":          "claudeflare-identity:/etc/claudeflare/identity.txt",
		"UMask":                   "0077",
		"NoNewPrivileges":         "yes",
		"ProtectSystem":           "strict",
		"ProtectHome":             "yes",
		"PrivateTmp":              "yes",
		"RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
		"ExecReload":              "/bin/kill -HUP $MAINPID",
	} {
		found := false
		for _, v := range got[k] {
			found = found || v == want
		}
		if !found {
			t.Errorf("%s: %s=%s missing (have %q)", path, k, want, got[k])
		}
	}
	if !strings.HasSuffix(got["ExecStart"][0], "claudeflare daemon") {
		t.Errorf("ExecStart=%q", got["ExecStart"])
	}
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		return
	}
	// Verify copies whose binaries exist on this machine.
	dir := t.TempDir()
	for _, name := range []string{"claudeflare.service", "claudeflare-cleanup.service", "claudeflare-cleanup.timer"} {
		b, err := os.ReadFile("../contrib/systemd/" + name)
		if err != nil {
			t.Fatal(err)
		}
		b = []byte(strings.ReplaceAll(string(b), "/usr/local/bin/claudeflare", "/bin/true"))
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command(analyze, "verify", "--man=no", filepath.Join(dir, "claudeflare.service"),
		filepath.Join(dir, "claudeflare-cleanup.service"), filepath.Join(dir, "claudeflare-cleanup.timer"))
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		// systemd-analyze needs a booted systemd for some checks; report
		// only problems with our files.
		if o := string(out); strings.Contains(o, ".service:") || strings.Contains(o, ".timer:") {
			t.Errorf("systemd-analyze verify: %v\n%s", err, out)
		} else {
			t.Logf("systemd-analyze verify unavailable here: %v %s", err, out)
		}
	}
}
