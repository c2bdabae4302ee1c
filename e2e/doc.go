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
//	go test -tags soak -run TestSoak -timeout 30m -v ./e2e           # ten-minute soak
//	go test -run '^$' -bench . -benchtime 1x ./e2e                   # process benchmarks
//
// See docs/BENCHMARKS.md for the figures.
package e2e
