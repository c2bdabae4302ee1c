package e2e

import (
	"os"
	"testing"

	"github.com/claudeflare/claudeflare/commands"
)

// TestMain lets the test binary stand in for two programs: the real
// claudeflare binary (CLAUDEFLARE_TEST_AS_BINARY=1, as in commands'
// tests) and a bare httputil.ReverseProxy for the benchmarks
// (CLAUDEFLARE_E2E_BARE=1). Both are then real processes, killed and
// measured through /proc like any other.
func TestMain(m *testing.M) {
	switch {
	case os.Getenv("CLAUDEFLARE_TEST_AS_BINARY") == "1":
		os.Exit(profiled(func() int { return commands.Run(os.Args, os.Stdin, os.Stdout, os.Stderr) }))
	case os.Getenv("CLAUDEFLARE_E2E_BARE") == "1":
		os.Exit(profiled(runBare))
	}
	os.Exit(m.Run())
}
