package proxy

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/claudeflare/claudeflare/config"
	"github.com/claudeflare/claudeflare/internal/acctstate"
	"github.com/claudeflare/claudeflare/store"
)

// pool is the in-memory view of the accounts: what the selector chooses
// from and where rate-limit state lives between saves. It is refreshed
// from the vault database by reload; rate-limit state is written back
// asynchronously by the saver goroutine, never on a request's path.
type pool struct {
	mu       sync.Mutex
	accounts []*account // priority, then name
	byID     map[int64]*account
	sel      selector
	policy   LimitPolicy
	versions map[int64]int64 // token_version seen per account
	// statusGen counts the status changes this process made (see reload).
	statusGen uint64
	dirty     map[int64]bool // rate state to save
	wake      chan struct{}  // signals the saver
	events    events         // status changes, for Subscribe
	holds     *holdQueue     // requests waiting for an account (routing.hold_max)
}

func newPool(cfg *config.Config, policy LimitPolicy) *pool {
	r := cfg.Routing
	return &pool{
		byID: map[int64]*account{},
		sel: selector{strategy: cfg.LBStrategy, session: cfg.SessionDuration(), maxUtil: r.MaxUtilization,
			sessions: newSessionTable(r.SessionIdle.Std(), r.SessionsMax)},
		policy:   policy,
		versions: map[int64]int64{},
		dirty:    map[int64]bool{},
		wake:     make(chan struct{}, 1),
		holds:    newHoldQueue(holdQueueMax),
	}
}

// pick returns the accounts to try for a request of model family fam
// ("" = unknown), in order.
func (p *pool) pick(now time.Time, fam string) selection {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.sel.pick(p.accounts, now, fam)
}

// pickFor returns the accounts to try for the request rt, in order.
func (p *pool) pickFor(now time.Time, rt route) selection {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.sel.pickFor(p.accounts, now, rt)
}

// stay records that a answered key's session (affinity).
func (p *pool) stay(key string, a *account, now time.Time) {
	p.mu.Lock()
	p.sel.stay(key, a, p.accounts, now)
	p.mu.Unlock()
}

// usable reports whether a is still usable now for model family fam (it
// may have been limited by a concurrent request since the selection was
// made).
func (p *pool) usable(a *account, now time.Time, fam string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	ok, _, _, _ := a.usableFor(now, fam)
	return ok && p.byID[a.ID] == a
}

func (p *pool) begin(a *account) {
	p.mu.Lock()
	a.inflight++
	p.mu.Unlock()
}

func (p *pool) end(a *account, ok bool, now time.Time) {
	p.mu.Lock()
	a.inflight--
	if ok {
		a.served++
		a.lastUsed = now
		p.sel.served(a, now)
	}
	p.mu.Unlock()
}

// observe folds a response (or an in-stream error) into the account's
// rate-limit state and schedules a save. It reports whether the account
// is now blocked.
func (p *pool) observe(a *account, v Verdict, now time.Time) bool {
	p.mu.Lock()
	before := a.limit.clone()
	blocked := a.limit.Apply(p.policy, v, now)
	changed, after := !a.limit.equal(before), a.limit.clone()
	if changed {
		p.dirty[a.ID] = true
	}
	p.mu.Unlock()
	p.events.limitChanged(a.Name, before, after, now)
	if changed {
		p.wakeSaver()
	}
	return blocked
}

func (p *pool) wakeSaver() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// unauthorized rests a after a 401 no refresh cured (backoff 1 min
// doubling to 30 min) and reports how many came in a row.
func (p *pool) unauthorized(a *account, now time.Time) int {
	p.mu.Lock()
	before := a.limit.clone()
	n := a.limit.unauthorized(now)
	after := a.limit.clone()
	p.dirty[a.ID] = true // kept across a restart, shown by `accounts list`
	p.mu.Unlock()
	p.events.limitChanged(a.Name, before, after, now)
	p.wakeSaver()
	return n
}

// refreshFailCooldown rests an account whose token could not be
// refreshed for a reason other than a dead refresh token.
const refreshFailCooldown = 30 * time.Second

// rest takes a out of rotation for d (not persisted: a restart retries).
func (p *pool) rest(a *account, d time.Duration, now time.Time) {
	p.mu.Lock()
	before := a.limit.clone()
	a.limit.block(now.Add(d), LimitRefreshFailed)
	after := a.limit.clone()
	p.mu.Unlock()
	p.events.limitChanged(a.Name, before, after, now)
}

// setStatus changes an account's status in memory (the vault is written
// by the caller).
func (p *pool) setStatus(a *account, status, reason string) {
	p.mu.Lock()
	a.Status, a.StatusReason = status, reason
	p.statusSetLocked(a)
	p.mu.Unlock()
}

// statusSetLocked records that this process just set a's status and
// will write it to the vault (statusWritten follows, always), so that a
// poll does not put back the row it read before that write.
func (p *pool) statusSetLocked(a *account) {
	p.statusGen++
	a.statusGen = p.statusGen
	a.statusWriting++
}

