package config

import (
	"errors"
	"strings"
	"testing"
)

const sonnetPrice = `
[pricing."claude-sonnet-4-5"]
input = 1
output = 2
cache_write_5m = 3
cache_write_1h = 4
cache_read = 0.5

[pricing."my-model"]
input = 7
output = 0
cache_write_5m = 0
cache_write_1h = 0
cache_read = 0
`

func TestPricingOverridesTheBuiltInTable(t *testing.T) {
	c, err := Load(Source{Path: writeFile(t, sonnetPrice), Getenv: newEnv(t).get})
	if err != nil {
		t.Fatal(err)
	}
	tab := c.Pricing.Table()
	if p, _, ok := tab.Lookup("claude-sonnet-4-5-20250929"); !ok || p.Input != 1 || p.Output != 2 || p.CacheWrite5m != 3 || p.CacheWrite1h != 4 || p.CacheRead != 0.5 {
		t.Errorf("sonnet 4.5 = %+v, %v", p, ok)
	}
	if p, _, ok := tab.Lookup("my-model"); !ok || p.Input != 7 {
		t.Errorf("my-model = %+v, %v", p, ok)
	}
	if p, _, ok := tab.Lookup("claude-haiku-4-5"); !ok || p.Input != 1 || p.Output != 5 {
		t.Errorf("haiku 4.5 lost its built-in price: %+v, %v", p, ok)
	}
	if o := c.Origin("pricing"); o.Kind != FromFile {
		t.Errorf("origin %+v", o)
	}
	if s := c.Pricing.String(); !strings.Contains(s, `"my-model" = {input = 7, output = 0`) {
		t.Errorf("String() = %s", s)
	}
}

func TestPricingErrorsNameTheKey(t *testing.T) {
	for _, tt := range []struct{ text, want string }{
		{"[pricing.\"claude-x\"]\ninput = 1\noutput = 2\ncache_write_5m = 3\ncache_write_1h = 4\n",
			`pricing: "claude-x".cache_read: missing`},
		{"[pricing.\"claude-x\"]\ninput = -1\noutput = 2\ncache_write_5m = 3\ncache_write_1h = 4\ncache_read = 1\n",
			`pricing: "claude-x".input: must be a number of USD per million tokens, 0 or more (got -1)`},
		{"[pricing.\"claude-x\"]\ninput = nan\noutput = 2\ncache_write_5m = 3\ncache_write_1h = 4\ncache_read = 1\n",
			`pricing: "claude-x".input: must be a number`},
		{"[pricing.\"claude-x\"]\ninptu = 1\n", `unknown key "pricing.claude-x.inptu"`},
		{"[pricing.\"claude-x\"]\ninput = \"3\"\n", `pricing.claude-x.input: must be a number, not a string`},
	} {
		_, err := Load(Source{Path: writeFile(t, tt.text), Getenv: newEnv(t).get})
		var ce *Error
		if !errors.As(err, &ce) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%q: got %v, want a config error with %q", tt.text, err, tt.want)
		}
	}
}

func TestPricingFromTheEnvironment(t *testing.T) {
	e := newEnv(t)
	e["CLAUDEFLARE_PRICING"] = `{"claude-x": {"input": 3, "output": 15, "cache_write_5m": 3.75, "cache_write_1h": 6, "cache_read": 0.3}}`
	c, err := Load(Source{Getenv: e.get})
	if err != nil {
		t.Fatal(err)
	}
	if p, _, ok := c.Pricing.Table().Lookup("claude-x-20260101"); !ok || p.Output != 15 || p.CacheRead != 0.3 {
		t.Errorf("claude-x = %+v, %v", p, ok)
	}
	e["CLAUDEFLARE_PRICING"] = `{"claude-x": {"input": 3, "outptu": 15}}`
	if _, err := Load(Source{Getenv: e.get}); err == nil || !strings.Contains(err.Error(), "CLAUDEFLARE_PRICING") {
		t.Errorf("bad JSON: %v", err)
	}
	e["CLAUDEFLARE_PRICING"] = `{"claude-x": {"input": 3}}`
	if _, err := Load(Source{Getenv: e.get}); err == nil || !strings.Contains(err.Error(), `CLAUDEFLARE_PRICING: "claude-x".output: missing`) {
		t.Errorf("missing price from env: %v", err)
	}
}
