package proxy

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/claudeflare/claudeflare/internal/acctstate"
	"github.com/claudeflare/claudeflare/internal/fakeapi"
	"github.com/claudeflare/claudeflare/store"
)

// probeFake is a fake API with an OAuth account "o" and an API key
// account "k", on a clock the test sets.
type probeFake struct {
	api         *fakeapi.Server
	up          *url.URL
	access, key string
	now         time.Time
}

func newProbeFake(t *testing.T) *probeFake {
	t.Helper()
	api := fakeapi.New()
	t.Cleanup(api.Close)
	f := &probeFake{api: api, now: time.Now().UTC().Truncate(time.Second)}
	api.SetNow(func() time.Time { return f.now })
	api.NewOAuthAccount("o")
	f.access = api.NewAccessToken("o")
	f.key = api.NewAPIKey("k")
	f.up, _ = url.Parse(api.URL)
	return f
}

func (f *probeFake) probe(t *testing.T, kind, secret string) (ProbeResult, error) {
	t.Helper()
	return Probe(context.Background(), f.api.Client(), f.up, kind, secret, f.now)
}

func errBody(typ, msg string) string {
	b, _ := json.Marshal(map[string]any{"type": "error", "error": map[string]string{"type": typ, "message": msg}})
	return string(b)
}

// Probe sends the cheap request of wire.md with the account's credential
// and reads the answer as the proxy does, for every state an answer can
// give; the credential is never in what it reports.
func TestProbe(t *testing.T) {
	f := newProbeFake(t)
	reset := f.now.Add(3 * time.Hour)
	resetS := strconv.FormatInt(reset.Unix(), 10)
	const u = fakeapi.UnifiedPrefix
	for _, tc := range []struct {
		name   string
		kind   string
		fault  *fakeapi.Fault
		status int
		state  string // acctstate.State.String()
		detail string
		check  func(t *testing.T, r ProbeResult)
	}{
		{name: "oauth ok", kind: store.KindOAuth, status: 200, state: "ok",
			check: func(t *testing.T, r ProbeResult) {
				if r.Rate.Util5h != 0.02 || r.Rate.RLStatus != "allowed" || r.Rate.RateLimitedUntil != 0 {
					t.Fatalf("rate %+v", r.Rate)
				}
			}},
		{name: "api key ok", kind: store.KindAPIKey, status: 200, state: "ok"},
		{name: "api key refused", kind: store.KindAPIKey, status: 401,
			fault: &fakeapi.Fault{Kind: fakeapi.FaultStatus, Status: 401, Body: errBody("authentication_error", "invalid x-api-key")},
			state: "key_refused: API key refused (401): invalid x-api-key", detail: "invalid x-api-key"},
		{name: "oauth token refused", kind: store.KindOAuth, status: 401,
			fault: &fakeapi.Fault{Kind: fakeapi.FaultStatus, Status: 401, Body: errBody("authentication_error", "OAuth token has expired.")},
			state: "needs_login: access token refused (401): OAuth token has expired."},
		{name: "limited 5h", kind: store.KindOAuth, status: 429,
			fault: &fakeapi.Fault{Kind: fakeapi.FaultStatus, Status: 429, Headers: fakeapi.RateLimitHeaders("rejected", reset)},
			state: "limited (5h) until " + reset.Format(time.RFC3339),
			check: func(t *testing.T, r ProbeResult) {
				// The saved reason names the window (five_hour claim).
				if r.Rate.RateLimitedUntil != store.ToMS(reset) || r.Rate.RLStatus != "5h rejected" {
					t.Fatalf("rate %+v", r.Rate)
				}
			}},
		{name: "model limited", kind: store.KindOAuth, status: 429,
			fault: &fakeapi.Fault{Kind: fakeapi.FaultStatus, Status: 429, Headers: map[string]string{
				u + "status": "rejected", u + "reset": resetS, u + "representative-claim": "seven_day_opus"}},
			state: "limited_model (opus) until " + reset.Format(time.RFC3339),
			check: func(t *testing.T, r ProbeResult) {
				if want := (acctstate.ModelLimits{"opus": store.ToMS(reset)}).String(); r.Rate.ModelLimits != want || r.Rate.RateLimitedUntil != 0 {
					t.Fatalf("rate %+v, want model limits %s", r.Rate, want)
				}
			}},
		{name: "overage served", kind: store.KindOAuth, status: 200,
			fault: &fakeapi.Fault{Kind: fakeapi.FaultStatus, Status: 200, Body: `{"type":"message"}`, Headers: map[string]string{
				u + "status": "rejected", u + "reset": resetS, u + "overage-status": "allowed"}},
			state: "ok",
			check: func(t *testing.T, r ProbeResult) {
				if !r.State.Overage.Equal(reset) || r.Rate.OverageUntil != store.ToMS(reset) || r.Rate.RateLimitedUntil != 0 {
					t.Fatalf("state %+v rate %+v", r.State, r.Rate)
				}
			}},
		{name: "quarantined", kind: store.KindOAuth, status: 403,
			fault: &fakeapi.Fault{Kind: fakeapi.FaultStatus, Status: 403,
				Body: errBody("permission_error", "OAuth authentication is currently not allowed for this organization.")},
			state:  "quarantined: OAuth authentication is currently not allowed for this organization.",
			detail: "OAuth authentication is currently not allowed for this organization."},
		{name: "credit balance", kind: store.KindAPIKey, status: 400,
			fault: &fakeapi.Fault{Kind: fakeapi.FaultStatus, Status: 400,
				Body: errBody("invalid_request_error", "Your credit balance is too low to access the Anthropic API.")},
			state: "quarantined: Your credit balance is too low to access the Anthropic API."},
		{name: "overloaded says nothing", kind: store.KindOAuth, status: 529,
			fault: &fakeapi.Fault{Kind: fakeapi.FaultStatus, Status: 529}, state: ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f.api.ClearFaults()
			if tc.fault != nil {
				f.api.Inject(*tc.fault)
			}
			secret := f.access
			if tc.kind == store.KindAPIKey {
				secret = f.key
			}
			r, err := f.probe(t, tc.kind, secret)
			if err != nil {
				t.Fatal(err)
			}
			got := r.State.String()
			if r.State.Word == "" {
				got = ""
			}
			if r.Status != tc.status || got != tc.state {
				t.Fatalf("status %d state %q, want %d %q (detail %q)", r.Status, got, tc.status, tc.state, r.Detail)
			}
			if tc.detail != "" && r.Detail != tc.detail {
				t.Fatalf("detail %q, want %q", r.Detail, tc.detail)
			}
			if tc.check != nil {
				tc.check(t, r)
			}
		})
	}
	// What went out: the probe request of wire.md, with the credential.
	reqs := f.api.Requests()
	last := reqs[len(reqs)-1]
	if last.Path != fakeapi.MessagesPath || string(last.Body) != ProbeBody ||
		last.Header.Get("Anthropic-Version") == "" || !strings.Contains(last.Header.Get("Anthropic-Beta"), OAuthBeta) {
		t.Fatalf("probe request %s %s %v", last.Path, last.Body, last.Header)
	}
}