// statusWritten is called once a status this process set is in the
// vault database: a poll that read the rows between the change in memory
// and the write must not take the old row either, whether it applies
// them before the write ended (statusWriting) or after (statusGen).
func (p *pool) statusWritten(a *account) {
	p.mu.Lock()
	p.statusGen++
	a.statusGen = p.statusGen
	a.statusWriting--
	p.mu.Unlock()
}

// readGen is the status generation to pass to reload for rows about to
// be read.
func (p *pool) readGen() uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.statusGen
}

// setVersion records the token version this process wrote, so that the
// next reload does not take its own refresh for someone else's.
func (p *pool) setVersion(id, v int64) {
	p.mu.Lock()
	if v > p.versions[id] {
		p.versions[id] = v
	}
	p.mu.Unlock()
}

// reload replaces the descriptive fields of every account with the rows
// read from the vault database, keeping the counters and limit state of
// accounts it already knew. It returns the ids whose token version moved
// (another process wrote new tokens) so their cached tokens can be dropped.
//
// gen is readGen() taken before the rows were read: a status this process
// set after that (a quarantine cleared by a re-check, a needs-login mark)
// is newer than the row read, which must not undo it; the next poll reads
// the row as written and takes it.
func (p *pool) reload(rows []store.Account, gen uint64) (changed []int64, added, removed []string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	next := make([]*account, 0, len(rows))
	seen := make(map[int64]bool, len(rows))
	for _, r := range rows {
		seen[r.ID] = true
		a := p.byID[r.ID]
		if a == nil {
			// ID, Name and Kind never change for an id; they are
			// read without the lock.
			a = &account{ID: r.ID, Name: r.Name, Kind: r.Kind, unblockedAt: r.UnblockedAt}
			a.limit = limitFromStore(r)
			p.byID[r.ID] = a
			added = append(added, r.Name)
			p.versions[r.ID] = r.TokenVersion
		} else if r.TokenVersion > p.versions[r.ID] {
			changed = append(changed, r.ID)
			p.versions[r.ID] = r.TokenVersion
		}
		a.Priority, a.Tier, a.Paused, a.Overage = r.Priority, r.Tier, r.Paused, r.Overage
		a.upstream = r.Upstream
		if r.UnblockedAt > a.unblockedAt {
			p.unblock(a, r)
		}
		// Take the status only from a row that changed since last seen:
		// a poll that read the row just before this process marked the
		// account needs-login must not put it back in rotation.
		seen := rowStatus{r.Status, r.StatusReason, r.UpdatedAt, r.TokenVersion}
		if seen != a.seen && a.statusWriting == 0 && a.statusGen <= gen {
			a.seen = seen
			a.Status, a.StatusReason = r.Status, r.StatusReason
		}
		next = append(next, a)
	}
	for id, a := range p.byID {
		if !seen[id] {
			removed = append(removed, a.Name)
			delete(p.byID, id)
			delete(p.versions, id)
			delete(p.dirty, id)
		}
	}
	p.accounts = next
	return changed, added, removed
}

// unblock drops every block this process holds for a, because `accounts
// unblock` moved its row's unblocked_at: the rate limit or cooldown, the
// model limits, the extra-usage mark, the rest after a failing or
// blocked refresh, the backoff after uncured 401s. The row's status
// (cleared there) is taken as it is. Called with p.mu held.
func (p *pool) unblock(a *account, r store.Account) {
	a.unblockedAt = r.UnblockedAt
	a.unblocks++
	l := a.limit
	a.limit = LimitState{Status: l.Status, Reset: l.Reset, Claim: l.Claim,
		Util5h: l.Util5h, Util7d: l.Util7d, Reset5h: l.Reset5h, Reset7d: l.Reset7d}
	a.checkedAt = time.Time{}
	a.seen = rowStatus{r.Status, r.StatusReason, r.UpdatedAt, r.TokenVersion}
	a.Status, a.StatusReason = r.Status, r.StatusReason
	p.dirty[a.ID] = true // a save still pending must not write the old blocks back
	p.wakeSaver()
	if p.events.log != nil {
		p.events.log.Info("account unblocked: blocks dropped", "account", a.Name, "status", r.Status)
	}
	p.events.publish(AccountEvent{Account: a.Name, Kind: EventUnblocked, Reason: "unblocked",
		State: a.state(store.FromMS(r.UnblockedAt)), At: store.FromMS(r.UnblockedAt)})
}

// unblockGen is how many unblocks of a this process applied.
func (p *pool) unblockGen(a *account) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return a.unblocks
}

// rowStatus is what an account's status was last taken from.
type rowStatus struct {
	status, reason     string
	updatedAt, version int64
}

