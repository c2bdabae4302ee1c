// Package fakecloud is an in-process fake of the two cloud APIs that
// serve Claude, for tests: Amazon Bedrock's runtime (InvokeModel,
// InvokeModelWithResponseStream with its binary event stream,
// CountTokens) checking each request's SigV4 signature, and Google Vertex
// AI (rawPredict, streamRawPredict) with a token endpoint that takes the
// JWT bearer grant of a service-account key. Both check the body shape the
// provider wants and answer as the provider does, errors included.
//
// Each is a real HTTP server on 127.0.0.1 (httptest), safe for concurrent
// use.
package fakecloud

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/protocol/eventstream"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
)

// Versions the fakes require in the body.
const (
	BedrockVersion = "bedrock-2023-05-31"
	VertexVersion  = "vertex-2023-10-16"
)

// Usage is what every fake answer reports.
var Usage = map[string]int{"input_tokens": 31, "output_tokens": 17, "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0}

// Request is one request a fake took (signature or token good, body good).
type Request struct {
	Op      string         // invoke, invoke-with-response-stream, count-tokens, rawPredict, streamRawPredict
	Model   string         // the provider's model id from the path
	Body    map[string]any // the decoded body
	Header  http.Header
	Rejects string // why it was refused, "" when it was served
}

// Bedrock is a fake of Amazon Bedrock's runtime API.
type Bedrock struct {
	URL    string
	Region string
	Keys   AWSKeys

	srv *httptest.Server
	recorder
	// streamError: an in-stream exception after the first delta.
	streamError string
}

// recorder is what each fake keeps of the requests it took, and how many
// answers are still to fail (Throttle, Exhaust). Its mu also guards the
// fake's own fields.
type recorder struct {
	mu   sync.Mutex
	got  []Request
	fail int
}

// Requests returns the model requests the fake received so far.
func (r *recorder) Requests() []Request {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Request(nil), r.got...)
}

func (r *recorder) record(q Request) {
	r.mu.Lock()
	r.got = append(r.got, q)
	r.mu.Unlock()
}

func (r *recorder) failNext(n int) {
	r.mu.Lock()
	r.fail = n
	r.mu.Unlock()
}

// failing reports whether this answer is to fail (counting it).
func (r *recorder) failing() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fail > 0 {
		r.fail--
		return true
	}
	return false
}

// AWSKeys is the credential document of the fake's account.
type AWSKeys struct {
	AccessKeyID     string `json:"access_key_id"`
	SecretAccessKey string `json:"secret_access_key"`
	SessionToken    string `json:"session_token,omitempty"`
}

// JSON is the keys as `accounts add --bedrock` reads them on stdin.
func (k AWSKeys) JSON() []byte {
	b, _ := json.Marshal(k)
	return b
}

// NewBedrock starts a Bedrock fake for region, with fresh random keys
// (and a session token).
func NewBedrock(region string) *Bedrock {
	b := &Bedrock{Region: region, Keys: AWSKeys{
		AccessKeyID:     "AKIA" + strings.ToUpper(randHex(8)),
		SecretAccessKey: "awssecret" + randHex(16),
		SessionToken:    "awssession" + randHex(16),
	}}
	b.srv = httptest.NewServer(http.HandlerFunc(b.serve))
	b.URL = b.srv.URL
	return b
}

// Close stops the server.
func (b *Bedrock) Close() { b.srv.Close() }

// Throttle makes the next n answers a ThrottlingException (429).
func (b *Bedrock) Throttle(n int) { b.failNext(n) }

// StreamException makes every stream end with this in-stream exception
// (e.g. "throttlingException") after its first delta; "" for none.
func (b *Bedrock) StreamException(typ string) {
	b.mu.Lock()
	b.streamError = typ
	b.mu.Unlock()
}

