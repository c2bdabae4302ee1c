package commands_test

import (
	"bytes"
	"os"
	"os/exec"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"

	"github.com/claudeflare/claudeflare/commands"
	"github.com/claudeflare/claudeflare/config"
)

const regenerate = "regenerate it with `go run . docs` at the repository root and commit man/claudeflare.1"

// TestManPageIsCurrent fails when the committed man page differs from what
// the command definitions generate.
func TestManPageIsCurrent(t *testing.T) {
	want := commands.GenerateManPage()
	got, err := os.ReadFile("../" + commands.ManPage)
	if err != nil {
		t.Fatalf("read %s: %v; %s", commands.ManPage, err, regenerate)
	}
	if string(got) != want {
		gl, wl := strings.Split(string(got), "\n"), strings.Split(want, "\n")
		for i := 0; i < len(gl) || i < len(wl); i++ {
			var g, w string
			if i < len(gl) {
				g = gl[i]
			}
			if i < len(wl) {
				w = wl[i]
			}
			if g != w {
				t.Fatalf("%s is stale (first difference at line %d:\n  committed: %q\n  generated: %q);\n%s",
					commands.ManPage, i+1, g, w, regenerate)
			}
		}
	}
	if commands.GenerateManPage() != want {
		t.Fatal("man page generation is not deterministic")
	}
}

// TestManPageCoversHelp checks that every visible command and flag that
// --help shows is in the man page, with the same usage text.
func TestManPageCoversHelp(t *testing.T) {
	page := commands.GenerateManPage()
	plain := strings.ReplaceAll(page, `\-`, "-")
	app := commands.NewApp(strings.NewReader(""), &bytes.Buffer{}, &bytes.Buffer{})
	var walk func(prefix string, cmds []*cli.Command)
	walk = func(prefix string, cmds []*cli.Command) {
		for _, c := range cmds {
			if c.Hidden {
				if strings.Contains(plain, `.SS "`+prefix+c.Name) {
					t.Errorf("hidden command %q is in the man page", prefix+c.Name)
				}
				continue
			}
			if !strings.Contains(plain, `.SS "`+prefix+c.Name) {
				t.Errorf("command %q is not in the man page", prefix+c.Name)
			}
			if !strings.Contains(plain, strings.ReplaceAll(c.Usage, "`", "")) {
				t.Errorf("usage of %q is not in the man page", prefix+c.Name)
			}
			for _, f := range c.Flags {
				if !strings.Contains(plain, `\fB--`+f.Names()[0]+`\fR`) {
					t.Errorf("flag --%s of %q is not in the man page", f.Names()[0], prefix+c.Name)
				}
			}
			walk(prefix+c.Name+" ", c.Subcommands)
		}
	}
	walk("", app.Commands)
	for _, f := range app.Flags {
		if !strings.Contains(plain, `\fB--`+f.Names()[0]+`\fR`) {
			t.Errorf("global flag --%s is not in the man page", f.Names()[0])
		}
	}
	if _, err := exec.LookPath("groff"); err == nil {
		cmd := exec.Command("groff", "-man", "-ww", "-z")
		cmd.Stdin = strings.NewReader(page)
		if out, err := cmd.CombinedOutput(); err != nil || len(out) > 0 {
			t.Errorf("groff: %v %s", err, out)
		}
	}
}

// TestConfigManPageDocumentsEveryKey checks man/claudeflare.toml.5 against
// the toml tags of config.Config, both ways.
func TestConfigManPageDocumentsEveryKey(t *testing.T) {
	b, err := os.ReadFile("../man/claudeflare.toml.5")
	if err != nil {
		t.Fatal(err)
	}
	// Documented keys: ".BR key" entries, under ".SS [section]" headings.
	documented := map[string]bool{}
	section := ""
	sectionRE := regexp.MustCompile(`^\.SS \[([a-z_]+)\]$`)
	keyRE := regexp.MustCompile(`^\.BR ([a-z0-9_]+) `)
	for _, l := range strings.Split(string(b), "\n") {
		if m := sectionRE.FindStringSubmatch(l); m != nil {
			section = m[1] + "."
		}
		if m := keyRE.FindStringSubmatch(l); m != nil {
			documented[section+m[1]] = true
		}
	}
	var keys []string
	var walk func(t reflect.Type, prefix string)
	walk = func(t reflect.Type, prefix string) {
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			tag := strings.Split(f.Tag.Get("toml"), ",")[0]
			if !f.IsExported() || tag == "" || tag == "-" {
				continue
			}
			if f.Type.Kind() == reflect.Struct && f.Type.Name() != "Duration" {
				walk(f.Type, prefix+tag+".")
				continue
			}
			keys = append(keys, prefix+tag)
		}
	}
	walk(reflect.TypeOf(config.Config{}), "")
	if len(keys) < 20 {
		t.Fatalf("found only %d config keys: %v", len(keys), keys)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if !documented[k] {
			t.Errorf("config key %q is not documented in man/claudeflare.toml.5", k)
		}
		delete(documented, k)
	}
	for k := range documented {
		t.Errorf("man/claudeflare.toml.5 documents %q, which is not a config key", k)
	}
	// And config.Settings (the flag/env table) agrees.
	for _, s := range config.Settings() {
		if !strings.Contains(string(b), strings.TrimPrefix(s.Key[strings.LastIndex(s.Key, ".")+1:], ".")) {
			t.Errorf("setting %q is not in man/claudeflare.toml.5", s.Key)
		}
		if s.LegacyEnv != "" && !strings.Contains(string(b), s.LegacyEnv) {
			t.Errorf("environment variable %s (%s) is not in man/claudeflare.toml.5", s.LegacyEnv, s.Key)
		}
	}
	// The rule that names every other variable, with an example.
	if !strings.Contains(string(b), "CLAUDEFLARE_ROUTING_MAX_UTILIZATION") && !strings.Contains(string(b), "CLAUDEFLARE_LOG_PAYLOADS") {
		t.Error("man/claudeflare.toml.5 does not state how a key's variable is named (with an example)")
	}
}
