package accounts

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/claudeflare/claudeflare/cloud"
	"github.com/claudeflare/claudeflare/internal/acctstate"
	"github.com/claudeflare/claudeflare/oauth"
	"github.com/claudeflare/claudeflare/store"
	"github.com/claudeflare/claudeflare/vault"
)

// ActionChecked is the audit action of a check (`accounts check`, POST
// /api/accounts/{name}/check) that changed what is stored about an
// account: a block cleared, a status set.
const ActionChecked = "account.checked"

// ProbeResult is what one cheap request learnt about an account (the
// shape of proxy.ProbeResult; accounts does not import the proxy).
type ProbeResult struct {
	Status int             // the upstream's HTTP status
	State  acctstate.State // the state the answer puts the account in
	Rate   store.RateState // the rate-limit state to store
	Detail string          // the upstream's message, sanitised
}

// Probe sends one cheap request with an account's credential (kind is
// store.KindOAuth or store.KindAPIKey). An error means no answer was had
// (connection refused, timeout): the account's state is unknown.
type Probe func(ctx context.Context, kind, secret string, now time.Time) (ProbeResult, error)

// CheckResult is one account as `accounts check --json` and POST
// /api/accounts/{name}/check report it.
type CheckResult struct {
	Name       string  `json:"name"`
	Status     string  `json:"status"` // an acctstate word
	Window     string  `json:"window"` // limited: 5h, 7d, ...
	Family     string  `json:"family"` // limited_model: opus, sonnet, ...
	Until      *string `json:"until"`  // RFC 3339, null when none or unknown
	Reason     string  `json:"reason"` // needs_login, key_refused, quarantined: why
	HTTPStatus *int    `json:"http_status"`
	Detail     string  `json:"detail"` // what the check did or could not do
	// Failed: the account could not be checked (no answer, or an answer
	// that says nothing about the account); Status is then what was
	// stored before.
	Failed bool `json:"-"`
}

// Checker probes accounts now and stores what it learns.
type Checker struct {
	Vault *vault.Vault
	OAuth *oauth.Client // refreshes an expired access token
	Probe Probe
	// AuditKey and By are for the audit row of a check that changed the
	// stored state.
	AuditKey []byte
	By       By
	Now      func() time.Time // nil = time.Now
}

// refreshMargin: an access token expiring sooner is refreshed first.
const refreshMargin = time.Minute

func (c *Checker) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}

// CheckAll checks every account, in priority order. An error is one that
// stops the whole check (the vault cannot be read); an account that could
// not be checked is a result with Failed set.
func (c *Checker) CheckAll(ctx context.Context) ([]CheckResult, error) {
	accts, err := store.ListAccounts(ctx, c.Vault.DB())
	if err != nil {
		return nil, err
	}
	out := make([]CheckResult, 0, len(accts))
	for _, a := range accts {
		r, err := c.check(ctx, a)
		if err != nil {
			return out, err
		}
		out = append(out, r)
	}
	return out, nil
}

// Check checks the named account; an unknown name is store.ErrNoAccount.
func (c *Checker) Check(ctx context.Context, name string) (CheckResult, error) {
	a, err := store.GetAccount(ctx, c.Vault.DB(), name)
	if err != nil {
		return CheckResult{}, err
	}
	return c.check(ctx, a)
}

func (c *Checker) check(ctx context.Context, a store.Account) (CheckResult, error) {
	if err := c.ready(); err != nil {
		return CheckResult{}, err
	}
	now := c.now()
	stored := acctstate.Of(a, now)
	if a.Paused {
		return resultOf(a.Name, stored, nil, "paused: not probed"), nil
	}
	if cloud.Is(a.Kind) {
		// The probe speaks Anthropic's API; a cloud account's state
		// comes from the requests it serves.
		return resultOf(a.Name, stored, nil, a.Kind+" account: not probed"), nil
	}
	secret, res, err := c.credential(ctx, a, now)
	if err != nil || secret == "" {
		return res, err
	}
	p, err := c.Probe(ctx, a.Kind, secret, now)
	if err != nil {
		r := resultOf(a.Name, stored, nil, "probe failed: "+err.Error())
		r.Failed = true
		return r, nil
	}
	return c.apply(ctx, a, p, now)
}

