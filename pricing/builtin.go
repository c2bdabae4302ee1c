package pricing

// Anthropic's published list prices, USD per million tokens, from the
// model pricing table at https://platform.claude.com/docs/en/about-claude/pricing
// (columns: base input, 5m cache writes, 1h cache writes, cache hits and
// refreshes, output), checked 2026-12-02. The cache rates of Opus 5.5 and
// Sonnet 5.5 (reads at 0.05x input) are from changelogs quoting that page
// rather than the page itself; their input and output prices are from
// the models' overview pages. Not priced here: the long-context
// (over 200K tokens) and prompt-length tiers, batch discounts, fast mode,
// data-residency multipliers and server tools (web search); Claude Haiku
// 5.5 has no flat price (it is tiered by prompt length) and needs a
// [pricing."claude-haiku-5-5"] entry to be priced. Override or add any
// model in the config.
var (
	opus4    = Price{Input: 15, CacheWrite5m: 18.75, CacheWrite1h: 30, CacheRead: 1.50, Output: 75}
	opus45   = Price{Input: 5, CacheWrite5m: 6.25, CacheWrite1h: 10, CacheRead: 0.50, Output: 25}
	opus55   = Price{Input: 4, CacheWrite5m: 5, CacheWrite1h: 8, CacheRead: 0.20, Output: 20}
	sonnet4  = Price{Input: 3, CacheWrite5m: 3.75, CacheWrite1h: 6, CacheRead: 0.30, Output: 15}
	sonnet5  = Price{Input: 2, CacheWrite5m: 2.50, CacheWrite1h: 4, CacheRead: 0.20, Output: 10}
	sonnet55 = Price{Input: 2, CacheWrite5m: 2.50, CacheWrite1h: 4, CacheRead: 0.10, Output: 10}
	haiku45  = Price{Input: 1, CacheWrite5m: 1.25, CacheWrite1h: 2, CacheRead: 0.10, Output: 5}
	haiku35  = Price{Input: 0.80, CacheWrite5m: 1, CacheWrite1h: 1.6, CacheRead: 0.08, Output: 4}
	haiku3   = Price{Input: 0.25, CacheWrite5m: 0.30, CacheWrite1h: 0.50, CacheRead: 0.03, Output: 1.25}
	fable5   = Price{Input: 10, CacheWrite5m: 12.50, CacheWrite1h: 20, CacheRead: 1, Output: 50}
	fable51  = Price{Input: 10, CacheWrite5m: 12.50, CacheWrite1h: 20, CacheRead: 0.25, Output: 50}
)

// builtin maps ids and id prefixes (matched at a separator, so a dated id
// such as claude-sonnet-4-5-20250929 finds claude-sonnet-4-5) to prices.
// A prefix never crosses a minor version: claude-opus-4 prices
// claude-opus-4-20250514 but not claude-opus-4-9, a model this table
// does not know (hence the -0 aliases listed apart).
var builtin = map[string]Price{
	// Opus 4.x
	"claude-opus-4":   opus4,
	"claude-opus-4-0": opus4,
	"claude-opus-4-1": opus4,
	"claude-opus-4-5": opus45,
	"claude-opus-4-6": opus45,
	"claude-opus-4-7": opus45,
	"claude-opus-4-8": opus45,
	"claude-opus-5":   opus45,
	"claude-opus-5-5": opus55,
	"claude-3-opus":   opus4,

	// Sonnet 4.x
	"claude-sonnet-4":   sonnet4,
	"claude-sonnet-4-0": sonnet4,
	"claude-sonnet-4-5": sonnet4,
	"claude-sonnet-4-6": sonnet4,
	"claude-3-7-sonnet": sonnet4,
	"claude-sonnet-5":   sonnet5,
	"claude-sonnet-5-5": sonnet55,

	// Haiku
	"claude-haiku-4-5": haiku45,
	"claude-3-5-haiku": haiku35,
	"claude-3-haiku":   haiku3,

	// Fable
	"claude-fable-5":   fable5,
	"claude-fable-5-1": fable51,
}