func (b *Bedrock) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(io.LimitReader(r.Body, 64<<20))
	rec := Request{Header: r.Header.Clone()}
	path := r.URL.Path
	if r.Method != http.MethodPost || !strings.HasPrefix(path, "/model/") {
		awsError(w, http.StatusNotFound, "UnknownOperationException", "")
		return
	}
	rest := strings.TrimPrefix(path, "/model/")
	i := strings.LastIndex(rest, "/")
	if i < 0 {
		awsError(w, http.StatusNotFound, "UnknownOperationException", "")
		return
	}
	rec.Model, rec.Op = rest[:i], rest[i+1:]
	if why := b.verify(r, body); why != "" {
		rec.Rejects = why
		b.record(rec)
		awsError(w, http.StatusForbidden, "InvalidSignatureException", "The request signature we calculated does not match the signature you provided. "+why)
		return
	}
	invoke := body
	if rec.Op == "count-tokens" {
		var ct struct {
			Input struct {
				InvokeModel struct {
					Body string `json:"body"`
				} `json:"invokeModel"`
			} `json:"input"`
		}
		if json.Unmarshal(body, &ct) != nil {
			awsError(w, http.StatusBadRequest, "ValidationException", "malformed input")
			return
		}
		var err error
		if invoke, err = base64.StdEncoding.DecodeString(ct.Input.InvokeModel.Body); err != nil {
			awsError(w, http.StatusBadRequest, "ValidationException", "input.invokeModel.body is not base64")
			return
		}
	}
	if why := checkBody(invoke, BedrockVersion, true, rec.Op == "count-tokens"); why != "" {
		rec.Rejects = why
		b.record(rec)
		awsError(w, http.StatusBadRequest, "ValidationException", why)
		return
	}
	json.Unmarshal(invoke, &rec.Body)
	b.record(rec)
	if !strings.HasPrefix(rec.Model, "anthropic.") && !strings.Contains(rec.Model, ".anthropic.") {
		awsError(w, http.StatusBadRequest, "ValidationException", "The provided model identifier is invalid.")
		return
	}
	b.mu.Lock()
	streamErr := b.streamError
	b.mu.Unlock()
	if b.failing() {
		awsError(w, http.StatusTooManyRequests, "ThrottlingException", "Too many requests, please wait before trying again.")
		return
	}
	w.Header().Set("X-Amzn-Requestid", randHex(16))
	switch rec.Op {
	case "count-tokens":
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]int{"inputTokens": Usage["input_tokens"]})
	case "invoke":
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Amzn-Bedrock-Input-Token-Count", fmt.Sprint(Usage["input_tokens"]))
		w.Header().Set("X-Amzn-Bedrock-Output-Token-Count", fmt.Sprint(Usage["output_tokens"]))
		json.NewEncoder(w).Encode(message(anthropicModel(rec.Model), "bedrock"))
	case "invoke-with-response-stream":
		w.Header().Set("Content-Type", "application/vnd.amazon.eventstream")
		w.Header().Set("X-Amzn-Bedrock-Content-Type", "application/json")
		enc := eventstream.NewEncoder()
		for i, ev := range streamEvents(anthropicModel(rec.Model), "bedrock") {
			if i == 3 && streamErr != "" {
				var m eventstream.Message
				m.Headers.Set(":message-type", eventstream.StringValue("exception"))
				m.Headers.Set(":exception-type", eventstream.StringValue(streamErr))
				m.Headers.Set(":content-type", eventstream.StringValue("application/json"))
				m.Payload = []byte(`{"message":"Too many tokens, please wait before trying again."}`)
				enc.Encode(w, m)
				return
			}
			if _, ok := ev["type"]; ok && ev["type"] == "message_stop" {
				ev["amazon-bedrock-invocationMetrics"] = map[string]int{"inputTokenCount": Usage["input_tokens"],
					"outputTokenCount": Usage["output_tokens"], "invocationLatency": 120, "firstByteLatency": 40}
			}
			raw, _ := json.Marshal(ev)
			payload, _ := json.Marshal(map[string]string{"bytes": base64.StdEncoding.EncodeToString(raw), "p": "abcdefgh"})
			var m eventstream.Message
			m.Headers.Set(":event-type", eventstream.StringValue("chunk"))
			m.Headers.Set(":content-type", eventstream.StringValue("application/json"))
			m.Headers.Set(":message-type", eventstream.StringValue("event"))
			m.Payload = payload
			if err := enc.Encode(w, m); err != nil {
				return
			}
			if f, ok := w.(http.Flusher); ok {
				f.Flush()
			}
		}
	default:
		awsError(w, http.StatusNotFound, "UnknownOperationException", "")
	}
}

// verify recomputes the request's SigV4 signature with the fake's keys
// (the AWS SDK's signer, on a copy of the request with only the headers
// it signed) and compares it; it returns why the request is refused, ""
// when it is good.
func (b *Bedrock) verify(r *http.Request, body []byte) string {
	auth := r.Header.Get("Authorization")
	const alg = "AWS4-HMAC-SHA256 "
	if !strings.HasPrefix(auth, alg) {
		return "no SigV4 Authorization header"
	}
	params := map[string]string{}
	for p := range strings.SplitSeq(strings.TrimPrefix(auth, alg), ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(p), "=")
		params[k] = v
	}
	scope := strings.Split(params["Credential"], "/")
	if len(scope) != 5 || scope[0] != b.Keys.AccessKeyID {
		return "unknown access key"
	}
	if scope[2] != b.Region || scope[3] != "bedrock" || scope[4] != "aws4_request" {
		return fmt.Sprintf("credential scope %s/%s is not %s/bedrock", scope[2], scope[3], b.Region)
	}
	if r.Header.Get("X-Amz-Security-Token") != b.Keys.SessionToken {
		return "the security token is not the session's"
	}
	at, err := time.Parse("20060102T150405Z", r.Header.Get("X-Amz-Date"))
	if err != nil || time.Since(at).Abs() > 5*time.Minute {
		return "X-Amz-Date missing or too far from now"
	}
	cp, _ := http.NewRequest(r.Method, "http://"+r.Host+r.URL.RequestURI(), nil)
	cp.Host = r.Host
	cp.ContentLength = r.ContentLength
	for _, h := range strings.Split(params["SignedHeaders"], ";") {
		if h == "host" || h == "content-length" {
			continue
		}
		if v := r.Header.Values(h); len(v) > 0 {
			cp.Header[http.CanonicalHeaderKey(h)] = v
		}
	}
	sum := sha256.Sum256(body)
	creds := aws.Credentials{AccessKeyID: b.Keys.AccessKeyID, SecretAccessKey: b.Keys.SecretAccessKey, SessionToken: b.Keys.SessionToken}
	if err := v4.NewSigner().SignHTTP(context.Background(), creds, cp, hex.EncodeToString(sum[:]), "bedrock", b.Region, at); err != nil {
		return err.Error()
	}
	if cp.Header.Get("Authorization") != auth {
		return "signature mismatch"
	}
	return ""
}