func (c *Checker) ready() error {
	if c.Vault == nil || c.Probe == nil {
		return errors.New("account check: no vault or probe")
	}
	return nil
}

// credential is the secret to probe with: the API key, or an access token
// refreshed first when it expires within refreshMargin (a setup token is
// never refreshed). When there is none to probe with, secret is "" and
// res says why.
func (c *Checker) credential(ctx context.Context, a store.Account, now time.Time) (secret string, res CheckResult, err error) {
	s, err := c.Vault.Secrets(ctx, a.ID)
	if err != nil {
		return "", res, fmt.Errorf("read credentials of %q: %w", a.Name, err)
	}
	if a.Kind == store.KindAPIKey {
		if s.APIKey == "" {
			return "", c.needsLogin(ctx, a, now, "no API key stored"), nil
		}
		return s.APIKey, res, nil
	}
	usable := s.AccessToken != "" && (s.ExpiresAt.IsZero() || now.Add(refreshMargin).Before(s.ExpiresAt))
	switch {
	case usable:
		return s.AccessToken, res, nil
	case s.RefreshToken == "" && s.AccessToken != "":
		return "", c.needsLogin(ctx, a, now, "setup token expired (it cannot be refreshed)"), nil
	case s.RefreshToken == "":
		return "", c.needsLogin(ctx, a, now, "no refresh token stored"), nil
	case a.Status == store.StatusNeedsLogin:
		// Its refresh token was refused already: no new try spends it.
		return "", resultOf(a.Name, acctstate.Of(a, now), nil, NeedsLoginHint(a.Name)), nil
	}
	return c.refresh(ctx, a, s, now, true)
}

// refreshTimeout bounds one token refresh of a check, which runs detached
// from the caller's context.
const refreshTimeout = 30 * time.Second

// refresh trades s's refresh token for new tokens, stored with a
// compare-and-swap on the vault version; when another process stored
// tokens first (a conflict, or invalid_grant after the version moved),
// theirs are read and used.
func (c *Checker) refresh(ctx context.Context, a store.Account, s vault.Secrets, now time.Time, retry bool) (string, CheckResult, error) {
	if c.OAuth == nil {
		return "", CheckResult{}, errors.New("account check: no token client")
	}
	// Detached from ctx (bounded by refreshTimeout): once the endpoint
	// has rotated the refresh token, a caller going away (an admin API
	// client hanging up, ^C) must not drop the answer before it is saved.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), refreshTimeout)
	tok, err := c.OAuth.Refresh(rctx, s.RefreshToken)
	cancel()
	switch {
	case errors.Is(err, oauth.ErrRefreshBlocked):
		st := acctstate.State{Word: acctstate.RefreshBlocked}
		return "", resultOf(a.Name, st, nil, "token refresh refused as blocked; the refresh token is kept: "+err.Error()), nil
	case errors.Is(err, oauth.ErrInvalidGrant):
		// Another process may have rotated the token first: if the vault
		// moved, its tokens are the live ones.
		s2, moved, rerr := c.moved(ctx, a, s)
		if rerr != nil {
			return "", CheckResult{}, rerr
		}
		if moved && retry {
			return c.useOrRefresh(ctx, a, s2, now)
		}
		return "", c.needsLogin(ctx, a, now, "refresh token rejected (invalid_grant)"), nil
	case err != nil:
		st := acctstate.Of(a, now)
		r := resultOf(a.Name, st, nil, "token refresh failed: "+err.Error())
		r.Failed = true
		return "", r, nil
	}
	next := vault.Secrets{AccessToken: tok.AccessToken, RefreshToken: tok.RefreshToken, ExpiresAt: tok.ExpiresAt}
	if next.RefreshToken == "" {
		next.RefreshToken = s.RefreshToken // not rotated
	}
	// Saved before anything else: the old refresh token is dead now.
	_, err = c.Vault.SwapTokens(context.WithoutCancel(ctx), a.ID, s.Version, next)
	if errors.Is(err, vault.ErrConflict) {
		s2, rerr := c.Vault.Secrets(ctx, a.ID)
		if rerr != nil {
			return "", CheckResult{}, fmt.Errorf("read credentials of %q: %w", a.Name, rerr)
		}
		if !retry {
			return "", CheckResult{}, fmt.Errorf("refresh %q: tokens changed concurrently", a.Name)
		}
		return c.useOrRefresh(ctx, a, s2, now)
	}
	if err != nil {
		return "", CheckResult{}, fmt.Errorf("store the rotated tokens of %q: %w", a.Name, err)
	}
	return next.AccessToken, CheckResult{}, nil
}

