package daemon

import (
	"net"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

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
