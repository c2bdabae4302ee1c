package daemon_test

import (
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/claudeflare/claudeflare/daemon"
)

func TestWatchdogInterval(t *testing.T) {
	self := strconv.Itoa(os.Getpid())
	for _, c := range []struct {
		usec, pid string
		want      time.Duration
	}{
		{"", "", 0},
		{"30000000", "", 30 * time.Second},
		{"30000000", self, 30 * time.Second},
		{"30000000", "1", 0}, // meant for another process
		{"0", "", 0},
		{"-5", "", 0},
		{"abc", "", 0},
	} {
		env := map[string]string{"WATCHDOG_USEC": c.usec, "WATCHDOG_PID": c.pid}
		if got := daemon.WatchdogInterval(func(k string) string { return env[k] }); got != c.want {
			t.Errorf("WATCHDOG_USEC=%q WATCHDOG_PID=%q: %v, want %v", c.usec, c.pid, got, c.want)
		}
	}
}

// TestWatchdogPings listens on a real unix datagram socket as systemd's
// NOTIFY_SOCKET: after READY=1 the daemon sends WATCHDOG=1 at half the
// watchdog timeout, and none once it says STOPPING=1.
func TestWatchdogPings(t *testing.T) {
	dir, err := os.MkdirTemp("", "cfwd") // socket paths are short
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	const timeout = 400 * time.Millisecond
	s := newStack(t, func(o *daemon.Options) { o.NotifySocket, o.Watchdog = sock, timeout })

	read := func() (string, time.Time) {
		t.Helper()
		conn.SetReadDeadline(time.Now().Add(30 * time.Second))
		buf := make([]byte, 4096)
		n, err := conn.Read(buf)
		if err != nil {
			t.Fatalf("notify socket: %v", err)
		}
		return string(buf[:n]), time.Now()
	}
	if m, _ := read(); !strings.HasPrefix(m, "READY=1") {
		t.Fatalf("first notification %q, want READY=1", m)
	}
	start := time.Now()
	var last time.Time
	for i := 0; i < 3; i++ {
		m, at := read()
		if m != "WATCHDOG=1" {
			t.Fatalf("notification %q, want WATCHDOG=1", m)
		}
		last = at
	}
	// A ticker never runs ahead: the third ping of a half-timeout ticker
	// comes 3/2 timeouts after the start at the earliest (the slack is
	// what READY=1 took to arrive).
	if got := last.Sub(start); got < timeout {
		t.Fatalf("3 pings within %v: more often than every %v", got, timeout/2)
	}

	if err := s.d.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
	for {
		m, _ := read()
		if m == "WATCHDOG=1" {
			continue // sent before the stop began
		}
		if m != "STOPPING=1" {
			t.Fatalf("notification %q, want STOPPING=1", m)
		}
		break
	}
	conn.SetReadDeadline(time.Now().Add(3 * timeout))
	buf := make([]byte, 64)
	if n, err := conn.Read(buf); err == nil {
		t.Fatalf("after STOPPING=1: %q", buf[:n])
	}
}