// moved re-reads the account's secrets and reports whether another
// writer stored new ones since s.
func (c *Checker) moved(ctx context.Context, a store.Account, s vault.Secrets) (vault.Secrets, bool, error) {
	s2, err := c.Vault.Secrets(ctx, a.ID)
	if err != nil {
		return s2, false, fmt.Errorf("read credentials of %q: %w", a.Name, err)
	}
	return s2, s2.Version != s.Version, nil
}

// useOrRefresh uses tokens another process stored, refreshing them
// (once) when they too are about to expire.
func (c *Checker) useOrRefresh(ctx context.Context, a store.Account, s vault.Secrets, now time.Time) (string, CheckResult, error) {
	if s.AccessToken != "" && (s.ExpiresAt.IsZero() || now.Add(refreshMargin).Before(s.ExpiresAt)) {
		return s.AccessToken, CheckResult{}, nil
	}
	return c.refresh(ctx, a, s, now, false)
}

// needsLogin stores and reports an account without usable credentials.
func (c *Checker) needsLogin(ctx context.Context, a store.Account, now time.Time, reason string) CheckResult {
	st := acctstate.State{Word: acctstate.NeedsLogin, Reason: reason}
	r := resultOf(a.Name, st, nil, NeedsLoginHint(a.Name))
	if a.Status == store.StatusNeedsLogin && a.StatusReason == reason {
		return r
	}
	if err := store.SetStatus(ctx, c.Vault.DB(), a.ID, store.StatusNeedsLogin, reason, now); err != nil {
		r.Detail, r.Failed = "store needs_login: "+err.Error(), true
		return r
	}
	c.audit(ctx, a.Name, now, "needs_login: "+reason, &r)
	return r
}

// apply stores what the probe learnt and reports it.
func (c *Checker) apply(ctx context.Context, a store.Account, p ProbeResult, now time.Time) (CheckResult, error) {
	status := p.Status
	if !learnt(p) {
		r := resultOf(a.Name, acctstate.Of(a, now), &status, "the probe's answer says nothing about the account: "+p.Detail)
		r.Failed = true
		return r, nil
	}
	st := p.State
	switch st.Word {
	case acctstate.OK, acctstate.Limited, acctstate.LimitedModel:
		return c.serving(ctx, a, p, now)
	case acctstate.KeyRefused, acctstate.Quarantined, acctstate.NeedsLogin:
		r := resultOf(a.Name, st, &status, p.Detail)
		switch st.Word {
		case acctstate.NeedsLogin:
			r.Detail = NeedsLoginHint(a.Name)
		case acctstate.KeyRefused:
			r.Detail = joinDetail(r.Detail, "run `claudeflare accounts login "+a.Name+" --api-key-stdin` with a working key")
		}
		if a.Status == st.Word && a.StatusReason == st.Reason {
			return r, nil
		}
		if err := store.SetStatus(ctx, c.Vault.DB(), a.ID, st.Word, st.Reason, now); err != nil {
			return r, fmt.Errorf("store the state of %q: %w", a.Name, err)
		}
		c.audit(ctx, a.Name, now, st.String(), &r)
		return r, nil
	}
	return resultOf(a.Name, st, &status, p.Detail), nil
}

// learnt reports whether a probe's answer says something about the
// account: a 529, a 5xx or a request-specific refusal does not.
func learnt(p ProbeResult) bool {
	switch p.State.Word {
	case "":
		return false
	case acctstate.OK:
		return p.Status > 0 && p.Status < 400
	}
	return true
}

