package commands_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/rogpeppe/go-internal/testscript"

	"github.com/claudeflare/claudeflare/commands"
	"github.com/claudeflare/claudeflare/internal/fakeapi"
)

func TestMain(m *testing.M) {
	// Re-executed as the real binary by the process tests (daemon_test.go).
	if os.Getenv("CLAUDEFLARE_TEST_AS_BINARY") == "1" {
		os.Exit(commands.Run(os.Args, os.Stdin, os.Stdout, os.Stderr))
	}
	testscript.Main(m, map[string]func(){
		"claudeflare": func() { os.Exit(commands.Run(os.Args, os.Stdin, os.Stdout, os.Stderr)) },
	})
}

// TestScripts runs testdata/script/*.txtar against a fake Anthropic API.
// Each script has its own data dir ($CLAUDEFLARE_DATA_DIR = $WORK/data).
//
// Extra commands (a leading ! inverts the checks; the actions refuse it):
//
//	fake-refresh-token NAME FILE  write a live refresh token for NAME to FILE
//	fake-api-key NAME FILE        write an API key for NAME to FILE
//	fake-revoke NAME              kill NAME's refresh tokens (invalid_grant)
//	fake-refreshes NAME N         NAME's refresh token was used N times
//	nosecret PATH...              no token the fake ever issued appears in PATH (files or dirs)
//	mode PATH OCTAL               PATH has permission bits OCTAL
//	snapshot NAME DIR             remember the hash of every file in DIR
//	unchanged NAME DIR            every file in DIR is byte-identical to snapshot NAME
func TestScripts(t *testing.T) {
	fake := fakeapi.New()
	t.Cleanup(fake.Close)
	testscript.Run(t, scriptParams(fake, "../testdata/script"))
}

func scriptParams(fake *fakeapi.Server, dir string) testscript.Params {
	return testscript.Params{
		Dir:                 dir,
		RequireExplicitExec: true,
		Setup: func(env *testscript.Env) error {
			env.Setenv("HOME", env.WorkDir)
			env.Setenv("XDG_CONFIG_HOME", filepath.Join(env.WorkDir, ".config"))
			env.Setenv("XDG_DATA_HOME", filepath.Join(env.WorkDir, ".local/share"))
			env.Setenv("CLAUDEFLARE_DATA_DIR", filepath.Join(env.WorkDir, "data"))
			env.Setenv("CLAUDEFLARE_UPSTREAM_URL", fake.URL)
			env.Setenv("CLAUDEFLARE_OAUTH_TOKEN_URL", fake.TokenURL())
			env.Setenv("FAKE_URL", fake.URL)
			return nil
		},
		Cmds: scriptCmds(fake),
	}
}

// scriptCmd checks the argument count of a custom command and whether it
// may be negated, before running it.
func scriptCmd(usage string, nargs int, negatable bool, f func(ts *testscript.TestScript, neg bool, args []string)) func(*testscript.TestScript, bool, []string) {
	name, _, _ := strings.Cut(usage, " ")
	return func(ts *testscript.TestScript, neg bool, args []string) {
		if (nargs >= 0 && len(args) != nargs) || (nargs < 0 && len(args) < -nargs) {
			ts.Fatalf("usage: %s", usage)
		}
		if neg && !negatable {
			ts.Fatalf("unsupported: ! %s (it is an action, not a check)", name)
		}
		f(ts, neg, args)
	}
}