// An upstream message that quotes the credential, and a transport error,
// never carry it into Detail or the error.
func TestProbeNeverShowsTheSecret(t *testing.T) {
	f := newProbeFake(t)
	f.api.Inject(fakeapi.Fault{Kind: fakeapi.FaultStatus, Status: 401,
		Body: errBody("authentication_error", "invalid x-api-key "+f.key)})
	r, err := f.probe(t, store.KindAPIKey, f.key)
	if err != nil || r.State.Word != acctstate.KeyRefused {
		t.Fatalf("%+v %v", r, err)
	}
	if strings.Contains(r.Detail, f.key) || strings.Contains(r.State.Reason, f.key) {
		t.Fatalf("secret in %q / %q", r.Detail, r.State.Reason)
	}

	dead, _ := url.Parse("http://127.0.0.1:1/" + f.key)
	r, err = Probe(context.Background(), &http.Client{}, dead, store.KindAPIKey, f.key, f.now)
	if err == nil || r.Status != 0 || r.Detail == "" {
		t.Fatalf("%+v %v", r, err)
	}
	if strings.Contains(err.Error(), f.key) || strings.Contains(r.Detail, f.key) {
		t.Fatalf("secret in %v / %q", err, r.Detail)
	}
	if _, err := Probe(context.Background(), nil, f.up, "password", "x", f.now); err == nil {
		t.Fatal("unknown kind accepted")
	}
}
