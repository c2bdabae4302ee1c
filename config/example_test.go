package config

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/BurntSushi/toml"
)

const examplePath = "../claudeflare.toml.example"

// TestExampleIsDefault decodes claudeflare.toml.example with the real loader
// and requires exactly the defaults.
func TestExampleIsDefault(t *testing.T) {
	e := newEnv(t)
	got, err := Load(Source{Path: examplePath, Getenv: e.get})
	if err != nil {
		t.Fatal(err)
	}
	want, err := Load(Source{Getenv: e.get})
	if err != nil {
		t.Fatal(err)
	}
	abs, _ := filepath.Abs(examplePath)
	if got.File != abs {
		t.Errorf("File = %q, want %q", got.File, abs)
	}
	want.File = got.File
	d := Default()
	d.File, d.DataDir = got.File, got.DataDir
	compareRedactors(t, got, want)
	compareRedactors(t, got, &d)
	got.redactors, want.redactors, d.redactors = nil, nil, nil
	got.origins, want.origins = nil, nil
	if !reflect.DeepEqual(got, want) {
		t.Errorf("the example is not the default\n got %+v\nwant %+v", got, want)
	}
	if !reflect.DeepEqual(*got, d) {
		t.Errorf("the example is not Default()\n got %+v\nwant %+v", *got, d)
	}
}

func compareRedactors(t *testing.T, a, b *Config) {
	t.Helper()
	if len(a.Redactors()) != len(b.Redactors()) {
		t.Fatalf("redactors %v and %v", a.Redactors(), b.Redactors())
	}
	for i := range a.Redactors() {
		if a.Redactors()[i].String() != b.Redactors()[i].String() {
			t.Errorf("redactor %d: %v and %v", i, a.Redactors()[i], b.Redactors()[i])
		}
	}
}

// tomlKeys walks t's toml tags: every key, dotted, and whether it is a
// section.
func tomlKeys(t reflect.Type, prefix string, visit func(key string, section bool)) {
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := strings.Split(f.Tag.Get("toml"), ",")[0]
		if tag == "-" || !f.IsExported() {
			continue
		}
		if tag == "" {
			panic("field " + f.Name + " has no toml tag")
		}
		key := prefix + tag
		if f.Type.Kind() == reflect.Struct {
			visit(key, true)
			tomlKeys(f.Type, key+".", visit)
			continue
		}
		visit(key, false)
	}
}

// TestExampleHasEveryKey requires each key of Config to be set in the
// example, with a comment right above it, and each env var to be named.
func TestExampleHasEveryKey(t *testing.T) {
	data, err := os.ReadFile(examplePath)
	if err != nil {
		t.Fatal(err)
	}
	text := string(data)
	var m map[string]any
	md, err := toml.Decode(text, &m)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(text, "\n")
	n := 0
	tomlKeys(reflect.TypeOf(Config{}), "", func(key string, section bool) {
		n++
		path := strings.Split(key, ".")
		if !md.IsDefined(path...) {
			t.Errorf("%s is missing from the example", key)
			return
		}
		if section {
			return
		}
		line := findLine(text, path)
		if line < 2 || !strings.HasPrefix(strings.TrimSpace(lines[line-2]), "#") {
			t.Errorf("%s (line %d) has no comment right above it", key, line)
		}
		if env := legacyEnv[key]; env != "" && !strings.Contains(text, env) {
			t.Errorf("the example does not name %s for %s", env, key)
		}
		if settingByKey[key] == nil {
			t.Errorf("%s is not in the settings table", key)
		}
	})
	if n != len(settings)+len(sections) {
		t.Errorf("walked %d keys, table has %d settings and %d sections", n, len(settings), len(sections))
	}
	// And nothing in the example that Config does not know.
	for _, k := range md.Keys() {
		if !knownKey(strings.Join(k, ".")) {
			t.Errorf("example key %s is not a config key", k)
		}
	}
}
