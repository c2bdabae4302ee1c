package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/claudeflare/claudeflare/cloud"
	"github.com/claudeflare/claudeflare/internal/acctstate"
	"github.com/claudeflare/claudeflare/oauth"
	"github.com/claudeflare/claudeflare/store"
	"github.com/claudeflare/claudeflare/vault"
)

// errNeedsLogin means the account's refresh token is dead: it is out of
// rotation until `claudeflare accounts login` logs it in again.
var errNeedsLogin = errors.New("account needs login")

// errRefreshBlocked means the token endpoint refused the account's
// refresh as blocked (403 or 429): the refresh token was not spent and is
// tried again after a backoff.
var errRefreshBlocked = errors.New("token refresh blocked")

// LimitRefreshBlocked is the limit reason of an account whose refresh the
// token endpoint refused as blocked (403 or 429), until its backoff ends.
const LimitRefreshBlocked = "refresh_blocked"

// The backoff of a blocked refresh: 1 min doubling to 30 min, or the
// endpoint's retry-after when longer (at most 6 h).
const (
	refreshBlockedInitial = time.Minute
	refreshBlockedMax     = 30 * time.Minute
	refreshRetryAfterMax  = 6 * time.Hour
)

// refreshBlock is the backoff state of one account's blocked refresh.
type refreshBlock struct {
	until  time.Time     // no refresh attempt before this
	step   time.Duration // the last backoff step, doubled on a repeat
	active bool          // blocked since the last successful refresh
	gen    int           // the account's unblock generation it began in (pool.unblockGen)
}

// refreshTimeout bounds one refresh, which runs detached from the request
// that triggered it so that a client going away can never lose a rotated
// refresh token half way.
const refreshTimeout = 30 * time.Second

// cred is an account's usable credential, immutable once published.
type cred struct {
	secret  string // access token or API key
	refresh string // the refresh token, only to scrub it from what is relayed
	expires time.Time
	version int64 // vault version it came from
}

// tokens hands out credentials per account: a cached access token,
// refreshed when within margin of expiry, one refresh per account at a
// time however many requests wait (singleflight). The rotated refresh
// token is stored with a compare-and-swap on the vault version before the
// new access token is used.
type tokens struct {
	vault  *vault.Vault
	oauth  *oauth.Client
	margin atomic.Int64 // a time.Duration; Server.SetLive changes it
	now    func() time.Time
	log    *slog.Logger
	pool   *pool
	obs    Observer

	sf    singleflight.Group
	mu    sync.Mutex
	cache map[int64]*atomic.Pointer[cred]
	// markedLogin remembers accounts already reported as needing login,
	// so the warning is logged once.
	markedLogin map[int64]bool
	// blocked holds the backoff of accounts whose refresh the token
	// endpoint refused as blocked (guarded by mu).
	blocked map[int64]*refreshBlock
	// forcedAt is when each account's last forced refresh (after a 401)
	// was asked for (guarded by mu).
	forcedAt map[int64]time.Time
}

// forceInterval spaces the forced refreshes of one account: a 401 within
// it of the last one is not cured by another refresh (the account rests).
const forceInterval = time.Minute

// mayForce reports whether a 401 of account id may be answered by a
// forced refresh at now.
func (t *tokens) mayForce(id int64, now time.Time) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	last, ok := t.forcedAt[id]
	return !ok || now.Sub(last) >= forceInterval || now.Before(last)
}

// forced records a forced refresh of account id at now.
func (t *tokens) forced(id int64, now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.forcedAt == nil {
		t.forcedAt = map[int64]time.Time{}
	}
	t.forcedAt[id] = now
}

func (t *tokens) slot(id int64) *atomic.Pointer[cred] {
	t.mu.Lock()
	defer t.mu.Unlock()
	p := t.cache[id]
	if p == nil {
		p = new(atomic.Pointer[cred])
		t.cache[id] = p
	}
	return p
}

