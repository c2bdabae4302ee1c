package testutil

import (
	"os"
	"testing"
)

// CIEnv is the variable .ci/run sets: with it, a test whose outside part
// (a browser, PostgreSQL, promtool, a pseudo-terminal) is missing fails
// instead of skipping, so CI never passes by skipping.
const CIEnv = "CLAUDEFLARE_CI"

// Missing ends the test because what it needs is not on this machine:
// a skip with one line saying what is missing on a developer's machine,
// a failure under CI (CLAUDEFLARE_CI set), where .ci/run provides it.
func Missing(t testing.TB, what string) {
	t.Helper()
	if os.Getenv(CIEnv) != "" {
		t.Fatalf("%s (%s is set: .ci/run provides it, so this is a failure, not a skip)", what, CIEnv)
	}
	t.Skip(what)
}
