// Package e2e holds claudeflare's end-to-end evidence: the daemon run as
// a real process against the fake Anthropic API (internal/fakeapi) and
// killed, starved of disk, fed a misbehaving upstream and left running
// for a long time, plus process-level benchmarks against a bare
// httputil.ReverseProxy. It has no code of its own outside the tests.
//
// Default `go test ./e2e` runs short versions. Longer ones:
//
//	CLAUDEFLARE_E2E_ROUNDS=25 go test -run TestCrash -v ./e2e        # crash rounds
//	CLAUDEFLARE_E2E_CHAOS=60s go test -run TestChaos -v ./e2e        # chaos duration
//	go test -tags soak -run TestLogLocked -v ./e2e                 # log locked past the busy timeout
//	go test -tags soak -run TestSoak -timeout 30m -v ./e2e           # ten-minute soak (CLAUDEFLARE_SOAK=1h)
//	go test -run '^$' -bench . -benchtime 10x -timeout 30m ./e2e     # process benchmarks
//
// The storage tests mount a small tmpfs for the log when they may (root);
// otherwise a full disk is an RLIMIT_FSIZE on the daemon. See
// docs/BENCHMARKS.md for the figures.
package e2e
