package daemon

import (
	"context"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// WatchdogInterval is systemd's watchdog timeout for this process, read
// from the environment systemd sets with WatchdogSec=: WATCHDOG_USEC, and
// WATCHDOG_PID when set must be this process (else the variables were
// meant for a parent). 0 = no watchdog.
func WatchdogInterval(getenv func(string) string) time.Duration {
	usec, err := strconv.ParseInt(getenv("WATCHDOG_USEC"), 10, 64)
	if err != nil || usec <= 0 {
		return 0
	}
	if pid := getenv("WATCHDOG_PID"); pid != "" && pid != strconv.Itoa(os.Getpid()) {
		return 0
	}
	return time.Duration(usec) * time.Microsecond
}

// runWatchdog sends WATCHDOG=1 every half of the watchdog timeout until
// ctx ends, as sd_watchdog_enabled(3) advises. Each ping first asks the
// proxy for its health, which takes the locks a request takes: a daemon
// stuck on them stops pinging and systemd restarts it. A daemon that is
// merely down (no usable account) still pings; a restart would not help.
func (d *Daemon) runWatchdog(ctx context.Context, timeout time.Duration) {
	t := time.NewTicker(max(timeout/2, time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			d.proxy.HealthStatus()
			d.sdNotify("WATCHDOG=1")
		}
	}
}

// sdNotify sends state to systemd's $NOTIFY_SOCKET (Options.NotifySocket);
// an error is logged at debug level: systemd not listening must not stop
// the daemon.
func (d *Daemon) sdNotify(state string) {
	if err := sdNotify(d.notify, state); err != nil {
		d.log.Debug("notify systemd", "err", err)
	}
}

// sdNotify sends state to systemd's $NOTIFY_SOCKET (a unix datagram
// socket; a leading '@' is the abstract namespace). Without the variable it
// does nothing. A RELOADING=1 message gets MONOTONIC_USEC, which systemd
// (253+) uses to match the reload to its own request.
func sdNotify(socket, state string) error {
	if socket == "" {
		return nil
	}
	if strings.HasPrefix(socket, "@") {
		socket = "\x00" + socket[1:]
	}
	if strings.HasPrefix(state, "RELOADING=1") {
		var ts unix.Timespec
		if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err == nil {
			state += "\nMONOTONIC_USEC=" + strconv.FormatInt(ts.Nano()/1000, 10)
		}
	}
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: socket, Net: "unixgram"})
	if err != nil {
		return err
	}
	defer conn.Close()
	_, err = conn.Write([]byte(state))
	return err
}
