package commands_test

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/rogpeppe/go-internal/testscript"
)

// scriptT runs testscript scripts and records, per script, whether it
// failed and what it logged, instead of failing the test.
type scriptT struct {
	mu      sync.Mutex
	name    string
	results map[string]*scriptResult
	cur     *scriptResult
}

type scriptResult struct {
	failed, crashed bool
	log             strings.Builder
}

func (t *scriptT) Skip(a ...any) { t.Fatal(a...) }
func (t *scriptT) Fatal(a ...any) {
	t.Log(a...)
	t.FailNow()
}
func (t *scriptT) Parallel() {}
func (t *scriptT) Log(a ...any) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.cur != nil {
		fmt.Fprintln(&t.cur.log, a...)
	}
}
func (t *scriptT) FailNow() {
	t.mu.Lock()
	if t.cur != nil {
		t.cur.failed = true
	}
	t.mu.Unlock()
	runtime.Goexit()
}
func (t *scriptT) Verbose() bool { return false }
func (t *scriptT) Run(name string, f func(testscript.T)) {
	r := &scriptResult{}
	t.mu.Lock()
	t.results[name], t.cur = r, r
	t.mu.Unlock()
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer func() {
			if e := recover(); e != nil {
				r.crashed = true
				fmt.Fprintf(&r.log, "panic: %v\n", e)
			}
		}()
		f(t)
	}()
	<-done
}

