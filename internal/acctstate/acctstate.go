// Package acctstate names an account's state with one set of words,
// used by `accounts list`, `accounts check`, the admin API, metrics and
// the daemon's log lines alike.
//
// The words, from the most to the least lasting:
//
//	needs_login     its login is gone: `accounts login NAME` brings it back
//	key_refused     upstream refused its API key
//	quarantined     upstream refused the account itself (Reason says why)
//	paused          an operator took the account out (`accounts pause`)
//	refresh_blocked the token endpoint refused to refresh it as blocked
//	                (403/429); its login is kept and retried with backoff
//	limited         a limit of the whole account (Window: 5h, 7d, ...) until Until
//	limited_model   a limit of one model family (Family: opus, sonnet) until Until;
//	                the account still serves the other models
//	ok              usable
//
// Overage (serving on paid extra usage) is not a state of its own: an
// account that upstream serves on extra usage is ok with Overage set.
package acctstate

import (
	"encoding/json"
	"sort"
	"strings"
	"time"

	"github.com/claudeflare/claudeflare/store"
)

// The state words.
const (
	OK             = "ok"
	Paused         = "paused"
	NeedsLogin     = store.StatusNeedsLogin
	KeyRefused     = store.StatusKeyRefused
	Quarantined    = store.StatusQuarantined
	RefreshBlocked = "refresh_blocked"
	Limited        = "limited"
	LimitedModel   = "limited_model"
)

// Words lists every state word, for docs, completion and metrics labels.
var Words = []string{OK, Paused, NeedsLogin, KeyRefused, Quarantined, RefreshBlocked, Limited, LimitedModel}

// State is an account's state at one moment.
type State struct {
	Word   string    // one of the words above
	Reason string    // needs_login, key_refused, quarantined: why
	Window string    // limited: the limit hit (5h, 7d, rate_limited, cooldown, ...)
	Family string    // limited_model: the model family (opus, sonnet, ...)
	Until  time.Time // limited, limited_model, refresh_blocked: when it ends (zero: unknown)
	// Models: the model-scoped limits in force (family -> until), also
	// when the state is another word (e.g. limited_model for opus while
	// the account is ok for sonnet).
	Models map[string]time.Time
	// Overage: upstream serves the account on extra usage until then.
	Overage time.Time
}

// String is the state as one line for people: "limited (7d) until 2026-...".
func (s State) String() string {
	var b strings.Builder
	b.WriteString(s.Word)
	switch {
	case s.Window != "":
		b.WriteString(" (" + s.Window + ")")
	case s.Family != "":
		b.WriteString(" (" + s.Family + ")")
	}
	if !s.Until.IsZero() {
		b.WriteString(" until " + s.Until.UTC().Format(time.RFC3339))
	}
	if s.Reason != "" {
		b.WriteString(": " + s.Reason)
	}
	return b.String()
}

// Usable reports whether the account may serve some request now.
func (s State) Usable() bool { return s.Word == OK || s.Word == LimitedModel }

// Of is the state of the account described by its vault row at now.
func Of(a store.Account, now time.Time) State {
	nowMS := store.ToMS(now)
	st := State{Word: OK, Models: activeModels(ParseModelLimits(a.ModelLimits), now)}
	if a.OverageUntil > nowMS {
		st.Overage = store.FromMS(a.OverageUntil)
	}
	switch {
	case a.Status == store.StatusNeedsLogin || a.Status == store.StatusKeyRefused || a.Status == store.StatusQuarantined:
		st.Word, st.Reason = a.Status, a.StatusReason
	case a.Paused:
		st.Word = Paused
	case a.RateLimitedUntil > nowMS:
		st.Word, st.Until = Limited, store.FromMS(a.RateLimitedUntil)
		st.Window = WindowOf(a.RLStatus)
	case len(st.Models) > 0:
		st.Word = LimitedModel
		st.Family, st.Until = soonest(st.Models)
	}
	return st
}

// WindowOf names the window of a persisted limit reason (the hard
// unified status, "5h rejected", "7d rejected", or the proxy's own
// reasons): "5h", "7d", or the reason itself.
func WindowOf(reason string) string {
	if w, _, ok := strings.Cut(reason, " "); ok && (w == "5h" || w == "7d") {
		return w
	}
	if reason == "" {
		return "rate_limited"
	}
	return reason
}

// ModelLimits is the model_limits column: family -> until (unix ms).
type ModelLimits map[string]int64

// ParseModelLimits reads the model_limits column; a malformed value
// reads as none (the limits are an optimisation, never a reason to fail).
func ParseModelLimits(s string) ModelLimits {
	if s == "" {
		return nil
	}
	var m ModelLimits
	if json.Unmarshal([]byte(s), &m) != nil {
		return nil
	}
	return m
}

// String is the model_limits column for m: "" when empty, else JSON
// with sorted keys.
func (m ModelLimits) String() string {
	if len(m) == 0 {
		return ""
	}
	b, _ := json.Marshal(map[string]int64(m)) // encoding/json sorts map keys
	return string(b)
}

func activeModels(m ModelLimits, now time.Time) map[string]time.Time {
	var out map[string]time.Time
	for fam, ms := range m {
		if t := store.FromMS(ms); t.After(now) {
			if out == nil {
				out = map[string]time.Time{}
			}
			out[fam] = t
		}
	}
	return out
}

func soonest(m map[string]time.Time) (family string, until time.Time) {
	fams := make([]string, 0, len(m))
	for f := range m {
		fams = append(fams, f)
	}
	sort.Strings(fams)
	for _, f := range fams {
		if until.IsZero() || m[f].Before(until) {
			family, until = f, m[f]
		}
	}
	return family, until
}

// Family is the model family a model id belongs to, for model-scoped
// limits: "opus", "sonnet", "haiku", or "" for another model.
func Family(model string) string {
	m := strings.ToLower(model)
	for _, f := range []string{"opus", "sonnet", "haiku"} {
		if strings.Contains(m, f) {
			return f
		}
	}
	return ""
}

// ClaimFamily is the model family a unified representative claim limits
// ("seven_day_opus" -> "opus"), or "" for a claim on the whole account
// ("five_hour", "seven_day").
func ClaimFamily(claim string) string {
	c := strings.ToLower(strings.TrimSpace(claim))
	for _, f := range []string{"opus", "sonnet", "haiku"} {
		if strings.HasSuffix(c, "_"+f) {
			return f
		}
	}
	return ""
}
