package cloud

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/google"
)

// API versions the providers want in the body.
const (
	BedrockVersion = "bedrock-2023-05-31"
	VertexVersion  = "vertex-2023-10-16"
)

// Routes a cloud account serves (the proxy's canonical paths).
const (
	MessagesRoute    = "/v1/messages"
	CountTokensRoute = "/v1/messages/count_tokens"
)

// Service is the SigV4 service name of Bedrock.
const Service = "bedrock"

// VertexScope is the OAuth scope of a Vertex access token.
const VertexScope = "https://www.googleapis.com/auth/cloud-platform"

// ErrUnsupported is the error of a request a cloud account cannot serve
// (another route than /v1/messages, count_tokens on Vertex): the proxy
// moves it on to another account.
var ErrUnsupported = errors.New("not served by a cloud account")

// errorBodyMax bounds the error body read to rewrite it.
const errorBodyMax = 64 << 10

// answerMax bounds a non-streamed answer, read whole to set its model (a
// Messages answer is far smaller).
const answerMax = 32 << 20

// tokenTimeout bounds one access-token fetch (Vertex).
const tokenTimeout = 30 * time.Second

// Client is one cloud account's way to its provider: settings,
// credentials and, for Vertex, its cached access token. Safe for
// concurrent use.
type Client struct {
	kind   string
	st     Settings
	base   string
	http   *http.Client
	models *Models
	now    func() time.Time

	creds  aws.Credentials // bedrock
	signer *v4.Signer

	tsMu    sync.Mutex
	ts      oauth2.TokenSource // vertex: cached, refreshed before expiry
	newTS   func() oauth2.TokenSource
	pemKey  string
	lastTok atomic.Pointer[string]
}

// New makes the Client of an account of kind with settings st and
// credential document key (as CheckKey returned it); hc sends its
// requests (and fetches Vertex tokens); models maps model ids (nil: the
// built-in tables).
func New(kind string, st Settings, key string, hc *http.Client, models *Models) (*Client, error) {
	if err := st.Check(kind); err != nil {
		return nil, err
	}
	if hc == nil {
		hc = http.DefaultClient
	}
	c := &Client{kind: kind, st: st, base: st.BaseURL(kind), http: hc, models: models, now: time.Now}
	switch kind {
	case Bedrock:
		k, err := ParseAWSKeys([]byte(key))
		if err != nil {
			return nil, err
		}
		c.creds = aws.Credentials{AccessKeyID: k.AccessKeyID, SecretAccessKey: k.SecretAccessKey, SessionToken: k.SessionToken, Source: "claudeflare"}
		c.signer = v4.NewSigner()
	case Vertex:
		sa, err := ParseServiceAccount([]byte(key))
		if err != nil {
			return nil, err
		}
		jc, err := google.JWTConfigFromJSON([]byte(key), VertexScope)
		if err != nil {
			return nil, errors.New("the service-account key cannot sign tokens")
		}
		tc := &http.Client{Transport: hc.Transport, Timeout: tokenTimeout}
		tctx := context.WithValue(context.Background(), oauth2.HTTPClient, tc)
		c.newTS = func() oauth2.TokenSource { return jc.TokenSource(tctx) }
		c.ts = c.newTS()
		c.pemKey = sa.PrivateKey
	default:
		return nil, fmt.Errorf("not a cloud kind: %q", kind)
	}
	return c, nil
}

// Secrets are the credentials this client holds or sent, to scrub from
// whatever is relayed or logged.
func (c *Client) Secrets() []string {
	out := []string{}
	if c.kind == Bedrock {
		out = append(out, c.creds.SecretAccessKey, c.creds.SessionToken)
	} else {
		out = append(out, c.pemKey)
		if t := c.lastTok.Load(); t != nil {
			out = append(out, *t)
		}
	}
	return out
}

