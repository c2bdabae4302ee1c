package daemon

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/claudeflare/claudeflare/access"
	"github.com/claudeflare/claudeflare/accounts"
	"github.com/claudeflare/claudeflare/config"
	"github.com/claudeflare/claudeflare/oauth"
	"github.com/claudeflare/claudeflare/proxy"
	"github.com/claudeflare/claudeflare/vault"
)

// probeTimeout bounds one account probe (a one-token request).
const probeTimeout = 60 * time.Second

// AccountProbe is proxy.Probe against cfg's upstream through client, in
// the shape accounts.Checker takes; `accounts check` and the admin API's
// check route use it alike.
func AccountProbe(cfg *config.Config, client *http.Client) (accounts.Probe, error) {
	u, err := url.Parse(cfg.UpstreamURL)
	if err != nil || u.Scheme == "" || u.Host == "" {
		return nil, fmt.Errorf("upstream_url: not an absolute URL")
	}
	return func(ctx context.Context, kind, secret string, now time.Time) (accounts.ProbeResult, error) {
		ctx, cancel := context.WithTimeout(ctx, probeTimeout)
		defer cancel()
		r, err := proxy.Probe(ctx, client, u, kind, secret, now)
		return accounts.ProbeResult{Status: r.Status, State: r.State, Rate: r.Rate, Detail: r.Detail}, err
	}, nil
}

// accountTools are what the guard's login and check routes need: the
// vault, a token client like the proxy's, and the probe, all through the
// daemon's upstream transport.
func accountTools(cfg *config.Config, v *vault.Vault, transport http.RoundTripper, version string) (access.AccountTools, error) {
	client := &http.Client{Transport: transport}
	probe, err := AccountProbe(cfg, client)
	if err != nil {
		return access.AccountTools{}, err
	}
	return access.AccountTools{
		Vault: v,
		OAuth: &oauth.Client{
			TokenURL: cfg.OAuthTokenURL, ClientID: cfg.ClientID, APIBase: cfg.UpstreamURL,
			HTTP: &http.Client{Transport: transport, Timeout: probeTimeout}, UserAgent: oauth.UserAgent(version),
		},
		Probe: probe,
	}, nil
}
