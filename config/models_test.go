package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestModelsSection(t *testing.T) {
	e := newEnv(t)
	path := filepath.Join(t.TempDir(), "c.toml")
	os.WriteFile(path, []byte(`[models]
aliases = {"team-fast" = "claude-haiku-4-5", "team-smart" = "claude-opus-4-5"}
[models.allow]
api = ["claude-haiku-*", "team-fast"]
viewer = []
`), 0o600)
	c, err := Load(Source{Path: path, Getenv: e.get})
	if err != nil {
		t.Fatal(err)
	}
	if c.Models.Aliases["team-fast"] != "claude-haiku-4-5" || len(c.Models.Aliases) != 2 {
		t.Fatalf("aliases %+v", c.Models.Aliases)
	}
	if got := c.Models.Allow["api"]; len(got) != 2 || got[0] != "claude-haiku-*" {
		t.Fatalf("allow %+v", c.Models.Allow)
	}
	if s := c.Models.Allow.String(); s != `{"api" = ["claude-haiku-*", "team-fast"], "viewer" = []}` {
		t.Errorf("String %s", s)
	}
	if s := c.Models.Aliases.String(); s != `{"team-fast" = "claude-haiku-4-5", "team-smart" = "claude-opus-4-5"}` {
		t.Errorf("String %s", s)
	}

	// The table form of aliases works too.
	os.WriteFile(path, []byte("[models.aliases]\n\"x\" = \"claude-sonnet-4-5\"\n"), 0o600)
	if c, err = Load(Source{Path: path, Getenv: e.get}); err != nil || c.Models.Aliases["x"] != "claude-sonnet-4-5" {
		t.Fatalf("table form: %v %+v", err, c)
	}

	e["CLAUDEFLARE_MODELS_ALIASES"] = `{"fast": "claude-haiku-4-5"}`
	e["CLAUDEFLARE_MODELS_ALLOW"] = `{"api": ["claude-sonnet-*"]}`
	c, err = Load(Source{Getenv: e.get})
	if err != nil {
		t.Fatal(err)
	}
	if c.Models.Aliases["fast"] != "claude-haiku-4-5" || c.Models.Allow["api"][0] != "claude-sonnet-*" {
		t.Errorf("env %+v", c.Models)
	}
	e["CLAUDEFLARE_MODELS_ALLOW"] = `["api"]`
	if _, err := Load(Source{Getenv: e.get}); err == nil || !strings.Contains(err.Error(), "CLAUDEFLARE_MODELS_ALLOW") {
		t.Errorf("bad env: %v", err)
	}
	delete(e, "CLAUDEFLARE_MODELS_ALLOW")
	delete(e, "CLAUDEFLARE_MODELS_ALIASES")

	for _, tc := range []struct{ file, want string }{
		{"[models.allow]\nroot = [\"claude-x\"]\n", `unknown role "root"`},
		{"[models.allow]\napi = [\"claude-*-4-5\"]\n", `only at the end`},
		{"[models.allow]\napi = [\"has space\"]\n", `without spaces`},
		{"[models.aliases]\na = \"b\"\nb = \"claude-x\"\n", `not another alias`},
		{"[models.aliases]\n\"\" = \"claude-x\"\n", `models.aliases`},
		{"[models]\nalias = {}\n", `unknown key "models.alias"`},
	} {
		os.WriteFile(path, []byte(tc.file), 0o600)
		if _, err := Load(Source{Path: path, Getenv: e.get}); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: got %v, want %q", tc.file, err, tc.want)
		}
	}
}
