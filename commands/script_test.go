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
// Extra commands:
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
	var mu sync.Mutex
	snapshots := map[string]map[string]string{}
	testscript.Run(t, testscript.Params{
		Dir:                 "../testdata/script",
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
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			"fake-refresh-token": func(ts *testscript.TestScript, neg bool, args []string) {
				if len(args) != 2 {
					ts.Fatalf("usage: fake-refresh-token NAME FILE")
				}
				ts.Check(os.WriteFile(ts.MkAbs(args[1]), []byte(fake.NewOAuthAccount(args[0])+"\n"), 0o600))
			},
			"fake-api-key": func(ts *testscript.TestScript, neg bool, args []string) {
				if len(args) != 2 {
					ts.Fatalf("usage: fake-api-key NAME FILE")
				}
				ts.Check(os.WriteFile(ts.MkAbs(args[1]), []byte(fake.NewAPIKey(args[0])+"\n"), 0o600))
			},
			"fake-revoke": func(ts *testscript.TestScript, neg bool, args []string) {
				fake.RevokeAccount(args[0])
			},
			"fake-refreshes": func(ts *testscript.TestScript, neg bool, args []string) {
				want, _ := strconv.Atoi(args[1])
				if got := fake.RefreshCount(args[0]); got != want {
					ts.Fatalf("%s refreshed %d times, want %d", args[0], got, want)
				}
			},
			"nosecret": func(ts *testscript.TestScript, neg bool, args []string) {
				tokens := fake.AllTokens()
				for _, p := range args {
					filepath.WalkDir(ts.MkAbs(p), func(path string, d fs.DirEntry, err error) error {
						if err != nil || d.IsDir() {
							return err
						}
						b, err := os.ReadFile(path)
						ts.Check(err)
						for _, tok := range tokens {
							if bytes.Contains(b, []byte(tok)) {
								ts.Fatalf("%s contains a plaintext token", path)
							}
						}
						return nil
					})
				}
			},
			"mode": func(ts *testscript.TestScript, neg bool, args []string) {
				st, err := os.Stat(ts.MkAbs(args[0]))
				ts.Check(err)
				want, _ := strconv.ParseUint(args[1], 8, 32)
				if got := st.Mode().Perm(); uint64(got) != want {
					ts.Fatalf("%s has mode %04o, want %04o", args[0], got, want)
				}
			},
			"snapshot": func(ts *testscript.TestScript, neg bool, args []string) {
				mu.Lock()
				defer mu.Unlock()
				snapshots[ts.Getenv("WORK")+args[0]] = hashDir(ts, ts.MkAbs(args[1]))
			},
			"unchanged": func(ts *testscript.TestScript, neg bool, args []string) {
				mu.Lock()
				before := snapshots[ts.Getenv("WORK")+args[0]]
				mu.Unlock()
				after := hashDir(ts, ts.MkAbs(args[1]))
				if d := diffHashes(before, after); d != "" {
					ts.Fatalf("files changed: %s", d)
				}
			},
		},
	})
}

func hashDir(ts *testscript.TestScript, dir string) map[string]string {
	out := map[string]string{}
	filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		// SQLite's shared-memory index is rebuilt by any reader; it holds
		// no data of its own.
		if strings.HasSuffix(path, "-shm") {
			return nil
		}
		b, err := os.ReadFile(path)
		ts.Check(err)
		sum := sha256.Sum256(b)
		out[path] = hex.EncodeToString(sum[:])
		return nil
	})
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