// serving handles an account upstream accepts (ok, or limited): a stored
// block the answer contradicts is cleared as `accounts unblock` clears
// it (so a daemon drops its copy), then the answer's rate state is
// stored. Model limits of other families than the probe's survive: a
// probe of one model cannot see them.
func (c *Checker) serving(ctx context.Context, a store.Account, p ProbeResult, now time.Time) (CheckResult, error) {
	status := p.Status
	db := c.Vault.DB()
	kept := acctstate.ParseModelLimits(a.ModelLimits)
	var cleared string
	if wrong(a, p.State, now) {
		before, err := store.Unblock(ctx, db, a.Name, now)
		if err != nil {
			return CheckResult{}, fmt.Errorf("unblock %q: %w", a.Name, err)
		}
		cleared = Blocks(before, now)
	}
	rate := p.Rate
	models := acctstate.ParseModelLimits(rate.ModelLimits)
	for fam, until := range kept {
		if _, ok := models[fam]; !ok && until > store.ToMS(now) && fam != probeFamily {
			if models == nil {
				models = acctstate.ModelLimits{}
			}
			models[fam] = until
		}
	}
	rate.ModelLimits = models.String()
	if err := store.SaveRateState(ctx, db, a.ID, rate); err != nil {
		return CheckResult{}, fmt.Errorf("store the rate state of %q: %w", a.Name, err)
	}
	if a.Status == store.StatusNeedsLogin {
		// Its stored token works after all.
		if err := store.SetStatus(ctx, db, a.ID, store.StatusOK, "", now); err != nil {
			return CheckResult{}, fmt.Errorf("store the state of %q: %w", a.Name, err)
		}
		cleared = joinDetail(cleared, "needs_login")
	}
	st := p.State
	if st.Word == acctstate.OK {
		if fam, until := soonestOf(models, now); fam != "" {
			st.Word, st.Family, st.Until = acctstate.LimitedModel, fam, until
		}
	}
	r := resultOf(a.Name, st, &status, p.Detail)
	if cleared != "" {
		c.audit(ctx, a.Name, now, "upstream accepts it: cleared "+cleared, &r)
		r.Detail = joinDetail("cleared "+cleared, r.Detail)
	}
	return r, nil
}

// probeFamily is the model family of the cheap probe (claude-haiku-4-5).
const probeFamily = "haiku"

// wrong reports whether the stored row carries a block that an answer in
// state st (the account accepted) contradicts: a refused status, or a
// whole-account limit when st is not one.
func wrong(a store.Account, st acctstate.State, now time.Time) bool {
	switch a.Status {
	case store.StatusQuarantined, store.StatusKeyRefused:
		return true
	}
	nowMS := store.ToMS(now)
	return st.Word != acctstate.Limited && a.RateLimitedUntil > nowMS
}

func soonestOf(m acctstate.ModelLimits, now time.Time) (string, time.Time) {
	var fam string
	var until time.Time
	for f, ms := range m {
		t := store.FromMS(ms)
		if !t.After(now) {
			continue
		}
		if fam == "" || t.Before(until) || (t.Equal(until) && f < fam) {
			fam, until = f, t
		}
	}
	return fam, until
}

// joinDetail joins the non-empty parts with "; ".
func joinDetail(a, b string) string {
	switch {
	case a == "":
		return b
	case b == "":
		return a
	}
	return a + "; " + b
}

// audit writes the row of a check that changed the stored state; a
// failed write is said in the result (the change stays).
func (c *Checker) audit(ctx context.Context, name string, now time.Time, what string, r *CheckResult) {
	if c.AuditKey == nil {
		return
	}
	if err := record(ctx, c.Vault.DB(), c.AuditKey, c.By, now, ActionChecked, name, "checked: "+what); err != nil {
		r.Detail = joinDetail(r.Detail, "audit log not written: "+err.Error())
		r.Failed = true
	}
}

// resultOf is a state as a CheckResult.
func resultOf(name string, st acctstate.State, httpStatus *int, detail string) CheckResult {
	r := CheckResult{Name: name, Status: st.Word, Window: st.Window, Family: st.Family, Reason: st.Reason,
		HTTPStatus: httpStatus, Detail: strings.TrimSpace(detail)}
	if !st.Until.IsZero() {
		s := st.Until.UTC().Format(time.RFC3339)
		r.Until = &s
	}
	return r
}