// Do sends the client's request (route: the canonical path; header: the
// client's headers, for anthropic-beta; body: the Messages request) to
// the provider and returns an answer in Anthropic's shape. code is the
// provider's error code of an error answer (ThrottlingException,
// RESOURCE_EXHAUSTED, ...), "" otherwise. A route the account cannot
// serve is ErrUnsupported, before anything is sent.
func (c *Client) Do(ctx context.Context, route string, header http.Header, body []byte) (resp *http.Response, code string, err error) {
	count := route == CountTokensRoute
	if route != MessagesRoute && !(count && c.kind == Bedrock) {
		return nil, "", fmt.Errorf("%w: %s accounts do not serve %s", ErrUnsupported, c.kind, route)
	}
	for try := 0; ; try++ {
		req, err := c.request(ctx, count, header, body)
		if err != nil {
			return nil, "", err
		}
		if c.kind == Vertex {
			tok, err := c.token()
			if err != nil {
				return tokenFailure(err)
			}
			c.lastTok.Store(&tok.AccessToken)
			req.r.Header.Set("Authorization", "Bearer "+tok.AccessToken)
		} else if err := c.sign(ctx, req.r, req.body); err != nil {
			return nil, "", err
		}
		resp, err = c.http.Do(req.r)
		if err != nil {
			var ue *url.Error
			if errors.As(err, &ue) {
				return nil, "", fmt.Errorf("%s %s: %w", c.kind, req.op, ue.Err)
			}
			return nil, "", err
		}
		if c.kind == Vertex && resp.StatusCode == http.StatusUnauthorized && try == 0 {
			// The cached token was refused before its expiry (revoked):
			// one new token, one more try.
			resp.Body.Close()
			c.tsMu.Lock()
			c.ts = c.newTS()
			c.tsMu.Unlock()
			continue
		}
		return c.answer(resp, req)
	}
}

// token is the Vertex access token: cached until shortly before expiry.
func (c *Client) token() (*oauth2.Token, error) {
	c.tsMu.Lock()
	ts := c.ts
	c.tsMu.Unlock()
	return ts.Token()
}

// call is one request to the provider.
type call struct {
	r      *http.Request
	body   []byte
	model  string // the model the client asked for
	stream bool
	count  bool
	op     string // for errors: invoke, invoke-with-response-stream, ...
}

// request builds the provider's request from the client's.
func (c *Client) request(ctx context.Context, count bool, header http.Header, in []byte) (*call, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(in, &m); err != nil || m == nil {
		return nil, fmt.Errorf("%w: the request body is not a JSON object", ErrUnsupported)
	}
	cl := &call{count: count}
	if err := json.Unmarshal(m["model"], &cl.model); err != nil || cl.model == "" {
		return nil, fmt.Errorf("%w: the request names no model", ErrUnsupported)
	}
	if s, ok := m["stream"]; ok {
		json.Unmarshal(s, &cl.stream)
	}
	delete(m, "model")
	id := c.models.ID(c.kind, cl.model)
	var u string
	switch c.kind {
	case Bedrock:
		delete(m, "stream")
		m["anthropic_version"] = json.RawMessage(strconv.Quote(BedrockVersion))
		if betas := bedrockBetas(betaFlags(header)); len(betas) > 0 {
			b, _ := json.Marshal(betas)
			m["anthropic_beta"] = b
		}
		cl.op = "invoke"
		switch {
		case count:
			cl.op = "count-tokens"
			if _, ok := m["max_tokens"]; !ok {
				m["max_tokens"] = json.RawMessage("1") // an InvokeModel body needs one
			}
		case cl.stream:
			cl.op = "invoke-with-response-stream"
		}
		u = c.base + "/model/" + escapeSegment(id) + "/" + cl.op
	case Vertex:
		m["anthropic_version"] = json.RawMessage(strconv.Quote(VertexVersion))
		cl.op = "rawPredict"
		if cl.stream {
			cl.op = "streamRawPredict"
		}
		u = c.base + "/v1/projects/" + url.PathEscape(c.st.Project) + "/locations/" + url.PathEscape(c.st.Region) +
			"/publishers/anthropic/models/" + escapeSegment(id) + ":" + cl.op
	}
	body, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	if count {
		body, _ = json.Marshal(map[string]any{"input": map[string]any{"invokeModel": map[string]string{
			"body": base64.StdEncoding.EncodeToString(body)}}})
	}
	cl.body = body
	r, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("build %s request: %v", c.kind, err)
	}
	r.ContentLength = int64(len(body))
	r.Header.Set("Content-Type", "application/json")
	switch {
	case c.kind == Bedrock && cl.stream:
		r.Header.Set("Accept", "application/vnd.amazon.eventstream")
	case cl.stream:
		r.Header.Set("Accept", "text/event-stream")
	default:
		r.Header.Set("Accept", "application/json")
	}
	if c.kind == Vertex {
		if betas := betaFlags(header); len(betas) > 0 {
			r.Header.Set("Anthropic-Beta", strings.Join(betas, ","))
		}
	}
	cl.r = r
	return cl, nil
}

