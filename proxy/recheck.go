package proxy

import (
	"context"
	"time"

	"github.com/claudeflare/claudeflare/internal/acctstate"
	"github.com/claudeflare/claudeflare/store"
)

// The re-check of far blocks and quarantines. A limit that ends soon heals
// by itself (the next request after its reset may use the account); one
// that ends far ahead (more than ratelimit.recheck_interval away), a
// model-scoped limit alike, and a quarantine (which has no end) are
// re-checked by a cheap probe at most every recheck_interval, so that a
// wrong or lifted block does not keep a healthy account out for days. A
// probe that the upstream serves clears the block (a quarantine becomes
// status ok, persisted).

// recheckTick is how often the re-check goroutine looks for accounts due.
const recheckTick = 5 * time.Second

// defaultRecheckInterval is ratelimit.recheck_interval when unset.
const defaultRecheckInterval = 5 * time.Minute

// probeTimeout bounds one re-check probe.
const probeTimeout = 60 * time.Second

// runRecheck re-checks due accounts every recheckTick until ctx ends.
func (s *Server) runRecheck(ctx context.Context) { everyTick(ctx, recheckTick, s.recheckDue) }

// everyTick calls f every d until ctx ends (the proxy's background loops).
func everyTick(ctx context.Context, d time.Duration, f func(context.Context)) {
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			f(ctx)
		}
	}
}

// recheckItem is one block to re-check: the account and the family of a
// model-scoped limit ("" for a whole-account limit or a quarantine).
type recheckItem struct {
	a      *account
	family string
}

// recheckDue probes every account whose far block or quarantine is due
// for a re-check at the clock's now, one after the other.
func (s *Server) recheckDue(ctx context.Context) {
	for _, it := range s.pool.dueForRecheck(s.now()) {
		if ctx.Err() != nil {
			return
		}
		s.recheck(ctx, it)
	}
}

// dueForRecheck lists the blocks due for a re-check at now and marks them
// checked. A block is first seen, not probed: its first probe comes one
// interval after the block was found.
func (p *pool) dueForRecheck(now time.Time) []recheckItem {
	p.mu.Lock()
	defer p.mu.Unlock()
	every := p.policy.RecheckInterval
	if every <= 0 {
		every = defaultRecheckInterval
	}
	var out []recheckItem
	for _, a := range p.accounts {
		items := a.farBlocks(now, every)
		if len(items) == 0 {
			a.checkedAt = time.Time{}
			continue
		}
		switch {
		case a.checkedAt.IsZero() || a.checkedAt.After(now):
			a.checkedAt = now
		case now.Sub(a.checkedAt) >= every:
			a.checkedAt = now
			out = append(out, items...)
		}
	}
	return out
}

// farBlocks lists what a probe of a may clear at now: a quarantine, a
// whole-account limit ending more than every ahead, a model limit alike.
// A paused account, one that needs a login or a new key, and the rests
// only a working token cures (refresh blocked or failing, uncured 401s)
// are left alone.
func (a *account) farBlocks(now time.Time, every time.Duration) []recheckItem {
	if a.Paused {
		return nil
	}
	switch a.Status {
	case store.StatusQuarantined:
		return []recheckItem{{a: a}}
	case "", store.StatusOK:
	default:
		return nil
	}
	var out []recheckItem
	if a.limit.Blocked(now) {
		switch a.limit.Reason {
		case LimitRefreshBlocked, LimitRefreshFailed, LimitUnauthorized:
			return nil
		}
		if a.limit.Until.Sub(now) > every {
			out = append(out, recheckItem{a: a})
		}
		return out // a probe of a family says nothing while the whole account is out
	}
	for fam, t := range a.limit.Models {
		if t.Sub(now) > every {
			out = append(out, recheckItem{a: a, family: fam})
		}
	}
	return out
}

// recheck probes one block and acts on the answer: served clears it; any
// other answer is learnt as a request's would be.
func (s *Server) recheck(ctx context.Context, it recheckItem) {
	a := it.a
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	secret, err := s.tokens.get(ctx, a, "")
	if err != nil {
		s.log.Debug("re-check: no credential", "account", a.Name, "err", err)
		return
	}
	res, err := probe(ctx, s.client, s.upstream, a.Kind, secret, probeBodyFor(it.family), s.now())
	now := s.now()
	if err != nil {
		s.log.Debug("re-check: no answer", "account", a.Name, "err", res.Detail)
		return
	}
	v := res.Verdict
	if v.Learn {
		s.pool.observe(a, v, now)
	}
	served := v.Class == ClassOK && (!v.Limited || (it.family != "" && v.Family != it.family))
	if !served {
		s.log.Debug("re-check: still blocked", "account", a.Name, "status", res.Status, "class", v.Class.String(),
			"state", s.pool.stateOf(a, now).String())
		return
	}
	if s.pool.stateOf(a, now).Word == acctstate.Quarantined {
		if s.pool.setStatusOnce(a, store.StatusOK, "") {
			wctx, wcancel := context.WithTimeout(context.WithoutCancel(ctx), statusWriteTimeout)
			defer wcancel()
			if err := store.SetStatus(wctx, s.vaultDB, a.ID, store.StatusOK, "", now); err != nil {
				s.log.Error("save account status", "account", a.Name, "state", store.StatusOK, "err", err)
			}
			s.pool.statusWritten(a)
			s.log.Info("re-check: quarantined account serves again: back in rotation", "account", a.Name)
			s.pool.events.publish(AccountEvent{Account: a.Name, Kind: EventRecovered, Reason: "recheck",
				State: s.pool.stateOf(a, now), At: now})
		}
		return
	}
	if s.pool.clearLimit(a, it.family, now) {
		s.log.Info("re-check: limit lifted early: back in rotation", "account", a.Name, "family", it.family)
	}
}

// clearLimit ends a's whole-account limit (family "") or its limit of
// model family fam at now, after a probe found it served; it reports
// whether there was one.
func (p *pool) clearLimit(a *account, fam string, now time.Time) bool {
	p.mu.Lock()
	before := a.limit.clone()
	switch {
	case fam != "":
		if _, ok := a.limit.Models[fam]; !ok {
			p.mu.Unlock()
			return false
		}
		delete(a.limit.Models, fam)
		if len(a.limit.Models) == 0 {
			a.limit.Models = nil
		}
	case a.limit.Blocked(now):
		a.limit.Until, a.limit.Reason, a.limit.Cooldown = time.Time{}, "", 0
	default:
		p.mu.Unlock()
		return false
	}
	p.dirty[a.ID] = true
	after := a.limit.clone()
	p.mu.Unlock()
	p.events.limitChanged(a.Name, before, after, now)
	if fam != "" {
		p.events.publish(AccountEvent{Account: a.Name, Kind: EventRecovered, Reason: "recheck " + fam,
			State: after.state(now), At: now})
	}
	p.wakeSaver()
	return true
}