// TestScriptCommandsCheck: the custom script commands honour "!", fail on
// a path they cannot walk or read and on a number they cannot parse, and
// print their usage (never crash) when given the wrong arguments.
func TestScriptCommandsCheck(t *testing.T) {
	const files = `
-- f --
plain
-- d/a --
one
-- d/b --
two
-- empty --
`
	cases := []struct {
		name   string
		script string
		fail   string // "" = the script passes; else a text its log must hold
	}{
		{"mode-ok", "chmod 0640 f\nmode f 0640\n! mode f 0600", ""},
		{"mode-neg-equal", "chmod 0640 f\n! mode f 0640", "has mode 0640"},
		{"mode-differs", "chmod 0640 f\nmode f 0600", "want 0600"},
		{"mode-bad-number", "mode f 06x0", "OCTAL must be"},
		{"mode-bad-number-neg", "! mode f 9", "OCTAL must be"},
		{"mode-missing-path", "! mode nothere 0600", "nothere"},
		{"mode-usage", "mode f", "usage: mode PATH OCTAL"},
		{"nosecret-ok", "fake-api-key x key.txt\nnosecret f d\n! nosecret key.txt", ""},
		{"nosecret-found", "fake-api-key x key.txt\nnosecret d key.txt", "key.txt contains a plaintext token"},
		{"nosecret-neg-clean", "! nosecret f d", "no plaintext token"},
		{"nosecret-missing-path", "nosecret d nothere", "nothere"},
		{"nosecret-missing-path-neg", "fake-api-key x key.txt\n! nosecret key.txt nothere", "nothere"},
		{"nosecret-usage", "nosecret", "usage: nosecret PATH..."},
		{"refreshes-ok", "fake-refreshes nobody 0\n! fake-refreshes nobody 1", ""},
		{"refreshes-neg-equal", "! fake-refreshes nobody 0", "want another count"},
		{"refreshes-differs", "fake-refreshes nobody 2", "want 2"},
		{"refreshes-bad-number", "fake-refreshes nobody zero", "N must be a whole number"},
		{"refreshes-bad-number-neg", "! fake-refreshes nobody zero", "N must be a whole number"},
		{"refreshes-usage", "fake-refreshes nobody", "usage: fake-refreshes NAME N"},
		{"snapshot-ok", "snapshot s d\nunchanged s d\ncp f d/a\n! unchanged s d", ""},
		{"unchanged-changed", "snapshot s d\ncp f d/a\nunchanged s d", "files changed"},
		{"unchanged-added", "snapshot s d\ncp f d/c\nunchanged s d", "(new)"},
		{"unchanged-mode", "chmod 0644 d/a\nsnapshot s d\nchmod 0600 d/a\nunchanged s d", "files changed: [$WORK/d/a]"},
		{"unchanged-dir-mode", "chmod 0755 d\nsnapshot s d\nchmod 0700 d\nunchanged s d", "files changed: [$WORK/d]"},
		{"unchanged-dir-added", "snapshot s d\nmkdir d/e\nunchanged s d", "$WORK/d/e (new)"},
		{"unchanged-link-retargeted", "symlink d/l -> a\nsnapshot s d\nrm d/l\nsymlink d/l -> b\nunchanged s d", "files changed: [$WORK/d/l]"},
		{"unchanged-neg-same", "snapshot s d\n! unchanged s d", "no file in d changed"},
		{"unchanged-missing-dir", "snapshot s d\nunchanged s nothere", "nothere"},
		{"unchanged-missing-dir-neg", "snapshot s d\n! unchanged s nothere", "nothere"},
		{"unchanged-no-snapshot", "unchanged nosuch d", "no snapshot named nosuch"},
		{"snapshot-missing-dir", "snapshot s nothere", "nothere"},
		{"snapshot-usage", "snapshot s", "usage: snapshot NAME DIR"},
		{"snapshot-neg", "! snapshot s d", "unsupported: ! snapshot"},
		{"unchanged-usage", "unchanged", "usage: unchanged NAME DIR"},
		{"revoke-usage", "fake-revoke", "usage: fake-revoke NAME"},
		{"revoke-neg", "! fake-revoke x", "unsupported: ! fake-revoke"},
		{"refresh-token-usage", "fake-refresh-token x", "usage: fake-refresh-token NAME FILE"},
		{"api-key-usage", "fake-api-key", "usage: fake-api-key NAME FILE"},
		{"api-key-neg", "! fake-api-key x k", "unsupported: ! fake-api-key"},
		{"notext-ok", "notext three f d\n! notext two f d", ""},
		{"notext-found", "notext two f d", "d/b contains the text"},
		{"notext-neg-absent", "! notext three f d", "the text is in no file"},
		{"notext-missing-path", "notext x nothere", "nothere"},
		{"notext-missing-path-neg", "! notext two d nothere", "nothere"},
		{"notext-empty", "notext '' f", "TEXT is empty"},
		{"notext-usage", "notext x", "usage: notext TEXT PATH..."},
		{"exits-ok", "exits 0 claudeflare --version\nstdout 'claudeflare version'\nexits 2 claudeflare --nope\nstderr 'nope'", ""},
		{"exits-differs", "exits 1 claudeflare --nope", "exited with status 2, want 1"},
		{"exits-zero-differs", "exits 2 claudeflare --version", "exited with status 0, want 2"},
		{"exits-no-prog", "exits 0 no-such-program-here", "no-such-program-here"},
		{"exits-bad-number", "exits two claudeflare --version", "N must be a whole number"},
		{"exits-neg", "! exits 1 claudeflare --nope", "unsupported: ! exits"},
		{"exits-usage", "exits 0", "usage: exits N PROG ARGS..."},
		{"sqlite-ok", "sqlite empty 'CREATE TABLE t (x)'\nsqlite empty 'INSERT INTO t VALUES (1)'", ""},
		{"sqlite-bad-sql", "sqlite empty 'CREATE TABLE t (x); UPDATE nosuch SET x = 1'", "no such table"},
		{"sqlite-missing-file", "sqlite nothere 'SELECT 1'", "nothere"},
		{"sqlite-neg", "! sqlite f 'SELECT 1'", "unsupported: ! sqlite"},
		{"sqlite-usage", "sqlite f", "usage: sqlite FILE SQL"},
		{"chown-ok", "[!root] skip\nsnapshot s d\nchown 65534 d/a\n! unchanged s d", ""},
		{"chown-owner-checked", "[!root] skip\nsnapshot s d\nchown 65534 d/a\nunchanged s d", "files changed: [$WORK/d/a]"},
		{"chown-missing-path", "chown 0 nothere", "nothere"},
		{"chown-bad-number", "chown nobody f", "UID must be a whole number"},
		{"chown-neg", "! chown 0 f", "unsupported: ! chown"},
		{"chown-usage", "chown 0", "usage: chown UID PATH"},
		{"root-condition", "[root] exec claudeflare --version\n[!root] exec claudeflare --version\nstdout 'claudeflare version'", ""},
		{"unknown-condition", "[nosuchcond] exec claudeflare --version", "unknown condition"},
		{"audit-rechain-ok", "exec claudeflare apikey create a\nexec claudeflare apikey create b\nexec claudeflare audit --verify\naudit-rechain data/vault.db 1\n! exec claudeflare audit --verify\nstderr 'carry no MAC'", ""},
		{"audit-rechain-no-rows", "exec claudeflare apikey create a\naudit-rechain data/vault.db 9", "no audit row from row 9 on"},
		{"audit-rechain-not-a-vault", "audit-rechain f 1", "audit-rechain: "},
		{"audit-rechain-missing", "audit-rechain nothere 1", "nothere"},
		{"audit-rechain-bad-number", "audit-rechain f zero", "FROM must be a row number"},
		{"audit-rechain-neg", "! audit-rechain f 1", "unsupported: ! audit-rechain"},
		{"audit-rechain-usage", "audit-rechain f", "usage: audit-rechain FILE FROM"},
		{"first-release-ok", "first-release data v1\nmode v1 0700\nmode v1/vault.db 0600\nmode v1/log.db 0600\nmode v1/identity.txt 0600\ngrep AGE-SECRET-KEY v1/identity.txt\nfirst-release backup.age b.age\nmode b.age 0600\ngrep '^age-encryption.org' b.age", ""},
		{"first-release-missing", "first-release nothere x", "nothere"},
		{"first-release-neg", "! first-release backup.age x", "unsupported: ! first-release"},
		{"first-release-usage", "first-release data", "usage: first-release NAME DEST"},
		{"readvar-ok", "readvar A f\nreadvar B d/b 't(w)o'\nreadvar C d/a '^o.'\nexec claudeflare --version\n# $A $B $C\ncp f g\ngrep '^'$A'$' g\ngrep $B'o' d/b\ngrep '^'$C'e$' d/a", ""},
		{"readvar-no-match", "readvar A f 'nothing'", "no match for nothing in f"},
		{"readvar-empty", "readvar A empty", "empty is empty"},
		{"readvar-missing-file", "readvar A nothere", "nothere"},
		{"readvar-bad-regexp", "readvar A f '('", "missing closing )"},
		{"readvar-neg", "! readvar A f", "unsupported: ! readvar"},
		{"readvar-usage", "readvar A", "usage: readvar VAR FILE [REGEXP]"},
		{"readvar-usage-long", "readvar A f x y", "usage: readvar VAR FILE [REGEXP]"},
	}
	dir := t.TempDir()
	for _, c := range cases {
		if err := os.WriteFile(filepath.Join(dir, c.name+".txtar"), []byte(c.script+"\n"+files), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	st := &scriptT{results: map[string]*scriptResult{}}
	testscript.RunT(st, scriptParams(dir))
	for _, c := range cases {
		r := st.results[c.name]
		switch {
		case r == nil:
			t.Errorf("%s: did not run", c.name)
		case r.crashed:
			t.Errorf("%s: crashed instead of failing with a message:\n%s", c.name, r.log.String())
		case c.fail == "" && r.failed:
			t.Errorf("%s: failed, want pass:\n%s", c.name, r.log.String())
		case c.fail != "" && !r.failed:
			t.Errorf("%s: passed, want a failure mentioning %q:\n%s", c.name, c.fail, r.log.String())
		case c.fail != "" && !strings.Contains(r.log.String(), c.fail):
			t.Errorf("%s: failed without mentioning %q:\n%s", c.name, c.fail, r.log.String())
		}
	}
}