func scriptCmds(fake *fakeapi.Server) map[string]func(ts *testscript.TestScript, neg bool, args []string) {
	var mu sync.Mutex
	snapshots := map[string]map[string]string{}
	return map[string]func(ts *testscript.TestScript, neg bool, args []string){
		"fake-refresh-token": scriptCmd("fake-refresh-token NAME FILE", 2, false, func(ts *testscript.TestScript, neg bool, args []string) {
			ts.Check(os.WriteFile(ts.MkAbs(args[1]), []byte(fake.NewOAuthAccount(args[0])+"\n"), 0o600))
		}),
		"fake-api-key": scriptCmd("fake-api-key NAME FILE", 2, false, func(ts *testscript.TestScript, neg bool, args []string) {
			ts.Check(os.WriteFile(ts.MkAbs(args[1]), []byte(fake.NewAPIKey(args[0])+"\n"), 0o600))
		}),
		"fake-revoke": scriptCmd("fake-revoke NAME", 1, false, func(ts *testscript.TestScript, neg bool, args []string) {
			fake.RevokeAccount(args[0])
		}),
		"fake-refreshes": scriptCmd("fake-refreshes NAME N", 2, true, func(ts *testscript.TestScript, neg bool, args []string) {
			want, err := strconv.Atoi(args[1])
			if err != nil {
				ts.Fatalf("fake-refreshes: N must be a whole number, not %q", args[1])
			}
			got := fake.RefreshCount(args[0])
			switch {
			case !neg && got != want:
				ts.Fatalf("%s refreshed %d times, want %d", args[0], got, want)
			case neg && got == want:
				ts.Fatalf("%s refreshed %d times, want another count", args[0], got)
			}
		}),
		"nosecret": scriptCmd("nosecret PATH...", -1, true, func(ts *testscript.TestScript, neg bool, args []string) {
			tokens := fake.AllTokens()
			var found []string
			for _, p := range args {
				err := filepath.WalkDir(ts.MkAbs(p), func(path string, d fs.DirEntry, err error) error {
					if err != nil || d.IsDir() {
						return err
					}
					b, err := os.ReadFile(path)
					if err != nil {
						return err
					}
					for _, tok := range tokens {
						if bytes.Contains(b, []byte(tok)) {
							found = append(found, path)
							break
						}
					}
					return nil
				})
				if err != nil {
					ts.Fatalf("nosecret: %v", err)
				}
			}
			switch {
			case !neg && len(found) > 0:
				ts.Fatalf("%s contains a plaintext token", strings.Join(found, ", "))
			case neg && len(found) == 0:
				ts.Fatalf("no plaintext token in %s", strings.Join(args, " "))
			}
		}),
		"mode": scriptCmd("mode PATH OCTAL", 2, true, func(ts *testscript.TestScript, neg bool, args []string) {
			want, err := strconv.ParseUint(args[1], 8, 32)
			if err != nil || want > 0o777 {
				ts.Fatalf("mode: OCTAL must be permission bits such as 0600, not %q", args[1])
			}
			st, err := os.Stat(ts.MkAbs(args[0]))
			ts.Check(err)
			got := uint64(st.Mode().Perm())
			switch {
			case !neg && got != want:
				ts.Fatalf("%s has mode %04o, want %04o", args[0], got, want)
			case neg && got == want:
				ts.Fatalf("%s has mode %04o", args[0], got)
			}
		}),
		"snapshot": scriptCmd("snapshot NAME DIR", 2, false, func(ts *testscript.TestScript, neg bool, args []string) {
			h := hashDir(ts, ts.MkAbs(args[1]))
			mu.Lock()
			defer mu.Unlock()
			snapshots[ts.Getenv("WORK")+"\x00"+args[0]] = h
		}),
		"unchanged": scriptCmd("unchanged NAME DIR", 2, true, func(ts *testscript.TestScript, neg bool, args []string) {
			mu.Lock()
			before, ok := snapshots[ts.Getenv("WORK")+"\x00"+args[0]]
			mu.Unlock()
			if !ok {
				ts.Fatalf("unchanged: no snapshot named %s", args[0])
			}
			after := hashDir(ts, ts.MkAbs(args[1]))
			d := diffHashes(before, after)
			switch {
			case !neg && d != "":
				ts.Fatalf("files changed: %s", d)
			case neg && d == "":
				ts.Fatalf("no file in %s changed", args[1])
			}
		}),
	}
}

// hashDir hashes every file under dir; a missing dir or a file it cannot
// read fails the script.
func hashDir(ts *testscript.TestScript, dir string) map[string]string {
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		// SQLite's shared-memory index is rebuilt by any reader; it holds
		// no data of its own.
		if strings.HasSuffix(path, "-shm") {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(b)
		out[path] = hex.EncodeToString(sum[:])
		return nil
	})
	ts.Check(err)
	return out
}

func diffHashes(a, b map[string]string) string {
	var diffs []string
	for k, v := range a {
		if b[k] != v {
			diffs = append(diffs, k)
		}
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			diffs = append(diffs, k+" (new)")
		}
	}
	if len(diffs) == 0 {
		return ""
	}
	sort.Strings(diffs)
	return fmt.Sprint(diffs)
}
