package pricing

import (
	"math"
	"testing"
)

func near(a, b float64) bool { return math.Abs(a-b) < 1e-12 }

func TestLookupExactThenLongestPrefix(t *testing.T) {
	tab := Default()
	for _, tt := range []struct {
		model, key string
		input      float64
	}{
		{"claude-sonnet-4-5", "claude-sonnet-4-5", 3},
		{"claude-sonnet-4-5-20250929", "claude-sonnet-4-5", 3},
		{"claude-sonnet-4-5@20250929", "claude-sonnet-4-5", 3},
		{"claude-sonnet-4-5[1m]", "claude-sonnet-4-5", 3},
		{"us.anthropic.claude-sonnet-4-5-20250929-v1:0", "claude-sonnet-4-5", 3},
		{"Claude-Opus-4-1-20250805", "claude-opus-4-1", 15},
		{"claude-opus-4-20250514", "claude-opus-4", 15},
		{"claude-opus-4-0", "claude-opus-4-0", 15},
		{"claude-opus-4-5-20251101", "claude-opus-4-5", 5},
		{"claude-opus-4-6", "claude-opus-4-6", 5},
		{"claude-opus-5-5", "claude-opus-5-5", 4},
		{"claude-opus-5-20260724", "claude-opus-5", 5},
		{"claude-haiku-4-5-20251001", "claude-haiku-4-5", 1},
		{"claude-3-5-haiku-20241022", "claude-3-5-haiku", 0.80},
		{"claude-3-5-haiku-latest", "claude-3-5-haiku", 0.80},
		{"claude-3-7-sonnet-20250219", "claude-3-7-sonnet", 3},
	} {
		p, key, ok := tab.Lookup(tt.model)
		if !ok || key != tt.key || p.Input != tt.input {
			t.Errorf("Lookup(%q) = %+v, %q, %v; want key %q, input %v", tt.model, p, key, ok, tt.key, tt.input)
		}
	}
}

func TestUnknownModelHasNoPrice(t *testing.T) {
	tab := Default()
	for _, m := range []string{"", "gpt-4o", "claude-opus-4-9", "claude-sonnet-4-50", "claude-opus", "claude-haiku-5-5", "claude-opus-4-10-20270101"} {
		if p, key, ok := tab.Lookup(m); ok {
			t.Errorf("Lookup(%q) = %+v via %q, want no price", m, p, key)
		}
		if usd, ok := tab.Cost(m, Usage{Input: 1000}); ok || usd != 0 {
			t.Errorf("Cost(%q) = %v, %v; want 0, false", m, usd, ok)
		}
	}
	var none *Table
	if _, ok := none.Cost("claude-sonnet-4-5", Usage{Input: 1}); ok {
		t.Error("a nil table priced a model")
	}
}

func TestCostEveryClass(t *testing.T) {
	// Sonnet 4.5: $3 in, $15 out, $3.75 5m writes, $6 1h writes, $0.30 reads.
	u := Usage{Input: 1_000_000, Output: 2_000_000, CacheWrite5m: 1_000_000, CacheWrite1h: 1_000_000, CacheRead: 10_000_000}
	usd, ok := Default().Cost("claude-sonnet-4-5-20250929", u)
	if want := 3 + 30 + 3.75 + 6 + 3.0; !ok || !near(usd, want) {
		t.Errorf("cost = %v, %v; want %v", usd, ok, want)
	}
	usd, _ = Default().Cost("claude-haiku-4-5", Usage{Input: 100, Output: 20})
	if want := (100*1.0 + 20*5.0) / 1e6; !near(usd, want) {
		t.Errorf("haiku cost = %v, want %v", usd, want)
	}
}

func TestFromLogUnsplitWritesCountAs5m(t *testing.T) {
	if u := FromLog(1, 2, 3, 100, 0, 0); u != (Usage{Input: 1, Output: 2, CacheRead: 3, CacheWrite5m: 100}) {
		t.Errorf("unsplit: %+v", u)
	}
	if u := FromLog(0, 0, 0, 100, 30, 70); u.CacheWrite5m != 30 || u.CacheWrite1h != 70 {
		t.Errorf("split: %+v", u)
	}
	// A split covering less than the total: the rest is 5m.
	if u := FromLog(0, 0, 0, 100, 0, 60); u.CacheWrite5m != 40 || u.CacheWrite1h != 60 {
		t.Errorf("partial split: %+v", u)
	}
}

func TestOverride(t *testing.T) {
	tab := New(map[string]Price{
		"claude-sonnet-4-5": {Input: 1, Output: 2},               // replaces the built-in price
		"my-model":          {Input: 7},                          // adds an id
		"claude-":           {Input: 0.5},                        // a catch-all prefix
		"CLAUDE-OPUS-4-1":   {Input: 9, Output: 9, CacheRead: 9}, // keys match case-insensitively
	})
	check := func(model, key string, input float64) {
		t.Helper()
		p, k, ok := tab.Lookup(model)
		if !ok || k != key || p.Input != input {
			t.Errorf("Lookup(%q) = %+v, %q, %v; want %q at %v", model, p, k, ok, key, input)
		}
	}
	check("claude-sonnet-4-5-20250929", "claude-sonnet-4-5", 1)
	check("my-model", "my-model", 7)
	check("my-model-20260101", "my-model", 7)
	check("claude-opus-4-1-20250805", "claude-opus-4-1", 9)
	check("claude-opus-4-9", "claude-", 0.5) // no built-in price; the catch-all takes it
	check("claude-haiku-4-5", "claude-haiku-4-5", 1)
	if _, _, ok := Default().Lookup("my-model"); ok {
		t.Error("an override leaked into the default table")
	}
}
