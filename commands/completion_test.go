package commands_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/claudeflare/claudeflare/commands"
)

// The completion scripts and the __complete helper are tested as a
// transcript in testdata/script/completion.txtar.

// runInProcess runs claudeflare in this process, so that a test can set
// the package's variables first.
func runInProcess(args ...string) (stdout, stderr string, code int) {
	var out, errb bytes.Buffer
	code = commands.Run(append([]string{"claudeflare"}, args...), strings.NewReader(""), &out, &errb)
	return out.String(), errb.String(), code
}

// TestVersionFromLdflags checks that the variables -ldflags -X sets make
// --version print the version, commit and build date: in process always,
// and (but under -short) in a binary built with those flags.
func TestVersionFromLdflags(t *testing.T) {
	const (
		version = "v1.2.3"
		commit  = "0123456789abcdef0123"
		date    = "2026-02-03T04:05:06Z"
	)
	want := "claudeflare version v1.2.3\ncommit: 0123456789abcdef0123\nbuilt: 2026-02-03T04:05:06Z\ngo: " +
		runtime.Version() + " " + runtime.GOOS + "/" + runtime.GOARCH + "\n"
	saved := [3]string{commands.Version, commands.Commit, commands.Date}
	commands.Version, commands.Commit, commands.Date = version, commit, date
	out, errs, code := runInProcess("--version")
	commands.Version, commands.Commit, commands.Date = saved[0], saved[1], saved[2]
	if code != 0 || out != want {
		t.Fatalf("--version in process = %q (exit %d, %s), want %q", out, code, errs, want)
	}
	commands.Version, commands.Commit, commands.Date = version, commit, date
	out, errs, code = runInProcess("version")
	commands.Version, commands.Commit, commands.Date = saved[0], saved[1], saved[2]
	if code != 0 || out != want {
		t.Fatalf("version in process = %q (exit %d, %s), want %q", out, code, errs, want)
	}

	if testing.Short() {
		t.Log("-short: the binary built with -ldflags is not checked")
		return
	}
	goTool := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(goTool); err != nil {
		t.Skip("no go tool")
	}
	bin := filepath.Join(t.TempDir(), "claudeflare")
	pkg := "github.com/claudeflare/claudeflare/commands"
	ldflags := "-X " + pkg + ".Version=" + version + " -X " + pkg + ".Commit=" + commit + " -X " + pkg + ".Date=" + date
	cmd := exec.Command(goTool, "build", "-o", bin, "-ldflags", ldflags, "..")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	b, err := exec.Command(bin, "--version").CombinedOutput()
	if err != nil {
		t.Fatalf("--version: %v %s", err, b)
	}
	if string(b) != want {
		t.Fatalf("--version = %q, want %q", b, want)
	}
}
