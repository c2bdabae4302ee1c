package proxy

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/claudeflare/claudeflare/store"
)

// An OAuth account nobody uses learns nothing of its windows from
// answers, so its utilization would stay as it was when it was last used
// (or unknown) and headroom would misjudge it. Every usageInterval the
// daemon asks Anthropic's usage endpoint about each OAuth account idle
// that long, one request per account, and folds the answer in as if a
// response had carried it. An endpoint that does not answer changes
// nothing.

// usagePath is Anthropic's usage endpoint for OAuth accounts.
const usagePath = "/api/oauth/usage"

// usageInterval spaces the rounds and is the idle time that makes an
// account due: a modest rate, a few requests an hour per account.
const usageInterval = 10 * time.Minute

// usageBodyMax bounds the answer read.
const usageBodyMax = 64 << 10

// usageWindow is one window of the usage endpoint's answer.
type usageWindow struct {
	Utilization *float64 `json:"utilization"` // percent
	ResetsAt    string   `json:"resets_at"`
}

// usageAnswer is the usage endpoint's answer.
type usageAnswer struct {
	FiveHour *usageWindow `json:"five_hour"`
	SevenDay *usageWindow `json:"seven_day"`
}

// runUsage refreshes the idle accounts' utilization every usageInterval
// until ctx ends.
func (s *Server) runUsage(ctx context.Context) { everyTick(ctx, usageInterval, s.refreshUsage) }

// refreshUsage asks the usage endpoint about every OAuth account that is
// usable and has served nothing for usageInterval.
func (s *Server) refreshUsage(ctx context.Context) {
	for _, a := range s.pool.idleOAuth(s.now(), usageInterval) {
		if ctx.Err() != nil {
			return
		}
		secret, err := s.tokens.get(ctx, a, "")
		if err != nil {
			continue // the request path reports credential trouble
		}
		u, err := s.fetchUsage(ctx, a, secret)
		if err != nil {
			s.log.Debug("usage endpoint", "account", a.Name, "err", err)
			continue
		}
		s.pool.observeUsage(a, u, s.now())
	}
}

// fetchUsage makes one usage request with a's token.
func (s *Server) fetchUsage(ctx context.Context, a *account, secret string) (usageAnswer, error) {
	var u usageAnswer
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	url := strings.TrimRight(s.upstream.String(), "/") + usagePath
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return u, fmt.Errorf("build usage request: %w", err)
	}
	setCredentials(req.Header, a.Kind, secret)
	resp, err := s.client.Do(req)
	if err != nil {
		return u, fmt.Errorf("usage request: %s", newScrubber([]string{secret}).bytes([]byte(err.Error())))
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, usageBodyMax))
	if err != nil {
		return u, fmt.Errorf("read usage answer: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return u, fmt.Errorf("usage endpoint answered %d", resp.StatusCode)
	}
	if err := json.Unmarshal(body, &u); err != nil {
		return u, fmt.Errorf("usage answer: %w", err)
	}
	return u, nil
}

// idleOAuth lists the usable OAuth accounts that served nothing for idle
// at now.
func (p *pool) idleOAuth(now time.Time, idle time.Duration) []*account {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []*account
	for _, a := range p.accounts {
		if ok, _, _, _ := a.usableFor(now, ""); ok && a.Kind == store.KindOAuth && now.Sub(a.lastUsed) >= idle {
			out = append(out, a)
		}
	}
	return out
}

// observeUsage folds a usage answer into a's windows, as a response's
// utilization headers would be, and schedules a save.
func (p *pool) observeUsage(a *account, u usageAnswer, now time.Time) {
	set := func(w *usageWindow, util *float64, reset *time.Time) bool {
		if w == nil || w.Utilization == nil || *w.Utilization < 0 || *w.Utilization > 1000 {
			return false
		}
		*util = *w.Utilization / 100
		if t, err := time.Parse(time.RFC3339, w.ResetsAt); err == nil && t.After(now) && t.Sub(now) < maxResetAhead {
			*reset = t
		}
		return true
	}
	p.mu.Lock()
	changed := set(u.FiveHour, &a.limit.Util5h, &a.limit.Reset5h)
	changed = set(u.SevenDay, &a.limit.Util7d, &a.limit.Reset7d) || changed
	if changed {
		p.dirty[a.ID] = true
	}
	p.mu.Unlock()
	if changed {
		p.wakeSaver()
	}
}
