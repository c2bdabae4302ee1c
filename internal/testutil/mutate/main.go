// Command mutate plants realistic bugs in the production code, one at a
// time, and runs the tests meant to catch each, to find tests that cannot
// fail. It never touches the working tree: each mutant is built through
// `go test -overlay`, which swaps one file at compile time.
//
//	go run ./internal/testutil/mutate                 # every plant
//	go run ./internal/testutil/mutate -run refresh    # plants whose name matches
//	go run ./internal/testutil/mutate -check          # do the plants still apply? (fast; no tests)
//
// A plant is a txtar file in the plants directory (default
// internal/testutil/mutate/plants). Its comment says which file to change
// and which tests to run; its "old" file is text that must occur exactly
// once in that file, and its "new" file replaces it:
//
//	file: proxy/tokens.go
//	test: ./proxy/ -run TestRefreshConflict
//	What the bug is, in a sentence.
//	-- old --
//	if errors.Is(err, vault.ErrConflict) {
//	-- new --
//	if false && errors.Is(err, vault.ErrConflict) {
//
// The result of each is "caught" (the tests failed), "MISSED" (they
// passed) or "invalid" (the mutant does not build, or the old text is
// not found: fix the plant). Run from the module root; it is slow, so it
// is not part of `go test ./...`.
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/rogpeppe/go-internal/txtar"
)

// timeout bounds the tests of one plant (a later -timeout in the plant's
// test line wins).
var timeout = 3 * time.Minute

type plant struct {
	name     string
	file     string
	test     []string
	old, new string
}

func main() {
	dir := flag.String("plants", filepath.Join("internal", "testutil", "mutate", "plants"), "directory of plant .txtar files")
	run := flag.String("run", "", "only plants whose name matches this regexp")
	verbose := flag.Bool("v", false, "print the test output of every plant")
	flag.DurationVar(&timeout, "timeout", timeout, "go test -timeout for each plant")
	check := flag.Bool("check", false, "only check that every plant still applies (its old text occurs once in its file); run no test")
	flag.Parse()
	if *check {
		if err := checkPlants(*dir, *run); err != nil {
			fmt.Fprintln(os.Stderr, "mutate:", err)
			os.Exit(1)
		}
		return
	}
	if err := mainErr(*dir, *run, *verbose); err != nil {
		fmt.Fprintln(os.Stderr, "mutate:", err)
		os.Exit(1)
	}
}

