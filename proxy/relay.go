package proxy

// Relay keys (issue 20, the team gateway): a client key marked relay
// (`apikey create NAME --relay`) travels in x-claudeflare-key, and its
// requests go upstream with the client's own credentials, the
// Authorization: Bearer and/or x-api-key it sent (a developer's Claude
// login token or API key, as Claude Code sends them), never with a pool
// account's. The access guard decides whether a request's key is a relay
// key; the daemon hands that to the proxy (Options.Relay).
//
// A relay request picks no account, refreshes no token, fails over to
// nothing and records no rate-limit state against the pool: it is one
// send with the client's credentials, its answer passed through as it
// comes (a 429 or a 529 included). Its log row names the account
// RelayAccount and the client key as the client; capture, redaction,
// usage, cost, budgets and limits apply as for pooled traffic. The
// client's credentials are never stored: captured headers hold
// [REDACTED] (credentialHeaders), and an error answer that quotes them
// is scrubbed like one that quotes an account's token. Without any
// credential the request is refused (401, x-should-retry: false), never
// served from the pool. anthropic-beta goes up as the client sent it:
// Claude Code adds oauth-2025-04-20 itself with its login token.

import (
	"net/http"
	"strings"

	"github.com/claudeflare/claudeflare/internal/apierr"
)

// RelayAccount is the account column of a relay request's log row.
const RelayAccount = "relay"

// relayCredentials returns the client's own credential headers to send
// upstream (Authorization, X-Api-Key, each as sent), leaving out one that
// is a claudeflare client key (the relay key itself or any other: it
// must never reach Anthropic), and the secrets they carry, for the
// scrubber. ok is false when none is left.
func relayCredentials(in http.Header) (out http.Header, secrets []string, ok bool) {
	ck := strings.TrimSpace(in.Get("X-Claudeflare-Key"))
	own := func(tok string) bool { return tok != "" && tok != ck && !strings.HasPrefix(tok, prefixClient) }
	out = http.Header{}
	if v := in.Values("Authorization"); len(v) == 1 {
		scheme, tok, found := strings.Cut(strings.TrimSpace(v[0]), " ")
		tok = strings.TrimSpace(tok)
		if found && own(tok) && strings.EqualFold(scheme, "Bearer") {
			out["Authorization"] = []string{v[0]}
			secrets = append(secrets, tok)
		}
	}
	if v := in.Values("X-Api-Key"); len(v) == 1 {
		if tok := strings.TrimSpace(v[0]); own(tok) {
			out["X-Api-Key"] = []string{v[0]}
			secrets = append(secrets, tok)
		}
	}
	return out, secrets, len(out) > 0
}

// serveRelay forwards a relay key's request once, with the client's own
// credentials.
func (x *exchange) serveRelay() {
	x.row.Account = RelayAccount
	creds, secrets, ok := relayCredentials(x.r.Header)
	if !ok {
		x.row.Error = "relay key without the client's own credentials"
		x.reply(apierr.Reply{Status: http.StatusUnauthorized, Type: apierr.Authentication, Retry: apierr.RetryNo,
			Message: "claudeflare: this client key is a relay key: send your own Claude credentials with it " +
				"(Authorization: Bearer, as Claude Code sends your login or ANTHROPIC_AUTH_TOKEN, or x-api-key: ANTHROPIC_API_KEY); " +
				"it is never served from the gateway's accounts"})
		return
	}
	x.relayCreds = creds
	x.sent = append(x.sent[:0], secrets...)
	x.row.Attempts = 1
	x.row.AccountsTried = []string{RelayAccount}
	resp, err := x.send(nil, "")
	if err != nil {
		if x.r.Context().Err() != nil {
			x.clientGone()
			return
		}
		msg := string(x.scrubber(nil).bytes([]byte(err.Error())))
		x.s.log.Warn("upstream request failed", "request_id", x.id, "account", RelayAccount, "err", msg)
		x.row.Error = RelayAccount + ": " + msg
		x.reply(apierr.Reply{Status: http.StatusBadGateway, Type: apierr.API, Message: "upstream unreachable: " + msg})
		return
	}
	if resp.StatusCode == http.StatusUnauthorized {
		// The developer's own credential was refused: no retry of the
		// client's can cure it (Claude Code would retry for minutes).
		resp.Header.Set("X-Should-Retry", "false")
	}
	x.stream(nil, resp)
}
