// Package pricing prices a request from its token usage: a table of USD
// per million tokens per model (input, output, 5-minute and 1-hour cache
// writes, cache reads), built in for the Claude models at Anthropic's
// published list prices and overridable in the config ([pricing."id"]).
//
// A model id finds its price by exact id first, then by the longest key
// that is a prefix of it ending at a separator ("claude-sonnet-4-5" prices
// "claude-sonnet-4-5-20250929" and "claude-sonnet-4-5@20250929", never
// "claude-sonnet-4-50"), and not followed by another minor version
// ("claude-opus-4" prices "claude-opus-4-20250514", not "claude-opus-4-9"). Bedrock ids ("us.anthropic.claude-...-v1:0")
// are looked up without their "anthropic." part and what precedes it.
//
// The prices are the API's list prices. For a subscription (OAuth)
// account nothing is charged per token: its cost is the API-equivalent
// value of what it served.
package pricing

import (
	"sort"
	"strings"
)

// Usage is a request's tokens by price class. CacheWrite5m and
// CacheWrite1h are the cache writes by lifetime; a write whose lifetime
// the answer did not say counts as 5-minute (FromLog does that).
type Usage struct{ Input, Output, CacheRead, CacheWrite5m, CacheWrite1h int64 }

// Price is a model's prices in USD per million tokens.
type Price struct{ Input, Output, CacheWrite5m, CacheWrite1h, CacheRead float64 }

// Cost is the price of u at p, in USD.
func (p Price) Cost(u Usage) float64 {
	const m = 1e6
	return (float64(u.Input)*p.Input + float64(u.Output)*p.Output +
		float64(u.CacheWrite5m)*p.CacheWrite5m + float64(u.CacheWrite1h)*p.CacheWrite1h +
		float64(u.CacheRead)*p.CacheRead) / m
}

// FromLog is the Usage of a log row's token counts: cacheCreation is
// cache_creation_input_tokens (all writes), w5m and w1h its split by
// lifetime (0 and 0 when the answer did not split it). What the split
// does not cover counts as 5-minute writes.
func FromLog(input, output, cacheRead, cacheCreation, w5m, w1h int64) Usage {
	u := Usage{Input: input, Output: output, CacheRead: cacheRead, CacheWrite5m: w5m, CacheWrite1h: w1h}
	if rest := cacheCreation - w5m - w1h; rest > 0 {
		u.CacheWrite5m += rest
	}
	return u
}

// Table maps model ids and id prefixes to prices. A nil *Table prices
// nothing. A Table is not changed after New and is safe for concurrent use.
type Table struct {
	prices map[string]Price
	keys   []string // longest first, for the prefix match
}

// New is the built-in table with overrides applied: an override replaces
// the built-in price of the same key or adds a key (an id or a prefix).
// Keys are matched case-insensitively.
func New(overrides map[string]Price) *Table {
	m := make(map[string]Price, len(builtin)+len(overrides))
	for k, p := range builtin {
		m[k] = p
	}
	for k, p := range overrides {
		m[strings.ToLower(strings.TrimSpace(k))] = p
	}
	t := &Table{prices: m}
	for k := range m {
		t.keys = append(t.keys, k)
	}
	sort.Slice(t.keys, func(i, j int) bool {
		if len(t.keys[i]) != len(t.keys[j]) {
			return len(t.keys[i]) > len(t.keys[j])
		}
		return t.keys[i] < t.keys[j]
	})
	return t
}

// Default is the built-in table.
func Default() *Table { return New(nil) }

// Lookup finds model's price: the exact id, else the longest key that is
// a prefix of it ending at a separator (- @ [ : . _ /), unless what
// follows is another minor version (claude-opus-4 does not price
// claude-opus-4-9; it does price claude-opus-4-20250514). A key that ends
// in a separator ("claude-") matches whatever follows. The key found is
// returned too; ok is false when nothing matches.
func (t *Table) Lookup(model string) (p Price, key string, ok bool) {
	if t == nil {
		return Price{}, "", false
	}
	id := normalize(model)
	if id == "" {
		return Price{}, "", false
	}
	if p, ok := t.prices[id]; ok {
		return p, id, true
	}
	for _, k := range t.keys {
		if len(k) >= len(id) || !strings.HasPrefix(id, k) {
			continue
		}
		if isSep(k[len(k)-1]) || (isSep(id[len(k)]) && !otherVersion(id[len(k):])) {
			return t.prices[k], k, true
		}
	}
	return Price{}, "", false
}

// otherVersion reports whether rest, what follows a key in an id, starts
// with another minor version ("-9" in claude-opus-4-9 after claude-opus-4)
// rather than a date or a tag ("-20250514", "-latest", "[1m]", "@...").
func otherVersion(rest string) bool {
	if len(rest) < 2 || rest[0] != '-' {
		return false
	}
	n := 0
	for n+1 < len(rest) && rest[n+1] >= '0' && rest[n+1] <= '9' {
		n++
	}
	return n >= 1 && n <= 2 && (n+1 == len(rest) || isSep(rest[n+1]))
}

// Cost prices u for model in USD; ok is false when the model has no price.
func (t *Table) Cost(model string, u Usage) (usd float64, ok bool) {
	p, _, ok := t.Lookup(model)
	if !ok {
		return 0, false
	}
	return p.Cost(u), true
}

// Keys lists the table's keys, sorted.
func (t *Table) Keys() []string {
	if t == nil {
		return nil
	}
	out := append([]string(nil), t.keys...)
	sort.Strings(out)
	return out
}

func isSep(c byte) bool {
	return strings.IndexByte("-@[:._/", c) >= 0
}

// normalize lower-cases a model id and drops a Bedrock-style prefix up to
// and including "anthropic." ("us.anthropic.claude-..." -> "claude-...").
func normalize(model string) string {
	id := strings.ToLower(strings.TrimSpace(model))
	if i := strings.Index(id, "anthropic."); i >= 0 {
		id = id[i+len("anthropic."):]
	}
	return id
}