func mainErr(dir, run string, verbose bool) error {
	re, err := regexp.Compile(run)
	if err != nil {
		return fmt.Errorf("-run: %w", err)
	}
	names, err := filepath.Glob(filepath.Join(dir, "*.txtar"))
	if err != nil {
		return err
	}
	sort.Strings(names)
	tmp, err := os.MkdirTemp("", "mutate-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	var caught, missed, invalid int
	var missedNames []string
	for _, n := range names {
		p, err := readPlant(n)
		if err != nil {
			return err
		}
		if !re.MatchString(p.name) {
			continue
		}
		start := time.Now()
		res, out := p.try(tmp)
		fmt.Printf("%-8s %-40s %s (%s)\n", res, p.name, p.file, time.Since(start).Round(time.Second))
		switch res {
		case "caught":
			caught++
		case "MISSED":
			missed++
			missedNames = append(missedNames, p.name)
		default:
			invalid++
		}
		if verbose || res == "invalid" {
			fmt.Println(indent(out))
		}
	}
	total := caught + missed
	if total == 0 {
		return fmt.Errorf("no plant ran (%d invalid)", invalid)
	}
	fmt.Printf("\n%d of %d plants caught (%.0f%%), %d missed, %d invalid\n", caught, total, 100*float64(caught)/float64(total), missed, invalid)
	if len(missedNames) > 0 {
		fmt.Printf("missed: %s\n", strings.Join(missedNames, ", "))
	}
	return nil
}

// checkPlants reports the plants that no longer apply: after a refactor
// moves code, point them at where the code went.
func checkPlants(dir, run string) error {
	re, err := regexp.Compile(run)
	if err != nil {
		return fmt.Errorf("-run: %w", err)
	}
	names, err := filepath.Glob(filepath.Join(dir, "*.txtar"))
	if err != nil {
		return err
	}
	bad, n := 0, 0
	for _, name := range names {
		p, err := readPlant(name)
		if err != nil {
			return err
		}
		if !re.MatchString(p.name) {
			continue
		}
		n++
		src, err := os.ReadFile(p.file)
		if err != nil {
			fmt.Printf("invalid  %-40s %v\n", p.name, err)
			bad++
			continue
		}
		if c := bytes.Count(src, []byte(p.old)); c != 1 {
			fmt.Printf("invalid  %-40s the old text occurs %d times in %s\n", p.name, c, p.file)
			bad++
		}
	}
	if bad > 0 {
		return fmt.Errorf("%d of %d plants no longer apply", bad, n)
	}
	fmt.Printf("all %d plants apply\n", n)
	return nil
}

func readPlant(path string) (plant, error) {
	a, err := txtar.ParseFile(path)
	if err != nil {
		return plant{}, err
	}
	p := plant{name: strings.TrimSuffix(filepath.Base(path), ".txtar")}
	for _, line := range strings.Split(string(a.Comment), "\n") {
		switch k, v, _ := strings.Cut(line, ":"); k {
		case "file":
			p.file = strings.TrimSpace(v)
		case "test":
			p.test = strings.Fields(v)
		}
	}
	for _, f := range a.Files {
		text := strings.TrimSuffix(string(f.Data), "\n")
		switch f.Name {
		case "old":
			p.old = text
		case "new":
			p.new = text
		}
	}
	if p.file == "" || len(p.test) == 0 || p.old == "" {
		return p, fmt.Errorf("%s: needs file:, test: and an old file", path)
	}
	return p, nil
}

// try builds and tests the mutant; the result is caught, MISSED or invalid.
func (p plant) try(tmp string) (string, string) {
	src, err := os.ReadFile(p.file)
	if err != nil {
		return "invalid", err.Error()
	}
	if n := bytes.Count(src, []byte(p.old)); n != 1 {
		return "invalid", fmt.Sprintf("the old text occurs %d times in %s", n, p.file)
	}
	abs, err := filepath.Abs(p.file)
	if err != nil {
		return "invalid", err.Error()
	}
	mutant := filepath.Join(tmp, p.name+".go")
	if err := os.WriteFile(mutant, bytes.Replace(src, []byte(p.old), []byte(p.new), 1), 0o600); err != nil {
		return "invalid", err.Error()
	}
	overlay := filepath.Join(tmp, p.name+".json")
	b, _ := json.Marshal(map[string]map[string]string{"Replace": {abs: mutant}})
	if err := os.WriteFile(overlay, b, 0o600); err != nil {
		return "invalid", err.Error()
	}
	// Build first, so that a mutant that does not compile is told apart
	// from one the tests catch.
	pkgs := packagesOf(p.test)
	vet := exec.Command("go", append([]string{"test", "-overlay", overlay, "-count=1", "-run", "^$"}, pkgs...)...)
	if out, err := vet.CombinedOutput(); err != nil {
		return "invalid", string(out)
	}
	// A mutant may make a test hang (a test that fails while a request is
	// held open): bound each run.
	cmd := exec.Command("go", append([]string{"test", "-overlay", overlay, "-count=1", "-timeout=" + timeout.String()}, p.test...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "caught", string(out)
	}
	return "MISSED", string(out)
}

// packagesOf picks the package patterns out of go test arguments.
func packagesOf(args []string) []string {
	var out []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case strings.HasPrefix(a, "-"):
			if !strings.Contains(a, "=") && i+1 < len(args) && a != "-short" && a != "-race" && a != "-v" {
				i++ // the flag's value
			}
		default:
			out = append(out, a)
		}
	}
	return out
}

func indent(s string) string {
	return "    " + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n    ")
}