// escapeSegment escapes a model id for one path segment as the AWS SDK
// does: ':' (in Bedrock ids) becomes %3A; '@' (Vertex) stays.
func escapeSegment(id string) string {
	return strings.ReplaceAll(url.PathEscape(id), ":", "%3A")
}

// betaFlags are the client's anthropic-beta flags, less the OAuth one
// (the cloud accounts do not use OAuth).
func betaFlags(h http.Header) []string {
	var out []string
	seen := map[string]bool{}
	for _, v := range h.Values("Anthropic-Beta") {
		for f := range strings.SplitSeq(v, ",") {
			f = strings.TrimSpace(f)
			if f == "" || seen[f] || strings.HasPrefix(f, "oauth-") {
				continue
			}
			seen[f] = true
			out = append(out, f)
		}
	}
	return out
}

// BedrockBetas are the beta flags Bedrock's InvokeModel takes (AWS's
// list); it answers 400 "invalid beta flag" to any other (Claude Code's
// claude-code-20250219, mcp-servers-..., ...), so the others are dropped.
var BedrockBetas = map[string]bool{
	"computer-use-2024-10-22": true, "computer-use-2025-01-24": true, "token-efficient-tools-2025-02-19": true,
	"interleaved-thinking-2025-05-14": true, "output-128k-2025-02-19": true, "dev-full-thinking-2025-05-14": true,
	"context-1m-2025-08-07": true, "context-management-2025-06-27": true, "effort-2025-11-24": true,
	"tool-search-tool-2025-10-19": true, "tool-examples-2025-10-29": true,
}

func bedrockBetas(flags []string) []string {
	out := flags[:0]
	for _, f := range flags {
		if BedrockBetas[f] {
			out = append(out, f)
		}
	}
	return out
}

// sign signs r (whose body is body) with SigV4 for Bedrock.
func (c *Client) sign(ctx context.Context, r *http.Request, body []byte) error {
	sum := sha256.Sum256(body)
	if err := c.signer.SignHTTP(ctx, c.creds, r, hex.EncodeToString(sum[:]), Service, c.st.Region, c.now()); err != nil {
		return fmt.Errorf("sign the bedrock request: %v", err)
	}
	return nil
}

// tokenFailure turns a failed Vertex token fetch into an answer: a token
// endpoint that refused the key is a 401 (UNAUTHENTICATED: the account's
// key is refused); anything else an error (the request moves on). The
// endpoint's answer body is not kept (one line, no secret).
func tokenFailure(err error) (*http.Response, string, error) {
	var re *oauth2.RetrieveError
	if errors.As(err, &re) && re.Response != nil {
		st := re.Response.StatusCode
		if st == http.StatusBadRequest || st == http.StatusUnauthorized || st == http.StatusForbidden {
			msg := "the Vertex token endpoint refused the service-account key"
			if re.ErrorCode != "" {
				msg += " (" + oneLine(re.ErrorCode) + ")"
			}
			return errorResponse(http.StatusUnauthorized, "authentication_error", msg, nil), "UNAUTHENTICATED", nil
		}
		return nil, "", fmt.Errorf("vertex access token: the token endpoint answered %d", st)
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		return nil, "", fmt.Errorf("vertex access token: %v", ue.Err)
	}
	return nil, "", errors.New("vertex access token: " + oneLine(err.Error()))
}

