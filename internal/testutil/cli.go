package testutil

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// CLI runs the claudeflare command line as a real process: the test binary
// re-executed, its TestMain running the CLI when Env holds
// CLAUDEFLARE_TEST_AS_BINARY=1 (commands' and e2e's TestMain do).
type CLI struct {
	T   testing.TB
	Env []string // the whole environment of each process
}

// Cmd is a command ready to start, reading stdin.
func (c *CLI) Cmd(stdin string, args ...string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = c.Env
	cmd.Stdin = strings.NewReader(stdin)
	return cmd
}

// Run runs a command to completion: stdout, stderr, exit code.
func (c *CLI) Run(stdin string, args ...string) (string, string, int) {
	c.T.Helper()
	cmd := c.Cmd(stdin, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		c.T.Fatal(err)
	}
	return out.String(), errb.String(), code
}

// MustRun runs a command that must exit 0 and returns its stdout.
func (c *CLI) MustRun(stdin string, args ...string) string {
	c.T.Helper()
	out, errs, code := c.Run(stdin, args...)
	if code != 0 {
		c.T.Fatalf("claudeflare %v: exit %d: %s", args, code, errs)
	}
	return out
}
