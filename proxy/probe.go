package proxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/claudeflare/claudeflare/internal/acctstate"
	"github.com/claudeflare/claudeflare/store"
)

// ProbeBody is the cheap request a probe sends: one token of the smallest
// model.
const ProbeBody = `{"model":"claude-haiku-4-5","max_tokens":1,"messages":[{"role":"user","content":"."}]}`

// probeVersion is the anthropic-version a probe sends.
const probeVersion = "2023-06-01"

// ProbeResult is what one probe of an account found.
type ProbeResult struct {
	Status int             // upstream status, 0 when no answer
	State  acctstate.State // what the answer says of the account (Word "" when it says nothing: 5xx, 529, no answer)
	Rate   store.RateState // rate-limit state to save (limits, utilization, model limits, overage)
	Detail string          // one line: upstream error message (sanitised, never a credential) or transport error
	// Verdict is how classify read the answer.
	Verdict Verdict
}

// Probe sends the cheap probe request (ProbeBody) to upstream's
// /v1/messages with the account's credential (kind store.KindOAuth or
// store.KindAPIKey; secret the access token or API key), reads the answer
// the way the proxy reads every answer (classify), and says what it
// means for the account. A probe that gets no answer returns the
// transport error too (Status 0, Detail the error). The secret never
// appears in Detail or the error. Probe never refreshes a token: a 401 to
// an OAuth access token reads as needs_login.
func Probe(ctx context.Context, client *http.Client, upstream *url.URL, kind, secret string, now time.Time) (ProbeResult, error) {
	return probe(ctx, client, upstream, kind, secret, ProbeBody, now)
}

// probeModels are the models a re-check of a model-scoped limit asks for
// one token of: a probe of another family says nothing of that one.
var probeModels = map[string]string{
	"opus":   "claude-opus-4-1",
	"sonnet": "claude-sonnet-4-5",
	"haiku":  "claude-haiku-4-5",
}

// probeBodyFor is the probe request for model family fam ("" or unknown:
// ProbeBody).
func probeBodyFor(fam string) string {
	m, ok := probeModels[fam]
	if !ok {
		return ProbeBody
	}
	return strings.Replace(ProbeBody, `"claude-haiku-4-5"`, strconv.Quote(m), 1)
}

// probe is Probe with the request body to send.
func probe(ctx context.Context, client *http.Client, upstream *url.URL, kind, secret, body string, now time.Time) (ProbeResult, error) {
	if upstream == nil || upstream.Scheme == "" || upstream.Host == "" {
		return ProbeResult{}, errors.New("probe: no upstream url")
	}
	if kind != store.KindOAuth && kind != store.KindAPIKey {
		return ProbeResult{}, fmt.Errorf("probe: unknown account kind %q", kind)
	}
	if secret == "" {
		return ProbeResult{}, errors.New("probe: no credential")
	}
	if client == nil {
		client = http.DefaultClient
	}
	sc := newScrubber([]string{secret})
	u := *upstream
	u.Path = strings.TrimRight(upstream.Path, "/") + "/v1/messages"
	u.RawPath, u.RawQuery, u.Fragment = "", "", ""
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.String(), strings.NewReader(body))
	if err != nil {
		return ProbeResult{}, fmt.Errorf("probe: build request: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Anthropic-Version", probeVersion)
	setCredentials(req.Header, kind, secret)
	req.ContentLength = int64(len(body))
	resp, err := client.Do(req)
	if err != nil {
		if ue, ok := err.(*url.Error); ok {
			ue.URL = u.Redacted()
		}
		msg := cleanMessage(string(sc.bytes([]byte(err.Error()))))
		return ProbeResult{Detail: msg, Verdict: classify(answer{err: err}, now)}, fmt.Errorf("probe: %s", msg)
	}
	defer resp.Body.Close()
	rbody, _ := io.ReadAll(io.LimitReader(resp.Body, failureBodyMax))
	ans := answer{status: resp.StatusCode, header: resp.Header, apiKey: kind == store.KindAPIKey}
	if hasMessage(resp.StatusCode) || resp.StatusCode >= 400 {
		if _, msg := errorMessage(rbody); msg != "" {
			ans.message = string(sc.bytes([]byte(msg)))
		} else if resp.StatusCode >= 400 {
			ans.message = string(sc.bytes(bytes.TrimSpace(rbody)))
		}
	}
	v := classify(ans, now)
	return probeResult(resp.StatusCode, kind, v, now), nil
}

// probeResult says what a probe's verdict means for the account.
func probeResult(status int, kind string, v Verdict, now time.Time) ProbeResult {
	res := ProbeResult{Status: status, Detail: v.Message, Verdict: v}
	var ls LimitState
	ls.Util5h, ls.Util7d = -1, -1
	p := LimitPolicy{CooldownInitial: 30 * time.Second, CooldownMax: 5 * time.Minute}
	if v.Learn && v.Class != ClassAccount && v.Class != ClassQuarantine {
		ls.Apply(p, v, now)
	}
	res.Rate = limitToStore(ls)
	st := acctstate.State{Word: acctstate.OK}
	switch v.Class {
	case ClassOK, ClassRequest, ClassScoped, ClassLimited, ClassModelLimited:
		st = ls.state(now)
	case ClassQuarantine:
		st = acctstate.State{Word: acctstate.Quarantined, Reason: v.Message}
	case ClassAccount, ClassRefresh:
		st = acctstate.State{Word: acctstate.NeedsLogin, Reason: "access token refused (401)"}
		if kind == store.KindAPIKey {
			st = acctstate.State{Word: acctstate.KeyRefused, Reason: "API key refused (401)"}
		}
		if v.Message != "" {
			st.Reason += ": " + v.Message
		}
	case ClassTransient:
		st = acctstate.State{}
	}
	res.State = st
	return res
}