// answer turns the provider's response into Anthropic's shape.
func (c *Client) answer(resp *http.Response, cl *call) (*http.Response, string, error) {
	if resp.StatusCode >= 300 {
		return c.errorAnswer(resp)
	}
	h := resp.Header
	switch {
	case cl.count:
		var out struct {
			InputTokens int64 `json:"inputTokens"`
		}
		b, err := io.ReadAll(io.LimitReader(resp.Body, errorBodyMax))
		resp.Body.Close()
		if err != nil {
			return nil, "", fmt.Errorf("bedrock count-tokens: %v", err)
		}
		if err := json.Unmarshal(b, &out); err != nil {
			return nil, "", errors.New("bedrock count-tokens: the answer is not JSON")
		}
		b, _ = json.Marshal(map[string]int64{"input_tokens": out.InputTokens})
		setBody(resp, b)
	case cl.stream && c.kind == Bedrock:
		if ct := h.Get("Content-Type"); !strings.HasPrefix(ct, "application/vnd.amazon.eventstream") {
			resp.Body.Close()
			return nil, "", fmt.Errorf("bedrock %s: answered %q, not an event stream", cl.op, ct)
		}
		resp.Body = newEventStreamSSE(resp.Body, cl.model)
		streamHeaders(resp)
	case cl.stream:
		resp.Body = newSSEModel(resp.Body, cl.model)
		streamHeaders(resp)
	default:
		b, err := io.ReadAll(io.LimitReader(resp.Body, answerMax+1))
		resp.Body.Close()
		if err != nil {
			return nil, "", fmt.Errorf("%s %s: %v", c.kind, cl.op, err)
		}
		if len(b) > answerMax {
			return nil, "", fmt.Errorf("%s %s: an answer of more than %d bytes", c.kind, cl.op, answerMax)
		}
		setBody(resp, setModel(b, cl.model))
	}
	return resp, "", nil
}

func streamHeaders(resp *http.Response) {
	resp.Header.Del("Content-Length")
	resp.ContentLength = -1
	resp.Header.Set("Content-Type", "text/event-stream; charset=utf-8")
	resp.Header.Set("Cache-Control", "no-cache")
}

func setBody(resp *http.Response, b []byte) {
	resp.Body = io.NopCloser(bytes.NewReader(b))
	resp.ContentLength = int64(len(b))
	resp.Header.Set("Content-Length", strconv.Itoa(len(b)))
	resp.Header.Set("Content-Type", "application/json")
	resp.Header.Del("Content-Encoding")
}

// setModel puts model as the "model" of a JSON message (the id the client
// asked for, not the provider's); anything else is kept as it is.
func setModel(b []byte, model string) []byte {
	var m map[string]json.RawMessage
	if json.Unmarshal(b, &m) != nil || m == nil {
		return b
	}
	if _, ok := m["model"]; !ok {
		if t, ok := m["type"]; !ok || string(t) != `"message"` {
			return b
		}
	}
	m["model"] = json.RawMessage(strconv.Quote(model))
	out, err := json.Marshal(m)
	if err != nil {
		return b
	}
	return out
}

