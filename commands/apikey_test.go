package commands_test

// The apikey commands are tested as a transcript in
// testdata/script/apikey.txtar, their audit rows in audit.txtar.

// mustRunErr runs claudeflare, fails the test unless it exits 0, and
// returns its stdout and stderr.
func (c *runner) mustRunErr(stdin string, args ...string) (string, string) {
	c.t.Helper()
	out, errs, code := c.Run(stdin, args...)
	if code != 0 {
		c.t.Fatalf("claudeflare %v: exit %d: %s", args, code, errs)
	}
	return out, errs
}
