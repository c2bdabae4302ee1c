package config

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/claudeflare/claudeflare/pricing"
)

// Pricing is the [pricing] section: prices that replace or add to the
// built-in table (package pricing), one table per model id or id prefix:
//
//	[pricing."claude-sonnet-4-5"]
//	input = 3
//	output = 15
//	cache_write_5m = 3.75
//	cache_write_1h = 6
//	cache_read = 0.30
//
// in USD per million tokens, all five required. A model id takes the
// price of its exact id, else of the longest key that is a prefix of it
// (pricing.Table.Lookup). CLAUDEFLARE_PRICING sets the whole map as JSON:
// {"claude-x": {"input": 3, "output": 15, "cache_write_5m": 3.75,
// "cache_write_1h": 6, "cache_read": 0.3}}. A running daemon applies a
// change on SIGHUP.
type Pricing map[string]ModelPrice

// ModelPrice is one [pricing."<model>"] table, USD per million tokens.
// A nil field was not set (a config error).
type ModelPrice struct {
	Input        *float64 `toml:"input" json:"input"`
	Output       *float64 `toml:"output" json:"output"`
	CacheWrite5m *float64 `toml:"cache_write_5m" json:"cache_write_5m"`
	CacheWrite1h *float64 `toml:"cache_write_1h" json:"cache_write_1h"`
	CacheRead    *float64 `toml:"cache_read" json:"cache_read"`
}

// fields are ModelPrice's keys, in file order, with their fields.
func (m *ModelPrice) fields() []struct {
	key string
	v   **float64
} {
	return []struct {
		key string
		v   **float64
	}{
		{"input", &m.Input}, {"output", &m.Output}, {"cache_write_5m", &m.CacheWrite5m},
		{"cache_write_1h", &m.CacheWrite1h}, {"cache_read", &m.CacheRead},
	}
}

// Prices is p as the pricing package's overrides; fields not set are 0
// (a validated config has them all).
func (p Pricing) Prices() map[string]pricing.Price {
	out := make(map[string]pricing.Price, len(p))
	val := func(f *float64) float64 {
		if f == nil {
			return 0
		}
		return *f
	}
	for k, m := range p {
		out[k] = pricing.Price{
			Input: val(m.Input), Output: val(m.Output), CacheWrite5m: val(m.CacheWrite5m),
			CacheWrite1h: val(m.CacheWrite1h), CacheRead: val(m.CacheRead),
		}
	}
	return out
}

// Table is the built-in price table with p's overrides.
func (p Pricing) Table() *pricing.Table { return pricing.New(p.Prices()) }

// String writes p as a TOML inline table, {} when empty (`config show`).
func (p Pricing) String() string {
	var b strings.Builder
	b.WriteString("{")
	for i, k := range sortedKeys(p) {
		if i > 0 {
			b.WriteString(", ")
		}
		m := p[k]
		b.WriteString(strconv.Quote(k) + " = {")
		for j, f := range m.fields() {
			if j > 0 {
				b.WriteString(", ")
			}
			v := "unset"
			if *f.v != nil {
				v = strconv.FormatFloat(**f.v, 'f', -1, 64)
			}
			b.WriteString(f.key + " = " + v)
		}
		b.WriteString("}")
	}
	b.WriteString("}")
	return b.String()
}

// setEnv reads CLAUDEFLARE_PRICING: a JSON object of model -> prices.
func (p *Pricing) setEnv(v string) error {
	dec := json.NewDecoder(bytes.NewReader([]byte(v)))
	dec.DisallowUnknownFields()
	m := Pricing{}
	if err := dec.Decode(&m); err != nil {
		return fmt.Errorf(`invalid JSON (want {"<model>": {"input": 3, "output": 15, "cache_write_5m": 3.75, "cache_write_1h": 6, "cache_read": 0.3}}): %v`, err)
	}
	*p = m
	return nil
}

// validatePricing requires, for every model key, all five prices, each a
// number >= 0.
func (c *Config) validatePricing() *problem {
	for _, k := range sortedKeys(c.Pricing) {
		if strings.TrimSpace(k) == "" {
			return bad("pricing", "a model key is empty (write [pricing.\"claude-...\"])")
		}
		m := c.Pricing[k]
		for _, f := range m.fields() {
			name := fmt.Sprintf("%s.%s", strconv.Quote(k), f.key)
			switch v := *f.v; {
			case v == nil:
				return bad("pricing", "%s: missing (each model needs input, output, cache_write_5m, cache_write_1h and cache_read, in USD per million tokens)", name)
			case math.IsNaN(*v) || math.IsInf(*v, 0) || *v < 0:
				return bad("pricing", "%s: must be a number of USD per million tokens, 0 or more (got %v)", name, *v)
			}
		}
	}
	return nil
}