// checkBody checks an Anthropic request as the cloud API wants it: the
// version field, no model, and (Bedrock) no stream field.
func checkBody(body []byte, version string, bedrock, count bool) string {
	var m map[string]any
	if err := json.Unmarshal(body, &m); err != nil {
		return "the body is not a JSON object"
	}
	if m["anthropic_version"] != version {
		return fmt.Sprintf("anthropic_version is %v, want %s", m["anthropic_version"], version)
	}
	if _, ok := m["model"]; ok {
		return "extraneous key [model] is not permitted"
	}
	if _, ok := m["stream"]; ok && bedrock {
		return "extraneous key [stream] is not permitted"
	}
	if _, ok := m["messages"].([]any); !ok {
		return "messages: field required"
	}
	if _, ok := m["max_tokens"]; !ok && !count {
		return "max_tokens: field required"
	}
	if betas, ok := m["anthropic_beta"]; ok {
		list, ok := betas.([]any)
		if !ok {
			return "anthropic_beta must be a list"
		}
		for _, f := range list {
			if s, _ := f.(string); !bedrockBetas[s] {
				return "invalid beta flag"
			}
		}
	}
	return ""
}

// bedrockBetas are the beta flags Bedrock documents; any other is
// refused, as Bedrock does.
var bedrockBetas = map[string]bool{
	"computer-use-2024-10-22": true, "computer-use-2025-01-24": true, "token-efficient-tools-2025-02-19": true,
	"interleaved-thinking-2025-05-14": true, "output-128k-2025-02-19": true, "dev-full-thinking-2025-05-14": true,
	"context-1m-2025-08-07": true, "context-management-2025-06-27": true, "effort-2025-11-24": true,
	"tool-search-tool-2025-10-19": true, "tool-examples-2025-10-29": true,
}

// awsError writes an error the way Bedrock's REST-JSON protocol does.
func awsError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Amzn-Errortype", code+":http://internal.amazon.com/coral/com.amazon.bedrock/")
	w.Header().Set("X-Amzn-Requestid", randHex(16))
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]string{"message": msg})
}

// anthropicModel is the Anthropic id a provider's id stands for, as the
// providers put it in their answers.
func anthropicModel(id string) string {
	if i := strings.Index(id, "anthropic."); i >= 0 {
		id = id[i+len("anthropic."):]
	}
	if i := strings.LastIndex(id, "-v"); i > 0 && strings.Contains(id[i:], ":") {
		id = id[:i]
	}
	return strings.Replace(id, "@", "-", 1)
}

func message(model, who string) map[string]any {
	return map[string]any{
		"id": "msg_" + who + "_" + randHex(8), "type": "message", "role": "assistant", "model": model,
		"content":     []any{map[string]any{"type": "text", "text": "Hello from " + who + "."}},
		"stop_reason": "end_turn", "stop_sequence": nil, "usage": Usage,
	}
}

// streamEvents are the Anthropic events of one streamed answer.
func streamEvents(model, who string) []map[string]any {
	start := message(model, who)
	start["content"] = []any{}
	start["stop_reason"] = nil
	start["usage"] = map[string]int{"input_tokens": Usage["input_tokens"], "output_tokens": 1,
		"cache_read_input_tokens": 0, "cache_creation_input_tokens": 0}
	evs := []map[string]any{
		{"type": "message_start", "message": start},
		{"type": "content_block_start", "index": 0, "content_block": map[string]any{"type": "text", "text": ""}},
	}
	for _, part := range []string{"Hello ", "from ", who + "."} {
		evs = append(evs, map[string]any{"type": "content_block_delta", "index": 0, "delta": map[string]any{"type": "text_delta", "text": part}})
	}
	return append(evs,
		map[string]any{"type": "content_block_stop", "index": 0},
		map[string]any{"type": "message_delta", "delta": map[string]any{"stop_reason": "end_turn", "stop_sequence": nil},
			"usage": map[string]int{"output_tokens": Usage["output_tokens"]}},
		map[string]any{"type": "message_stop"},
	)
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}
