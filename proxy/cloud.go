package proxy

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"net/http"
	"sync"

	"github.com/claudeflare/claudeflare/cloud"
	"github.com/claudeflare/claudeflare/config"
)

// Cloud accounts (issue 21): an account of kind bedrock or vertex is sent
// the request through package cloud, which speaks the provider's API and
// gives back an answer in Anthropic's shape, so that everything after the
// send (classify, failover, the relay and its usage tap, the log) treats
// it as any other account's. Its credential (tokens.get) is the sealed
// credential document; its settings are the row's upstream column.
//
// A cloud account serves /v1/messages (and, Bedrock only,
// /v1/messages/count_tokens); any other request, and an upload too big to
// buffer, moves on to another account (cloud.ErrUnsupported, a
// connection-class failure that does not rest the account).

// cloudClients caches one cloud.Client per account, made again when the
// account's settings or credentials change (a Vertex client holds the
// account's cached access token).
type cloudClients struct {
	mu     sync.Mutex
	m      map[int64]cloudEntry
	models *cloud.Models // made at the first use
}

type cloudEntry struct {
	key [32]byte // of the settings and the credential document
	c   *cloud.Client
}

// client returns a's client for settings and credential document key;
// the model tables are the built-in ones with cfg's [cloud] over them
// (read once: a restart applies a change).
func (cc *cloudClients) client(id int64, kind, settings, key string, hc *http.Client, cfg *config.Config) (*cloud.Client, error) {
	h := sha256.Sum256([]byte(kind + "\x00" + settings + "\x00" + key))
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if cc.models == nil {
		cc.models = cloud.NewModels(cfg.Cloud.BedrockModels, cfg.Cloud.VertexModels)
	}
	if e, ok := cc.m[id]; ok && e.key == h {
		return e.c, nil
	}
	st, err := cloud.ParseSettings(settings)
	if err != nil {
		return nil, err
	}
	c, err := cloud.New(kind, st, key, hc, cc.models)
	if err != nil {
		return nil, fmt.Errorf("%s account settings: %w", kind, err)
	}
	if cc.m == nil {
		cc.m = map[int64]cloudEntry{}
	}
	cc.m[id] = cloudEntry{key: h, c: c}
	return c, nil
}

// serves reports whether a can serve the request: any Anthropic account;
// a cloud account only /v1/messages (Bedrock count_tokens too), with a
// body at hand. A request no account serves is answered 503 naming why.
func (x *exchange) serves(a *account) bool {
	if !cloud.Is(a.Kind) {
		return true
	}
	if x.upload == nil && (x.route == cloud.MessagesRoute || (a.Kind == cloud.Bedrock && x.route == cloud.CountTokensRoute)) {
		return true
	}
	if x.row.Error == "" {
		x.row.Error = "cloud accounts (" + a.Name + ") serve /v1/messages only"
	}
	return false
}

// sendCloud is send for a cloud account: secret is its credential
// document. The provider's error code, if any, is kept for verdict.
func (x *exchange) sendCloud(a *account, secret string) (*http.Response, error) {
	x.cloudCode = ""
	if x.upload != nil {
		return nil, fmt.Errorf("%w: a body too big to buffer", cloud.ErrUnsupported)
	}
	x.s.pool.mu.Lock()
	settings := a.upstream
	x.s.pool.mu.Unlock()
	c, err := x.s.clouds.client(a.ID, a.Kind, settings, secret, x.s.client, x.s.cfg)
	if err != nil {
		return nil, err
	}
	resp, code, err := c.Do(x.r.Context(), x.route, x.r.Header, x.body)
	x.sent = append(x.sent, c.Secrets()...)
	x.cloudCode = code
	if resp != nil {
		x.row.UpstreamRequestID = resp.Header.Get("X-Amzn-Requestid")
	}
	if errors.Is(err, cloud.ErrUnsupported) {
		x.s.log.Debug("not for a cloud account", "request_id", x.id, "account", a.Name, "err", err)
	}
	return resp, err
}

// classifyCloud reads a cloud provider's error answer by its error code
// (ans.cloud): throttling and quota errors limit the account (a cooldown:
// they name no reset), an unready or unavailable model is transient,
// refused credentials refuse the key (accounts login), a refused access
// to the model quarantines the account, a model the account cannot reach
// is tried once more elsewhere; anything else is the request's.
func classifyCloud(v *Verdict, ans answer) {
	v.Learn = true
	switch ans.cloud {
	case "ThrottlingException", "ServiceQuotaExceededException", "RESOURCE_EXHAUSTED":
		v.Class, v.Retry, v.Reason, v.Outcome = ClassLimited, true, ReasonRateLimited, OutcomeLimited
		v.Limited = true
	case "ModelNotReadyException", "ServiceUnavailableException", "UNAVAILABLE":
		v.Class, v.Retry, v.Reason, v.Outcome = ClassTransient, true, ReasonOverloaded, OutcomeOverloaded
	case "InternalServerException", "ModelTimeoutException", "INTERNAL", "DEADLINE_EXCEEDED":
		v.Class, v.Retry, v.Reason = ClassTransient, true, ReasonServerError
	case "UnrecognizedClientException", "InvalidSignatureException", "IncompleteSignatureException",
		"ExpiredTokenException", "UNAUTHENTICATED":
		v.Class, v.Retry, v.Reason, v.KeyRefused = ClassAccount, true, ReasonUnauthorized, true
	case "AccessDeniedException", "PERMISSION_DENIED":
		v.Class, v.Retry, v.Reason = ClassQuarantine, true, ReasonAccountRefused
		if v.Message == "" {
			v.Message = ans.cloud
		}
	case "ResourceNotFoundException", "NOT_FOUND":
		v.Class, v.Retry, v.Reason = ClassScoped, true, ReasonServerError
	default:
		v.Class = ClassRequest
		if ans.status >= 500 {
			v.Class, v.Retry, v.Reason = ClassTransient, true, ReasonServerError
		}
	}
}
