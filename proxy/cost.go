package proxy

import (
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/claudeflare/claudeflare/pricing"
	"github.com/claudeflare/claudeflare/store"
)

// costs prices each request's row (its cost_usd) with the price table
// of the running config: set at New, replaced by SetLive on SIGHUP.
type costs struct {
	table atomic.Pointer[pricing.Table]
	log   *slog.Logger

	mu     sync.Mutex
	warned map[string]bool // models without a price, warned about once
}

// maxUnpricedWarnings bounds the models warned about one by one; past it
// one last line says that more went unpriced.
const maxUnpricedWarnings = 256

// unpricedOther stands for a model that does not look like a model id
// (never logged: it may be anything a client wrote).
const unpricedOther = "(not a model id)"

// of is row's cost in USD, nil when its model has no price (or the row
// names no model). The first time a model has no price it logs a warning.
func (c *costs) of(row *store.Request) *float64 {
	if row.Model == "" {
		return nil
	}
	u := pricing.FromLog(row.InputTokens, row.OutputTokens, row.CacheReadInputTokens,
		row.CacheCreationInputTokens, row.CacheCreation5mInputTokens, row.CacheCreation1hInputTokens)
	usd, ok := c.table.Load().Cost(row.Model, u)
	if !ok {
		c.warnUnpriced(row.Model)
		return nil
	}
	return &usd
}

func (c *costs) warnUnpriced(model string) {
	if !loggableModel(model) {
		model = unpricedOther
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.warned[model] {
		return
	}
	n := len(c.warned)
	if n > maxUnpricedWarnings {
		return
	}
	c.warned[model] = true
	if n == maxUnpricedWarnings {
		c.log.Warn("more models without a price; their requests have no cost_usd (not warned one by one)", "models", n)
		return
	}
	c.log.Warn("model has no price: its requests have no cost_usd (add a [pricing.\"<model>\"] table to the config)", "model", model)
}

// loggableModel reports whether model looks like a model id and may be
// logged: at most 128 bytes of letters, digits and . - _ : @ [ ] /, and
// nothing that may be a credential.
func loggableModel(model string) bool {
	if len(model) > 128 || strings.Contains(strings.ToLower(model), "sk-ant") {
		return false
	}
	for i := 0; i < len(model); i++ {
		switch ch := model[i]; {
		case 'a' <= ch && ch <= 'z', 'A' <= ch && ch <= 'Z', '0' <= ch && ch <= '9':
		case strings.IndexByte(".-_:@[]/", ch) >= 0:
		default:
			return false
		}
	}
	return true
}