// forget drops the cached credential (another process wrote new tokens).
func (t *tokens) forget(id int64) {
	t.slot(id).Store(nil)
}

func (t *tokens) fresh(c *cred, kind string) bool {
	if c == nil || c.secret == "" {
		return false
	}
	if kind == store.KindAPIKey || c.expires.IsZero() {
		return true
	}
	return t.now().Add(time.Duration(t.margin.Load())).Before(c.expires)
}

// get returns a usable credential for a. stale, when set, is a credential
// the upstream refused with 401: a different one is wanted.
func (t *tokens) get(ctx context.Context, a *account, stale string) (string, error) {
	slot := t.slot(a.ID)
	if c := slot.Load(); t.fresh(c, a.Kind) && (stale == "" || c.secret != stale) {
		return c.secret, nil
	}
	ch := t.sf.DoChan(fmt.Sprint(a.ID), func() (any, error) {
		ctx, cancel := context.WithTimeout(context.Background(), refreshTimeout)
		defer cancel()
		return t.load(ctx, a, stale)
	})
	select {
	case res := <-ch:
		if res.Err != nil {
			return "", res.Err
		}
		return res.Val.(*cred).secret, nil
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

// load runs under the account's singleflight key.
func (t *tokens) load(ctx context.Context, a *account, stale string) (*cred, error) {
	slot := t.slot(a.ID)
	if c := slot.Load(); t.fresh(c, a.Kind) && (stale == "" || c.secret != stale) {
		return c, nil // published while this call waited to start
	}
	s, err := t.vault.Secrets(ctx, a.ID)
	if err != nil {
		return nil, fmt.Errorf("read secrets of %s: %w", a.Name, err)
	}
	if cloud.Is(a.Kind) {
		if s.CloudKey == "" {
			return nil, fmt.Errorf("account %s has no cloud credentials", a.Name)
		}
		c := &cred{secret: s.CloudKey, version: s.Version}
		slot.Store(c)
		return c, nil
	}
	if a.Kind == store.KindAPIKey {
		if s.APIKey == "" {
			return nil, fmt.Errorf("account %s has no API key", a.Name)
		}
		c := &cred{secret: s.APIKey, version: s.Version}
		slot.Store(c)
		return c, nil
	}
	if c := (&cred{secret: s.AccessToken, refresh: s.RefreshToken, expires: s.ExpiresAt, version: s.Version}); t.fresh(c, a.Kind) && c.secret != stale {
		slot.Store(c) // stored tokens are good (first use, or another process refreshed)
		t.pool.setVersion(a.ID, s.Version)
		return c, nil
	}
	return t.refresh(ctx, a, s, true)
}

// refresh trades s's refresh token for new tokens and stores them.
// retry allows one more round when another process moved the tokens.
func (t *tokens) refresh(ctx context.Context, a *account, s vault.Secrets, retry bool) (*cred, error) {
	slot := t.slot(a.ID)
	if s.RefreshToken == "" {
		if s.AccessToken != "" {
			// A long-lived setup token: never refreshed, dead once refused.
			return nil, t.needsLogin(ctx, a, "setup token refused or expired (it cannot be refreshed)")
		}
		return nil, t.needsLogin(ctx, a, "no refresh token stored")
	}
	if until, ok := t.blockedUntil(a); ok {
		// At most one attempt per backoff interval, however many
		// requests want a token.
		return nil, fmt.Errorf("%w: %s: token endpoint refused the refresh; next try after %s",
			errRefreshBlocked, a.Name, until.UTC().Format(time.RFC3339))
	}
	tok, err := t.oauth.Refresh(ctx, s.RefreshToken)
	t.obs.Refresh(a.Name, err == nil)
	if err == nil {
		t.unblocked(a)
	}
	if err != nil {
		if errors.Is(err, oauth.ErrRefreshBlocked) {
			// The endpoint did not use the grant: the stored refresh
			// token stays as it is, the account stays logged in.
			return nil, t.refreshBlocked(a, err)
		}
		if !errors.Is(err, oauth.ErrInvalidGrant) {
			return nil, fmt.Errorf("refresh token of %s: %w", a.Name, err)
		}
		// Another process may have rotated the token first: if the
		// vault moved, its tokens are the live ones.
		s2, rerr := t.vault.Secrets(ctx, a.ID)
		if rerr != nil {
			return nil, fmt.Errorf("read secrets of %s: %w", a.Name, rerr)
		}
		if s2.Version != s.Version && retry {
			if c := (&cred{secret: s2.AccessToken, refresh: s2.RefreshToken, expires: s2.ExpiresAt, version: s2.Version}); t.fresh(c, a.Kind) {
				slot.Store(c)
				t.pool.setVersion(a.ID, s2.Version)
				return c, nil
			}
			return t.refresh(ctx, a, s2, false)
		}
		return nil, t.needsLogin(ctx, a, "refresh token rejected (invalid_grant)")
	}
	next := vault.Secrets{AccessToken: tok.AccessToken, RefreshToken: tok.RefreshToken, ExpiresAt: tok.ExpiresAt}
	if next.RefreshToken == "" {
		next.RefreshToken = s.RefreshToken // not rotated
	}
	// Save first: the old refresh token is dead now, the new one must
	// reach the disk before anything else happens.
	v, err := t.vault.SwapTokens(ctx, a.ID, s.Version, next)
	if errors.Is(err, vault.ErrConflict) {
		// Another writer stored tokens in between; theirs win.
		s2, rerr := t.vault.Secrets(ctx, a.ID)
		if rerr != nil {
			return nil, fmt.Errorf("read secrets of %s: %w", a.Name, rerr)
		}
		c := &cred{secret: s2.AccessToken, refresh: s2.RefreshToken, expires: s2.ExpiresAt, version: s2.Version}
		if !t.fresh(c, a.Kind) {
			if retry {
				return t.refresh(ctx, a, s2, false)
			}
			return nil, fmt.Errorf("refresh token of %s: tokens changed concurrently", a.Name)
		}
		slot.Store(c)
		t.pool.setVersion(a.ID, s2.Version)
		return c, nil
	}
	if err != nil {
		// The refresh token was rotated but could not be saved. Keep
		// using the new tokens in memory so the account still works,
		// and say so loudly: a restart now would need a new login.
		t.log.Error("rotated tokens not saved", "account", a.Name, "err", err)
		c := &cred{secret: next.AccessToken, refresh: next.RefreshToken, expires: next.ExpiresAt, version: s.Version}
		slot.Store(c)
		return c, nil
	}
	c := &cred{secret: next.AccessToken, refresh: next.RefreshToken, expires: next.ExpiresAt, version: v}
	t.pool.setVersion(a.ID, v)
	slot.Store(c)
	t.log.Debug("access token refreshed", "account", a.Name, "expires_at", next.ExpiresAt.UTC().Format(time.RFC3339))
	return c, nil
}

// blockedUntil reports whether a refresh of account id must wait, and
// until when.
// An `accounts unblock` since the backoff began ends it.
func (t *tokens) blockedUntil(a *account) (time.Time, bool) {
	gen := t.pool.unblockGen(a)
	t.mu.Lock()
	defer t.mu.Unlock()
	b := t.blocked[a.ID]
	if b != nil && b.gen != gen {
		delete(t.blocked, a.ID)
		return time.Time{}, false
	}
	if b == nil || !b.active || !t.now().Before(b.until) {
		return time.Time{}, false
	}
	return b.until, true
}

// refreshBlocked starts or lengthens the backoff of a's blocked refresh,
// rests the account until it ends (limit reason LimitRefreshBlocked, kept
// in memory), and logs at warn when the account enters the state.
func (t *tokens) refreshBlocked(a *account, err error) error {
	now := t.now()
	gen := t.pool.unblockGen(a)
	t.mu.Lock()
	if t.blocked == nil {
		t.blocked = map[int64]*refreshBlock{}
	}
	b := t.blocked[a.ID]
	if b == nil {
		b = &refreshBlock{}
		t.blocked[a.ID] = b
	}
	if b.gen != gen {
		*b = refreshBlock{gen: gen} // an unblock since: start over
	}
	first := !b.active
	switch {
	case first || b.step == 0:
		b.step = refreshBlockedInitial
	default:
		b.step = min(2*b.step, refreshBlockedMax)
	}
	d := b.step
	var oe *oauth.Error
	if errors.As(err, &oe) && oe.RetryAfter > d {
		d = min(oe.RetryAfter, refreshRetryAfterMax)
	}
	b.until, b.active = now.Add(d), true
	until := b.until
	t.mu.Unlock()

	p := t.pool
	p.mu.Lock()
	before := a.limit.clone()
	a.limit.block(until, LimitRefreshBlocked)
	after := a.limit.clone()
	p.mu.Unlock()
	p.events.limitChanged(a.Name, before, after, now)

	if first {
		t.log.Warn("token refresh blocked by the token endpoint: account resting, refresh token kept",
			"account", a.Name, "state", acctstate.RefreshBlocked, "until", until.UTC().Format(time.RFC3339), "err", err)
	} else {
		t.log.Debug("token refresh still blocked", "account", a.Name, "until", until.UTC().Format(time.RFC3339), "err", err)
	}
	return fmt.Errorf("%w: %s: %w", errRefreshBlocked, a.Name, err)
}

// unblocked ends a's blocked-refresh state after a refresh that worked.
func (t *tokens) unblocked(a *account) {
	t.mu.Lock()
	b := t.blocked[a.ID]
	was := b != nil && b.active
	delete(t.blocked, a.ID)
	t.mu.Unlock()
	if was {
		t.log.Info("token refresh no longer blocked", "account", a.Name)
	}
}

// needsLogin takes the account out of rotation, in memory and in the
// vault, and logs it once.
func (t *tokens) needsLogin(ctx context.Context, a *account, reason string) error {
	t.pool.setStatus(a, store.StatusNeedsLogin, reason)
	t.forget(a.ID)
	if err := t.vault.MarkNeedsLogin(ctx, a.ID, reason); err != nil {
		t.log.Error("mark account as needing login", "account", a.Name, "err", err)
	}
	t.pool.statusWritten(a)
	t.mu.Lock()
	first := !t.markedLogin[a.ID]
	t.markedLogin[a.ID] = true
	t.mu.Unlock()
	if first {
		t.log.Warn("account needs login: out of rotation", "account", a.Name, "state", acctstate.NeedsLogin, "reason", reason,
			"hint", "run `claudeflare accounts login "+a.Name+"`")
		t.pool.events.publish(AccountEvent{Account: a.Name, Kind: EventNeedsLogin, Reason: reason,
			State: acctstate.State{Word: acctstate.NeedsLogin, Reason: reason}, At: t.now()})
	}
	return fmt.Errorf("%w: %s", errNeedsLogin, a.Name)
}

// known lists the account's credentials this process holds (access
// token or API key, refresh token), for scrubbing relayed answers.
func (t *tokens) known(id int64) []string {
	c := t.slot(id).Load()
	if c == nil {
		return nil
	}
	return []string{c.secret, c.refresh}
}

// loggedIn clears the once-only marker when an account is ok again. The
// pool's status decides, not the row the caller read: a poll that read
// the row just before this process marked the account needs-login must
// not use up the marker (the recovered event would then never come).
func (t *tokens) loggedIn(id int64) {
	name := t.pool.loggedInName(id)
	if name == "" {
		return
	}
	t.mu.Lock()
	marked := t.markedLogin[id]
	delete(t.markedLogin, id)
	t.mu.Unlock()
	if marked {
		t.pool.events.publish(AccountEvent{Account: name, Kind: EventRecovered, Reason: "logged_in", At: t.now()})
	}
}