// errorAnswer rewrites a provider's error answer as Anthropic's error
// body, keeping its status (a throttle becomes 429 rate_limit_error, an
// unready model 529 overloaded_error), and returns the provider's code.
// An answer already in Anthropic's shape (the model's own error through
// Vertex) is kept as it is.
func (c *Client) errorAnswer(resp *http.Response) (*http.Response, string, error) {
	b, err := io.ReadAll(io.LimitReader(resp.Body, errorBodyMax))
	resp.Body.Close()
	if err != nil {
		return nil, "", fmt.Errorf("%s: read the error answer: %v", c.kind, err)
	}
	var anth struct {
		Type  string `json:"type"`
		Error struct {
			Type    string `json:"type"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if json.Unmarshal(b, &anth) == nil && anth.Type == "error" && anth.Error.Type != "" {
		setBody(resp, b)
		return resp, "", nil
	}
	code, msg := "", ""
	if c.kind == Bedrock {
		code, _, _ = strings.Cut(resp.Header.Get("X-Amzn-Errortype"), ":")
		var e struct {
			Message  string `json:"message"`
			Message2 string `json:"Message"`
			Type     string `json:"__type"`
		}
		json.Unmarshal(b, &e)
		msg = e.Message
		if msg == "" {
			msg = e.Message2
		}
		if code == "" && e.Type != "" {
			code = e.Type[strings.LastIndex(e.Type, "#")+1:]
		}
	} else {
		var e struct {
			Error struct {
				Code    int    `json:"code"`
				Message string `json:"message"`
				Status  string `json:"status"`
			} `json:"error"`
		}
		json.Unmarshal(b, &e)
		code, msg = e.Error.Status, e.Error.Message
	}
	typ, status := ErrorType(code, resp.StatusCode)
	if msg == "" {
		msg = fmt.Sprintf("%s answered %d", c.kind, resp.StatusCode)
	}
	if code != "" {
		msg = code + ": " + msg
	}
	out := errorResponse(status, typ, oneLine(msg), resp.Header)
	out.Request = resp.Request
	return out, code, nil
}

// ErrorType is the Anthropic error type and status of a provider's error
// code (Bedrock's exception names, Google's status words) answered with
// status.
func ErrorType(code string, status int) (typ string, outStatus int) {
	switch code {
	case "ThrottlingException", "ServiceQuotaExceededException", "RESOURCE_EXHAUSTED":
		return "rate_limit_error", http.StatusTooManyRequests
	case "ModelNotReadyException", "ServiceUnavailableException", "UNAVAILABLE":
		return "overloaded_error", 529
	case "ValidationException", "INVALID_ARGUMENT", "FAILED_PRECONDITION":
		return "invalid_request_error", status
	case "AccessDeniedException", "PERMISSION_DENIED":
		return "permission_error", status
	case "UnrecognizedClientException", "InvalidSignatureException", "IncompleteSignatureException",
		"ExpiredTokenException", "UNAUTHENTICATED":
		return "authentication_error", status
	case "ResourceNotFoundException", "NOT_FOUND":
		return "not_found_error", status
	}
	switch {
	case status == http.StatusTooManyRequests:
		return "rate_limit_error", status
	case status == http.StatusUnauthorized:
		return "authentication_error", status
	case status == http.StatusForbidden:
		return "permission_error", status
	case status == http.StatusNotFound:
		return "not_found_error", status
	case status >= 400 && status < 500:
		return "invalid_request_error", status
	}
	return "api_error", status
}

// errorResponse is an Anthropic error answer; h (may be nil) gives the
// headers kept (the provider's request id).
func errorResponse(status int, typ, msg string, h http.Header) *http.Response {
	b, _ := json.Marshal(map[string]any{"type": "error", "error": map[string]string{"type": typ, "message": msg}})
	out := &http.Response{StatusCode: status, Status: fmt.Sprintf("%d %s", status, http.StatusText(status)),
		Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1, Header: http.Header{}}
	for _, k := range []string{"X-Amzn-Requestid", "X-Request-Id", "Date"} {
		if v := h.Get(k); v != "" {
			out.Header.Set(k, v)
		}
	}
	setBody(out, b)
	return out
}

// oneLine makes a provider's message one line of printable characters,
// at most 500 runes.
func oneLine(s string) string {
	var b strings.Builder
	n := 0
	for _, r := range strings.TrimSpace(s) {
		if n == 500 {
			break
		}
		if r < 0x20 || r == 0x7f {
			r = ' '
		}
		b.WriteRune(r)
		n++
	}
	return b.String()
}