func limitFromStore(r store.Account) LimitState {
	s := LimitState{
		Overage:  store.FromMS(r.OverageUntil),
		Until:    store.FromMS(r.RateLimitedUntil),
		Cooldown: time.Duration(r.CooldownMS) * time.Millisecond,
		Status:   r.RLStatus,
		Reset:    store.FromMS(r.RLReset),
		Util5h:   r.Util5h,
		Util7d:   r.Util7d,
		Reset5h:  store.FromMS(r.Reset5h),
		Reset7d:  store.FromMS(r.Reset7d),
	}
	if !s.Until.IsZero() {
		s.Reason, s.Status, s.Claim = reasonFromStore(r.RLStatus)
	}
	for fam, ms := range acctstate.ParseModelLimits(r.ModelLimits) {
		if s.Models == nil {
			s.Models = map[string]time.Time{}
		}
		s.Models[fam] = store.FromMS(ms)
	}
	return s
}

// modelLimitsColumn is the model_limits column for m.
func modelLimitsColumn(m map[string]time.Time) string {
	var ml acctstate.ModelLimits
	for fam, t := range m {
		if ml == nil {
			ml = acctstate.ModelLimits{}
		}
		ml[fam] = store.ToMS(t)
	}
	return ml.String()
}

// savedReasons are the proxy's own limit reasons a block keeps across a
// restart (in rl_status, with rate_limited_until): `accounts list` shows
// them as the window. The rests after a failing or blocked refresh are
// not among them: a restart retries the refresh.
var savedReasons = map[string]bool{LimitRateLimited: true, LimitCooldown: true, LimitUnauthorized: true,
	WindowExtraUsage: true}

// reasonToStore is the rl_status column for s: while s blocks the
// account (rate_limited_until set), the block's reason, its window in
// front when the claim names one ("5h rejected"), so that the saved row
// says why (acctstate.WindowOf); else the last unified status.
func reasonToStore(s LimitState) string {
	if s.Until.IsZero() {
		return s.Status
	}
	switch {
	case savedReasons[s.Reason] || reasonWindowed(s.Reason):
		return s.Reason
	case hardStatus(s.Reason) && s.Claim == "five_hour":
		return "5h " + s.Reason
	case hardStatus(s.Reason) && s.Claim == "seven_day":
		return "7d " + s.Reason
	case hardStatus(s.Reason):
		return s.Reason
	}
	return s.Status
}

// reasonWindowed reports whether reason is a hard status with its window
// in front ("5h rejected").
func reasonWindowed(reason string) bool {
	w, st, ok := strings.Cut(reason, " ")
	return ok && (w == "5h" || w == "7d") && hardStatus(st)
}

// reasonFromStore reads the rl_status of a row that is blocked: the
// block's reason, and the unified status and claim it implies.
func reasonFromStore(rl string) (reason, status, claim string) {
	switch {
	case savedReasons[rl]:
		return rl, "", ""
	case reasonWindowed(rl):
		w, st, _ := strings.Cut(rl, " ")
		claim = "five_hour"
		if w == "7d" {
			claim = "seven_day"
		}
		return rl, st, claim
	case hardStatus(rl):
		return rl, rl, ""
	}
	return LimitRateLimited, rl, ""
}

func limitToStore(s LimitState) store.RateState {
	return store.RateState{
		RateLimitedUntil: store.ToMS(s.Until),
		RLStatus:         reasonToStore(s),
		RLReset:          store.ToMS(s.Reset),
		Util5h:           s.Util5h,
		Util7d:           s.Util7d,
		Reset5h:          store.ToMS(s.Reset5h),
		Reset7d:          store.ToMS(s.Reset7d),
		CooldownMS:       s.Cooldown.Milliseconds(),
		OverageUntil:     store.ToMS(s.Overage),
		ModelLimits:      modelLimitsColumn(s.Models),
	}
}

// takeDirty returns the rate states to save and clears the dirty set.
func (p *pool) takeDirty() map[int64]store.RateState {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.dirty) == 0 {
		return nil
	}
	out := make(map[int64]store.RateState, len(p.dirty))
	for id := range p.dirty {
		if a := p.byID[id]; a != nil {
			out[id] = limitToStore(a.limit)
		}
	}
	clear(p.dirty)
	return out
}

// saveInterval spaces the rate-state writes.
const saveInterval = 500 * time.Millisecond

// runSaver writes rate-limit state to the vault database whenever it
// changes, until ctx ends; then it saves once more.
func (p *pool) runSaver(ctx context.Context, db *store.DB, log *slog.Logger) {
	// Writes run on a context of their own, so that the last round at
	// shutdown is not cut short by the cancellation that asked for it.
	save := func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		for id, st := range p.takeDirty() {
			if err := store.SaveRateState(sctx, db, id, st); err != nil {
				log.Warn("save rate-limit state", "account_id", id, "err", err)
				p.markDirty(id)
			}
		}
	}
	for {
		select {
		case <-p.wake:
			save()
			// At most one round of writes per saveInterval: the state
			// changes with nearly every response under load.
			select {
			case <-time.After(saveInterval):
			case <-ctx.Done():
			}
		case <-ctx.Done():
			save()
			return
		}
	}
}

func (p *pool) markDirty(id int64) {
	p.mu.Lock()
	if p.byID[id] != nil {
		p.dirty[id] = true
	}
	p.mu.Unlock()
}
