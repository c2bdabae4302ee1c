package commands_test

import (
	"bytes"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"

	_ "github.com/mattn/go-sqlite3"
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
//	snapshot NAME DIR             remember every file in DIR (content) and dir under it (mode, owner)
//	unchanged NAME DIR            every file in DIR is byte-identical to snapshot NAME, with the
//	                              same mode and owner; no file or dir came or went
//	exits N PROG ARGS...          run PROG (as exec does) and require exit status N
//	sqlite FILE SQL               run SQL on the SQLite database FILE, as someone with a shell could
//	readvar VAR FILE [REGEXP]     set $VAR to FILE's text, trimmed (or to REGEXP's first match in it)
//	notext TEXT PATH...           no file in PATH (files or dirs) contains TEXT
//	audit-rechain FILE FROM       recompute the audit log's links in the vault FILE from row FROM on
//	                              with plain SHA-256 (all an attacker without the key can do) and
//	                              move the head to the last row
//	chown UID PATH                make PATH (not a link's target) owned by UID and group UID
//	first-release NAME DEST       copy testdata/upgrade/v1/NAME (what the first release made) to
//	                              DEST with private modes: a dir 0700 and its files 0600, a file 0600
//
// Extra condition: [root] when the tests run as root (chown needs it).
func TestScripts(t *testing.T) {
	testscript.Run(t, scriptParams("../testdata/script"))
}

// fakeKey holds each script's own fake API in its testscript.Env: scripts
// run in parallel, and one fake shared by all would mix their counts
// (two scripts both refreshing an account named "work").
type fakeKey struct{}

func fakeOf(ts *testscript.TestScript) *fakeapi.Server {
	return ts.Value(fakeKey{}).(*fakeapi.Server)
}

func scriptParams(dir string) testscript.Params {
	return testscript.Params{
		Dir:                 dir,
		RequireExplicitExec: true,
		Setup: func(env *testscript.Env) error {
			fake := fakeapi.New()
			env.Defer(fake.Close)
			env.Values[fakeKey{}] = fake
			env.Setenv("HOME", env.WorkDir)
			env.Setenv("XDG_CONFIG_HOME", filepath.Join(env.WorkDir, ".config"))
			env.Setenv("XDG_DATA_HOME", filepath.Join(env.WorkDir, ".local/share"))
			env.Setenv("CLAUDEFLARE_DATA_DIR", filepath.Join(env.WorkDir, "data"))
			env.Setenv("CLAUDEFLARE_UPSTREAM_URL", fake.URL)
			env.Setenv("CLAUDEFLARE_OAUTH_TOKEN_URL", fake.TokenURL())
			env.Setenv("FAKE_URL", fake.URL)
			return nil
		},
		Cmds: scriptCmds(),
		Condition: func(cond string) (bool, error) {
			if cond == "root" {
				return os.Geteuid() == 0, nil
			}
			return false, fmt.Errorf("unknown condition %q", cond)
		},
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

func scriptCmds() map[string]func(ts *testscript.TestScript, neg bool, args []string) {
	var mu sync.Mutex
	snapshots := map[string]map[string]string{}
	return map[string]func(ts *testscript.TestScript, neg bool, args []string){
		"fake-refresh-token": scriptCmd("fake-refresh-token NAME FILE", 2, false, func(ts *testscript.TestScript, neg bool, args []string) {
			ts.Check(os.WriteFile(ts.MkAbs(args[1]), []byte(fakeOf(ts).NewOAuthAccount(args[0])+"\n"), 0o600))
		}),
		"fake-api-key": scriptCmd("fake-api-key NAME FILE", 2, false, func(ts *testscript.TestScript, neg bool, args []string) {
			ts.Check(os.WriteFile(ts.MkAbs(args[1]), []byte(fakeOf(ts).NewAPIKey(args[0])+"\n"), 0o600))
		}),
		"fake-revoke": scriptCmd("fake-revoke NAME", 1, false, func(ts *testscript.TestScript, neg bool, args []string) {
			fakeOf(ts).RevokeAccount(args[0])
		}),
		"fake-refreshes": scriptCmd("fake-refreshes NAME N", 2, true, func(ts *testscript.TestScript, neg bool, args []string) {
			want, err := strconv.Atoi(args[1])
			if err != nil {
				ts.Fatalf("fake-refreshes: N must be a whole number, not %q", args[1])
			}
			got := fakeOf(ts).RefreshCount(args[0])
			switch {
			case !neg && got != want:
				ts.Fatalf("%s refreshed %d times, want %d", args[0], got, want)
			case neg && got == want:
				ts.Fatalf("%s refreshed %d times, want another count", args[0], got)
			}
		}),
		"nosecret": scriptCmd("nosecret PATH...", -1, true, func(ts *testscript.TestScript, neg bool, args []string) {
			found := filesContaining(ts, "nosecret", args, fakeOf(ts).AllTokens())
			switch {
			case !neg && len(found) > 0:
				ts.Fatalf("%s contains a plaintext token", strings.Join(found, ", "))
			case neg && len(found) == 0:
				ts.Fatalf("no plaintext token in %s", strings.Join(args, " "))
			}
		}),
		"notext": scriptCmd("notext TEXT PATH...", -2, true, func(ts *testscript.TestScript, neg bool, args []string) {
			if args[0] == "" {
				ts.Fatalf("notext: TEXT is empty")
			}
			found := filesContaining(ts, "notext", args[1:], []string{args[0]})
			switch {
			case !neg && len(found) > 0:
				ts.Fatalf("%s contains the text", strings.Join(found, ", "))
			case neg && len(found) == 0:
				ts.Fatalf("the text is in no file of %s", strings.Join(args[1:], " "))
			}
		}),
		"exits": scriptCmd("exits N PROG ARGS...", -2, false, func(ts *testscript.TestScript, neg bool, args []string) {
			want, err := strconv.Atoi(args[0])
			if err != nil || want < 0 {
				ts.Fatalf("exits: N must be a whole number, not %q", args[0])
			}
			err = ts.Exec(args[1], args[2:]...)
			got := 0
			var exit *exec.ExitError
			switch {
			case errors.As(err, &exit):
				got = exit.ExitCode()
			case err != nil:
				ts.Fatalf("exits: %v", err)
			}
			if got != want {
				ts.Fatalf("%s exited with status %d, want %d", args[1], got, want)
			}
		}),
		"sqlite": scriptCmd("sqlite FILE SQL", 2, false, func(ts *testscript.TestScript, neg bool, args []string) {
			path := ts.MkAbs(args[0])
			if _, err := os.Stat(path); err != nil {
				ts.Fatalf("sqlite: %v", err)
			}
			db, err := sql.Open("sqlite3", "file:"+path+"?_busy_timeout=5000")
			ts.Check(err)
			defer db.Close()
			if _, err := db.Exec(args[1]); err != nil {
				ts.Fatalf("sqlite: %v", err)
			}
		}),
		"chown": scriptCmd("chown UID PATH", 2, false, func(ts *testscript.TestScript, neg bool, args []string) {
			uid, err := strconv.Atoi(args[0])
			if err != nil || uid < 0 {
				ts.Fatalf("chown: UID must be a whole number, not %q", args[0])
			}
			ts.Check(os.Lchown(ts.MkAbs(args[1]), uid, uid))
		}),
		"audit-rechain": scriptCmd("audit-rechain FILE FROM", 2, false, func(ts *testscript.TestScript, neg bool, args []string) {
			from, err := strconv.ParseInt(args[1], 10, 64)
			if err != nil || from < 1 {
				ts.Fatalf("audit-rechain: FROM must be a row number, not %q", args[1])
			}
			path := ts.MkAbs(args[0])
			if _, err := os.Stat(path); err != nil {
				ts.Fatalf("audit-rechain: %v", err)
			}
			if err := rechainAudit(path, from); err != nil {
				ts.Fatalf("audit-rechain: %v", err)
			}
		}),
		"first-release": scriptCmd("first-release NAME DEST", 2, false, func(ts *testscript.TestScript, neg bool, args []string) {
			src, err := filepath.Abs(filepath.Join("..", "testdata", "upgrade", "v1", filepath.FromSlash(args[0])))
			ts.Check(err)
			dst := ts.MkAbs(args[1])
			st, err := os.Stat(src)
			if err != nil {
				ts.Fatalf("first-release: %v", err)
			}
			if !st.IsDir() {
				b, err := os.ReadFile(src)
				ts.Check(err)
				ts.Check(os.WriteFile(dst, b, 0o600))
				return
			}
			ts.Check(os.MkdirAll(dst, 0o700))
			ts.Check(os.Chmod(dst, 0o700))
			entries, err := os.ReadDir(src)
			ts.Check(err)
			for _, e := range entries {
				if !e.Type().IsRegular() {
					ts.Fatalf("first-release: %s is not a regular file", filepath.Join(args[0], e.Name()))
				}
				b, err := os.ReadFile(filepath.Join(src, e.Name()))
				ts.Check(err)
				ts.Check(os.WriteFile(filepath.Join(dst, e.Name()), b, 0o600))
			}
		}),
		"readvar": scriptCmd("readvar VAR FILE [REGEXP]", -2, false, func(ts *testscript.TestScript, neg bool, args []string) {
			if len(args) > 3 {
				ts.Fatalf("usage: readvar VAR FILE [REGEXP]")
			}
			b, err := os.ReadFile(ts.MkAbs(args[1]))
			ts.Check(err)
			v := strings.TrimSpace(string(b))
			if len(args) == 3 {
				re, err := regexp.Compile("(?m)" + args[2])
				if err != nil {
					ts.Fatalf("readvar: %v", err)
				}
				m := re.FindStringSubmatch(v)
				switch {
				case m == nil:
					ts.Fatalf("readvar: no match for %s in %s", args[2], args[1])
				case len(m) > 1:
					v = m[1]
				default:
					v = m[0]
				}
			}
			if v == "" {
				ts.Fatalf("readvar: %s is empty", args[1])
			}
			ts.Setenv(args[0], v)
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

// rechainAudit recomputes every audit row's link from row from on with
// plain SHA-256 over the previous hash and the row's JSON, as the chain of
// the first release did, and moves the head to the last row.
func rechainAudit(path string, from int64) error {
	db, err := sql.Open("sqlite3", "file:"+path+"?_busy_timeout=5000")
	if err != nil {
		return err
	}
	defer db.Close()
	rows, err := db.Query(`SELECT id, ts, actor, action, detail, hash FROM audit_log ORDER BY id`)
	if err != nil {
		return err
	}
	type link struct {
		id         int64
		prev, hash []byte
	}
	var links []link
	prev := make([]byte, 32)
	for rows.Next() {
		var id, ts int64
		var actor, action, detail string
		var hash []byte
		if err := rows.Scan(&id, &ts, &actor, &action, &detail, &hash); err != nil {
			rows.Close()
			return err
		}
		if id < from {
			prev = hash
			continue
		}
		b, err := json.Marshal([]any{id, ts, actor, action, detail})
		if err != nil {
			rows.Close()
			return err
		}
		h := sha256.Sum256(append(append([]byte{}, prev...), b...))
		links = append(links, link{id, prev, h[:]})
		prev = h[:]
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	if len(links) == 0 {
		return fmt.Errorf("no audit row from row %d on", from)
	}
	for _, l := range links {
		if _, err := db.Exec(`UPDATE audit_log SET prev_hash = ?, hash = ? WHERE id = ?`, l.prev, l.hash, l.id); err != nil {
			return err
		}
	}
	last := links[len(links)-1]
	_, err = db.Exec(`UPDATE audit_head SET last_id = ?, hash = ?`, last.id, last.hash)
	return err
}

// filesContaining lists the files under paths that hold any of needles;
// a path it cannot walk or a file it cannot read fails the script.
func filesContaining(ts *testscript.TestScript, cmd string, paths, needles []string) []string {
	var found []string
	for _, p := range paths {
		err := filepath.WalkDir(ts.MkAbs(p), func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			for _, n := range needles {
				if bytes.Contains(b, []byte(n)) {
					found = append(found, path)
					break
				}
			}
			return nil
		})
		if err != nil {
			ts.Fatalf("%s: %v", cmd, err)
		}
	}
	return found
}

// hashDir hashes every file under dir with its mode and owner, and
// records every dir's mode and owner; a missing dir or a file it cannot
// read fails the script.
func hashDir(ts *testscript.TestScript, dir string) map[string]string {
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		// SQLite's shared-memory index is rebuilt by any reader; it holds
		// no data of its own.
		if strings.HasSuffix(path, "-shm") {
			return nil
		}
		fi, err := os.Lstat(path)
		if err != nil {
			return err
		}
		owner := -1
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			owner = int(st.Uid)
		}
		sum := ""
		if fi.Mode()&fs.ModeSymlink != 0 {
			target, err := os.Readlink(path)
			if err != nil {
				return err
			}
			sum = "-> " + target
		}
		if fi.Mode().IsRegular() {
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			h := sha256.Sum256(b)
			sum = hex.EncodeToString(h[:])
		}
		out[path] = fmt.Sprintf("%v uid %d %s", fi.Mode(), owner, sum)
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
