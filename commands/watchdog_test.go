package commands_test

import (
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestSystemdWatchdog runs the real daemon as systemd runs it under
// WatchdogSec=: NOTIFY_SOCKET a unix datagram socket, WATCHDOG_USEC set.
// After READY=1 it sends WATCHDOG=1, at half the timeout, through a
// reload, and none after STOPPING=1.
func TestSystemdWatchdog(t *testing.T) {
	c := newCLI(t)
	c.MustRun("", "init")
	n := listenNotify(t)
	const timeout = 400 * time.Millisecond
	c.Env = append(c.Env, "NOTIFY_SOCKET="+n.path, "WATCHDOG_USEC=400000")
	d := c.startDaemon()
	n.expect("READY=1")
	start := time.Now()
	for i := 0; i < 3; i++ {
		n.expect("WATCHDOG=1")
	}
	// A ticker never runs ahead: three pings at timeout/2 take at least
	// one timeout after READY=1 (whatever the load).
	if got := time.Since(start); got < timeout {
		t.Fatalf("3 pings within %v: more often than every %v", got, timeout/2)
	}

	d.cmd.Process.Signal(syscall.SIGHUP)
	seen := map[string]int{}
	for seen["READY=1"] == 0 || seen["WATCHDOG=1"] == 0 {
		m := n.next()
		seen[m]++
	}

	d.cmd.Process.Signal(syscall.SIGTERM)
	for m := n.next(); m != "STOPPING=1"; m = n.next() {
		if m != "WATCHDOG=1" {
			t.Fatalf("while stopping: %q", m)
		}
	}
	<-d.done
	select {
	case m, ok := <-n.msgs:
		if ok {
			t.Fatalf("after STOPPING=1: %q", m)
		}
	default:
	}
}

// next is the first line of the next notification.
func (n *notifyListener) next() string {
	n.t.Helper()
	select {
	case m, ok := <-n.msgs:
		if !ok {
			n.t.Fatal("notify socket closed")
		}
		first, _, _ := strings.Cut(m, "\n")
		return first
	case <-time.After(20 * time.Second):
		n.t.Fatal("no notification within 20s")
	}
	return ""
}
