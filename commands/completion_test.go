package commands_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/claudeflare/claudeflare/commands"
)

func runInProcess(args ...string) (stdout, stderr string, code int) {
	var out, errb bytes.Buffer
	code = commands.Run(append([]string{"claudeflare"}, args...), strings.NewReader(""), &out, &errb)
	return out.String(), errb.String(), code
}

func TestCompletionScripts(t *testing.T) {
	for _, shell := range []string{"bash", "zsh", "fish"} {
		out, errs, code := runInProcess("completion", shell)
		if code != 0 || !strings.Contains(out, "claudeflare") {
			t.Fatalf("completion %s: exit %d %s", shell, code, errs)
		}
		if strings.Contains(out, "`") {
			t.Errorf("completion %s: backquotes left in the script", shell)
		}
		if sh, err := exec.LookPath(shell); err == nil {
			cmd := exec.Command(sh, "-n")
			cmd.Stdin = strings.NewReader(out)
			if b, err := cmd.CombinedOutput(); err != nil {
				t.Errorf("%s -n: %v %s", shell, err, b)
			}
		}
	}
	fish, _, _ := runInProcess("completion", "fish")
	for _, want := range []string{"-a 'backup'", "-l no-log", "-l refresh-token-stdin", "-a 'add'"} {
		if !strings.Contains(fish, want) {
			t.Errorf("fish completion lacks %q", want)
		}
	}
	if strings.Contains(fish, "'docs'") || strings.Contains(fish, "__complete'") {
		t.Error("fish completion offers a hidden command")
	}
	if _, _, code := runInProcess("completion", "tcsh"); code != 2 {
		t.Errorf("unknown shell: exit %d, want 2", code)
	}
	if _, _, code := runInProcess("completion"); code != 2 {
		t.Errorf("no shell: exit %d, want 2", code)
	}
}

func TestCompleteHelper(t *testing.T) {
	for _, tc := range []struct {
		args      []string
		want, not []string
		empty     bool
	}{
		{args: []string{""}, want: []string{"accounts", "daemon", "backup", "doctor", "completion"}, not: []string{"docs", "__complete", "--config"}},
		{args: []string{"-"}, want: []string{"--config", "--data-dir", "--identity", "--version"}},
		{args: []string{"accounts", ""}, want: []string{"add", "list", "pause"}, not: []string{"daemon"}},
		{args: []string{"accounts", "add", "--"}, want: []string{"--refresh-token-stdin", "--mode", "--help"}, not: []string{"--config", "--version"}},
		{args: []string{"--data-dir", "x", "accounts", "remove", "work", "-"}, want: []string{"--force", "-f"}},
		{args: []string{"--config", ""}, empty: true}, // a file name
		{args: []string{"backup", ""}, empty: true},   // a file name
		{args: []string{"doctor", "-"}, want: []string{"--json"}},
	} {
		out, errs, code := runInProcess(append([]string{"__complete", "bash", "--"}, tc.args...)...)
		if code != 0 {
			t.Fatalf("%v: exit %d %s", tc.args, code, errs)
		}
		lines := strings.Fields(out)
		if tc.empty && len(lines) > 0 {
			t.Errorf("%v: want nothing, got %v", tc.args, lines)
		}
		for _, w := range tc.want {
			if !contains(lines, w) {
				t.Errorf("%v: %q missing from %v", tc.args, w, lines)
			}
		}
		for _, w := range tc.not {
			if contains(lines, w) {
				t.Errorf("%v: %q should not be offered", tc.args, w)
			}
		}
	}
	out, _, _ := runInProcess("__complete", "zsh", "--", "accounts", "")
	if !strings.Contains(out, "add:add an account\\: interactive") {
		t.Errorf("zsh descriptions: %q", out)
	}
}

func contains(list []string, s string) bool {
	for _, l := range list {
		if l == s {
			return true
		}
	}
	return false
}

// TestBashCompletionEndToEnd sources the bash script and asks it to
// complete, with this test binary as claudeflare on PATH.
func TestBashCompletionEndToEnd(t *testing.T) {
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Fatal("bash is needed for this test")
	}
	bin := t.TempDir()
	if err := os.Symlink(os.Args[0], filepath.Join(bin, "claudeflare")); err != nil {
		t.Fatal(err)
	}
	script, _, _ := runInProcess("completion", "bash")
	complete := func(line string) []string {
		words := strings.Split(line, " ")
		var b strings.Builder
		b.WriteString(script)
		b.WriteString("\nCOMP_WORDS=(")
		for _, w := range words {
			b.WriteString("'" + w + "' ")
		}
		b.WriteString(")\nCOMP_CWORD=" + strconv.Itoa(len(words)-1) + "\n_claudeflare\nprintf '%s\\n' \"${COMPREPLY[@]}\"\n")
		cmd := exec.Command(bash, "--norc", "--noprofile")
		cmd.Stdin = strings.NewReader(b.String())
		cmd.Env = []string{"PATH=" + bin + ":" + os.Getenv("PATH"), "CLAUDEFLARE_TEST_AS_BINARY=1", "HOME=" + t.TempDir()}
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("bash: %v %s", err, out)
		}
		return strings.Fields(string(out))
	}
	if got := complete("claudeflare acc"); strings.Join(got, " ") != "accounts" {
		t.Errorf("claudeflare acc<TAB>: %v", got)
	}
	if got := complete("claudeflare accounts add --re"); strings.Join(got, " ") != "--refresh-token-stdin" {
		t.Errorf("accounts add --re<TAB>: %v", got)
	}
	if got := complete("claudeflare accounts p"); strings.Join(got, " ") != "pause" {
		t.Errorf("accounts p<TAB>: %v", got)
	}
}

// TestVersionFromLdflags checks that the variables -ldflags -X sets make
// --version print the version, commit and build date: in process always,
// and (but under -short) in a binary built with those flags.
func TestVersionFromLdflags(t *testing.T) {
	const (
		version = "v1.2.3"
		commit  = "0123456789abcdef0123"
		date    = "2026-02-03T04:05:06Z"
		want    = "claudeflare version v1.2.3 (commit 0123456789ab, built 2026-02-03T04:05:06Z)\n"
	)
	saved := [3]string{commands.Version, commands.Commit, commands.Date}
	commands.Version, commands.Commit, commands.Date = version, commit, date
	out, errs, code := runInProcess("--version")
	commands.Version, commands.Commit, commands.Date = saved[0], saved[1], saved[2]
	if code != 0 || out != want {
		t.Fatalf("--version in process = %q (exit %d, %s), want %q", out, code, errs, want)
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
