package testutil

import (
	"testing"
	"time"
)

// WaitFor polls cond until it holds (the state a test waits for, not a
// time), failing after a deadline generous enough for a loaded machine.
func WaitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}
