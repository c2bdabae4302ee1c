//go:build race

package e2e

// raceSlowdown stretches the time promises checked by the crash test: the
// race detector makes the daemon (the re-executed test binary) several
// times slower, so on a small machine its log writer cannot commit within
// one flush interval under 32 clients. Normal builds check the promise as
// written.
const raceSlowdown = 10
