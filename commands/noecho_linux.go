package commands

import "golang.org/x/sys/unix"

// echoOff turns the terminal's echo off before the prompt is printed, so
// that nothing typed after the prompt appears, however fast it comes; the
// returned func restores the terminal.
func echoOff(fd int) (restore func(), err error) {
	old, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return nil, err
	}
	t := *old
	t.Lflag &^= unix.ECHO
	if err := unix.IoctlSetTermios(fd, unix.TCSETS, &t); err != nil {
		return nil, err
	}
	return func() { unix.IoctlSetTermios(fd, unix.TCSETS, old) }, nil
}
