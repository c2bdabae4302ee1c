//go:build !linux

package commands

// echoOff does nothing here: term.ReadPassword turns echo off itself,
// once the prompt is printed.
func echoOff(fd int) (restore func(), err error) { return func() {}, nil }
