package commands

import (
	"net"
	"strings"
)

// sdNotify sends state to systemd's $NOTIFY_SOCKET (a unix datagram
// socket; a leading '@' is the abstract namespace). Without the variable it
// does nothing.
func sdNotify(socket, state string) error {
	if socket == "" {
		return nil
	}
	if strings.HasPrefix(socket, "@") {
		socket = "\x00" + socket[1:]
	}
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: socket, Net: "unixgram"})
	if err != nil {
		return err
	}
	defer conn.Close()
	_, err = conn.Write([]byte(state))
	return err
}
