package fakeapi

import (
	"bytes"
	"compress/flate"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// FaultKind says what a Fault does.
type FaultKind int

// Fault kinds.
const (
	// FaultStatus answers Status (default 500) with Headers and Body (default
	// an Anthropic-shaped error matching Status) after Delay.
	FaultStatus FaultKind = iota + 1
	// FaultResetMidStream answers 200, sends AfterEvents SSE events (for a
	// non-streamed request: half of the JSON body), waits Delay, then drops
	// the connection without finishing the response.
	FaultResetMidStream
	// FaultResetBeforeHeaders waits Delay and drops the connection
	// without answering.
	FaultResetBeforeHeaders
	// FaultSlowFirstByte waits Delay before answering normally; it stops
	// waiting when the request is cancelled.
	FaultSlowFirstByte
	// FaultStreamError sends AfterEvents SSE events, waits Delay, then an
	// "event: error" with an overloaded_error (or Body as its data) and ends
	// the stream. A non-streamed request gets 529 overloaded_error instead.
	FaultStreamError
	// FaultEndStreamEarly sends AfterEvents SSE events, waits Delay, then
	// ends the response cleanly, without message_stop (a proxy or load
	// balancer on the way giving up). A non-streamed request is answered
	// normally.
	FaultEndStreamEarly
)

func (k FaultKind) String() string {
	switch k {
	case FaultStatus:
		return "status"
	case FaultResetMidStream:
		return "reset-mid-stream"
	case FaultResetBeforeHeaders:
		return "reset-before-headers"
	case FaultSlowFirstByte:
		return "slow-first-byte"
	case FaultStreamError:
		return "stream-error"
	case FaultEndStreamEarly:
		return "end-stream-early"
	}
	return "fault(" + strconv.Itoa(int(k)) + ")"
}

// Fault is a misbehaviour applied to the next Count authenticated API
// requests (every path but the token endpoint) that match Account and Path.
type Fault struct {
	Account string // only requests of this account; "" = any
	Path    string // only this URL path (e.g. "/v1/messages"); "" = any
	// Count is how many requests the fault applies to: 0 means 1, a
	// negative value means every matching request until ClearFaults.
	Count       int
	Kind        FaultKind
	Status      int               // FaultStatus: the status (default 500)
	Headers     map[string]string // FaultStatus: headers over the defaults ("" deletes)
	Body        string            // FaultStatus: the body; FaultStreamError: the error event data
	AfterEvents int               // stream faults: events sent before the fault
	Delay       time.Duration     // wait before the fault acts
	// Bare (FaultStatus): send no rate-limit header at all (none of the
	// account's anthropic-ratelimit-* headers, no retry-after), as
	// Anthropic's 429 for a problem with the request itself. Headers
	// still apply.
	Bare bool
	// Type and Message (FaultStatus, without Body): the error type and
	// message of the Anthropic-shaped body, instead of the ones matching
	// Status.
	Type, Message string
	// Rate, between 0 and 1: each matching request takes the fault with
	// this probability (independent draws), as random upstream errors
	// do; Count then counts the requests that took it. 0 = every one.
	Rate float64
}

// Inject queues a fault; faults are matched in the order injected, and a
// request takes at most one.
func (s *Server) Inject(f Fault) {
	if f.Count == 0 {
		f.Count = 1
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = append(s.faults, &f)
}

// ClearFaults drops every fault not used up yet.
func (s *Server) ClearFaults() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = nil
}

func (s *Server) takeFaultLocked(name, path string) *Fault {
	for i, f := range s.faults {
		if (f.Account != "" && f.Account != name) || (f.Path != "" && f.Path != path) {
			continue
		}
		if f.Rate > 0 && rand.Float64() >= f.Rate {
			continue
		}
		if f.Count > 0 {
			f.Count--
			if f.Count == 0 {
				s.faults = append(s.faults[:i:i], s.faults[i+1:]...)
			}
		}
		c := *f
		return &c
	}
	return nil
}

func (s *Server) serveHTTP(rw http.ResponseWriter, r *http.Request) {
	s.inFlight.Add(1)
	defer s.inFlight.Add(-1)
	body, err := io.ReadAll(io.LimitReader(r.Body, MaxRequestBody+1))
	rec := s.record(r, body)
	w := &statusWriter{ResponseWriter: rw}
	defer func() { s.setRecordStatus(rec, w.status) }()
	if err != nil {
		writeAPIError(w, http.StatusBadRequest, "invalid_request_error", "could not read request body", nil)
		return
	}
	if len(body) > MaxRequestBody {
		writeAPIError(w, http.StatusRequestEntityTooLarge, "request_too_large", "Request exceeds the maximum allowed number of bytes.", nil)
		return
	}
	switch p := r.URL.Path; {
	case p == TokenPath:
		s.handleToken(w, r, body, rec)
	case p == CreateAPIKeyPath:
		w.Header().Set("request-id", randomID("req_"))
		s.handleCreateAPIKey(w, r, rec)
	case p == UsagePath: // budget.go
		s.handleUsage(w, r)
	case strings.HasPrefix(p, "/v1/"):
		s.handleAPI(w, r, body, rec)
	default:
		writeAPIError(w, http.StatusNotFound, "not_found_error", "Not found", nil)
	}
}

// statusWriter remembers the status written.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach Flush and Hijack.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// authenticate resolves the request's credentials to an account. name is
// set whenever the credential is known, even when it is refused.
func (s *Server) authenticate(r *http.Request) (name, refusal string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if key := r.Header.Get("X-Api-Key"); key != "" {
		name, ok := s.apiKeys[key]
		if !ok {
			return "", "invalid x-api-key"
		}
		if a := s.accounts[name]; a != nil && a.keysRevoked {
			return name, "invalid x-api-key"
		}
		return name, ""
	}
	authz := r.Header.Get("Authorization")
	if authz == "" {
		return "", "x-api-key header is required"
	}
	tok, ok := strings.CutPrefix(authz, "Bearer ")
	if !ok {
		return "", "invalid authorization header"
	}
	at := s.accessTokens[tok]
	if at == nil {
		return "", "Invalid bearer token"
	}
	if !hasBeta(r.Header, OAuthBeta) {
		return at.account, "OAuth authentication is currently not supported."
	}
	if at.revoked || !s.nowLocked().Before(at.expires) {
		return at.account, "OAuth token has expired. Please obtain a new token or refresh your existing token."
	}
	if a := s.accounts[at.account]; a != nil && a.refuseAccess {
		return at.account, MsgTokenRevoked
	}
	return at.account, ""
}

// hasBeta reports whether the anthropic-beta headers list beta.
func hasBeta(h http.Header, beta string) bool {
	for _, v := range h.Values("Anthropic-Beta") {
		for _, b := range strings.Split(v, ",") {
			if strings.TrimSpace(b) == beta {
				return true
			}
		}
	}
	return false
}

type snapshot struct {
	usage      Usage
	deltas     int
	chunk      int
	eventDelay time.Duration
	encoding   string
}

func (s *Server) handleAPI(w http.ResponseWriter, r *http.Request, body []byte, rec *Recorded) {
	w.Header().Set("request-id", randomID("req_"))
	name, refusal := s.authenticate(r)
	s.setRecordAccount(rec, name)

	s.mu.Lock()
	unified := s.unifiedLocked(name)
	var f *Fault
	var st *stateAnswer
	if refusal == "" {
		// An account's lasting state answers first; a fault is used up
		// only by a request that would otherwise be served.
		st = s.stateAnswerLocked(name, r.URL.Path, body, unified)
		st = s.budgetLocked(st, name, r.URL.Path, &unified) // budget.go
		if st == nil {
			f = s.takeFaultLocked(name, r.URL.Path)
			unified = s.servedHeadersLocked(name, r.URL.Path, unified)
		}
	}
	cfg := snapshot{s.usage, s.deltas, s.chunk, s.eventDelay, s.encoding}
	s.mu.Unlock()

	if refusal != "" {
		writeAPIError(w, http.StatusUnauthorized, "authentication_error", refusal, unified)
		return
	}
	if st != nil {
		writeAPIError(w, st.status, st.typ, st.message, st.headers)
		return
	}
	if f != nil {
		switch f.Kind {
		case FaultStatus:
			if !sleepCtx(r, f.Delay) {
				return
			}
			writeFaultStatus(w, f, unified)
			return
		case FaultResetBeforeHeaders:
			if !sleepCtx(r, f.Delay) {
				return
			}
			resetConn(w, false)
			return
		case FaultSlowFirstByte:
			if !sleepCtx(r, f.Delay) {
				return
			}
			f = nil
		case FaultStreamError, FaultResetMidStream, FaultEndStreamEarly:
		default:
			f = nil
		}
	}

	switch r.URL.Path {
	case MessagesPath:
		s.handleMessages(w, r, body, f, cfg, unified)
	case CountTokensPath:
		if r.Method != http.MethodPost {
			writeAPIError(w, http.StatusMethodNotAllowed, "invalid_request_error", "Method not allowed", unified)
			return
		}
		if _, ok := validMessages(w, body, unified); !ok {
			return
		}
		s.writeBody(w, r, f, cfg, unified, map[string]int{"input_tokens": cfg.usage.InputTokens})
	case ModelsPath:
		if r.Method != http.MethodGet {
			writeAPIError(w, http.StatusMethodNotAllowed, "invalid_request_error", "Method not allowed", unified)
			return
		}
		s.writeBody(w, r, f, cfg, unified, modelList())
	default:
		if s.serveOwned(w, r, body, name, unified) { // batches.go
			return
		}
		s.writeBody(w, r, f, cfg, unified, map[string]string{
			"method":  r.Method,
			"path":    r.URL.Path,
			"query":   r.URL.RawQuery,
			"account": name,
		})
	}
}

type messagesRequest struct {
	Model    string          `json:"model"`
	Messages json.RawMessage `json:"messages"`
	Stream   bool            `json:"stream"`
}

// validMessages checks a messages body; on failure it has answered 400.
func validMessages(w http.ResponseWriter, body []byte, unified map[string]string) (messagesRequest, bool) {
	var req messagesRequest
	if err := json.Unmarshal(body, &req); err != nil {
		writeAPIError(w, http.StatusBadRequest, "invalid_request_error", "The request body is not valid JSON.", unified)
		return req, false
	}
	if req.Model == "" {
		writeAPIError(w, http.StatusBadRequest, "invalid_request_error", "model: Field required", unified)
		return req, false
	}
	if len(req.Messages) == 0 || req.Messages[0] != '[' {
		writeAPIError(w, http.StatusBadRequest, "invalid_request_error", "messages: Field required", unified)
		return req, false
	}
	return req, true
}

func (s *Server) handleMessages(w http.ResponseWriter, r *http.Request, body []byte, f *Fault, cfg snapshot, unified map[string]string) {
	if r.Method != http.MethodPost {
		writeAPIError(w, http.StatusMethodNotAllowed, "invalid_request_error", "Method not allowed", unified)
		return
	}
	req, ok := validMessages(w, body, unified)
	if !ok {
		return
	}
	if req.Stream {
		s.writeStream(w, r, req.Model, f, cfg, unified)
		return
	}
	msg := map[string]any{
		"id":            randomID("msg_"),
		"type":          "message",
		"role":          "assistant",
		"model":         req.Model,
		"content":       []any{map[string]string{"type": "text", "text": strings.Repeat(chunkText(cfg.chunk), cfg.deltas)}},
		"stop_reason":   "end_turn",
		"stop_sequence": nil,
		"usage":         cfg.usage,
	}
	s.writeBody(w, r, f, cfg, unified, msg)
}

// writeBody answers 200 with v as JSON, or carries out a mid-response fault.
func (s *Server) writeBody(w http.ResponseWriter, r *http.Request, f *Fault, cfg snapshot, unified map[string]string, v any) {
	if f != nil && f.Kind == FaultStreamError {
		writeFaultStatus(w, &Fault{Status: 529}, unified)
		return
	}
	b, _ := json.Marshal(v)
	setHeaders(w.Header(), unified)
	w.Header().Set("Content-Type", "application/json")
	out, flush, closeBody := encoder(w, r, cfg.encoding)
	if out == nil {
		w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	}
	w.WriteHeader(http.StatusOK)
	if out == nil {
		out = w
	}
	if f != nil && f.Kind == FaultResetMidStream {
		_, _ = out.Write(b[:len(b)/2])
		flush()
		if sleepCtx(r, f.Delay) {
			resetConn(w, true)
		}
		return
	}
	_, _ = out.Write(b)
	closeBody()
}

// encoder returns a compressing writer over w when enc is on and accepted,
// after setting Content-Encoding; out is nil for an identity body. flush
// pushes everything written so far to the client; closeBody ends the body.
func encoder(w http.ResponseWriter, r *http.Request, enc string) (out io.Writer, flush, closeBody func()) {
	rc := http.NewResponseController(w)
	plainFlush := func() { _ = rc.Flush() }
	var zw interface {
		io.Writer
		Flush() error
		Close() error
	}
	if enc != "" && acceptsEncoding(r.Header.Get("Accept-Encoding"), enc) {
		switch enc {
		case "gzip":
			zw = gzip.NewWriter(w)
		case "deflate":
			zw, _ = flate.NewWriter(w, flate.DefaultCompression)
		}
	}
	if zw == nil {
		return nil, plainFlush, func() {}
	}
	w.Header().Set("Content-Encoding", enc)
	w.Header().Del("Content-Length")
	return zw, func() { _ = zw.Flush(); plainFlush() }, func() { _ = zw.Close() }
}

func acceptsEncoding(header, enc string) bool {
	for _, part := range strings.Split(header, ",") {
		name, params, _ := strings.Cut(strings.TrimSpace(part), ";")
		if strings.EqualFold(strings.TrimSpace(name), enc) && strings.ReplaceAll(strings.TrimSpace(params), " ", "") != "q=0" {
			return true
		}
	}
	return false
}

// writeStream answers with the SSE event sequence of a message.
func (s *Server) writeStream(w http.ResponseWriter, r *http.Request, model string, f *Fault, cfg snapshot, unified map[string]string) {
	setHeaders(w.Header(), unified)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream; charset=utf-8")
	h.Set("Cache-Control", "no-cache")
	out, flush, closeBody := encoder(w, r, cfg.encoding)
	if out == nil {
		out = w
	}
	w.WriteHeader(http.StatusOK)
	flush()

	ev := newEvents(model, cfg)
	gate := s.takeStreamGate()
	for i := range ev.count() {
		if gate != nil && i == gate.after && !gate.wait(r) {
			return
		}
		if f != nil && i == f.AfterEvents {
			s.streamFault(w, r, out, flush, closeBody, f)
			return
		}
		if i > 0 && !sleepCtx(r, cfg.eventDelay) {
			return
		}
		if _, err := out.Write(ev.event(i)); err != nil {
			return
		}
		flush()
	}
	if gate != nil && gate.after >= ev.count() && !gate.wait(r) {
		return
	}
	if f != nil {
		s.streamFault(w, r, out, flush, closeBody, f)
		return
	}
	closeBody()
}

func (s *Server) streamFault(w http.ResponseWriter, r *http.Request, out io.Writer, flush, closeBody func(), f *Fault) {
	if !sleepCtx(r, f.Delay) {
		return
	}
	switch f.Kind {
	case FaultResetMidStream:
		resetConn(w, true)
		return
	case FaultEndStreamEarly:
		closeBody()
		return
	}
	data := f.Body
	if data == "" {
		data = `{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}`
	}
	_, _ = fmt.Fprintf(out, "event: error\ndata: %s\n\n", data)
	flush()
	closeBody()
}

// events builds the SSE events of one streamed message.
type events struct {
	model string
	cfg   snapshot
	id    string
	delta []byte
}

func newEvents(model string, cfg snapshot) *events {
	text, _ := json.Marshal(chunkText(cfg.chunk))
	delta := fmt.Appendf(nil, "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":%s}}\n\n", text)
	return &events{model: model, cfg: cfg, id: randomID("msg_"), delta: delta}
}

// count is message_start, content_block_start, ping, the deltas,
// content_block_stop, message_delta and message_stop.
func (e *events) count() int { return 6 + e.cfg.deltas }

func (e *events) event(i int) []byte {
	n := e.cfg.deltas
	switch {
	case i == 0:
		u := e.cfg.usage
		msg := map[string]any{
			"type": "message_start",
			"message": map[string]any{
				"id": e.id, "type": "message", "role": "assistant", "model": e.model,
				"content": []any{}, "stop_reason": nil, "stop_sequence": nil,
				"usage": startUsage(u),
			},
		}
		return sse("message_start", msg)
	case i == 1:
		return []byte("event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n")
	case i == 2:
		return []byte("event: ping\ndata: {\"type\": \"ping\"}\n\n")
	case i < 3+n:
		return e.delta
	case i == 3+n:
		return []byte("event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n")
	case i == 4+n:
		return sse("message_delta", map[string]any{
			"type":  "message_delta",
			"delta": map[string]any{"stop_reason": "end_turn", "stop_sequence": nil},
			"usage": deltaUsage(e.cfg.usage),
		})
	default:
		return []byte("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n")
	}
}

func sse(name string, v any) []byte {
	b, _ := json.Marshal(v)
	var buf bytes.Buffer
	buf.WriteString("event: ")
	buf.WriteString(name)
	buf.WriteString("\ndata: ")
	buf.Write(b)
	buf.WriteString("\n\n")
	return buf.Bytes()
}

func modelList() map[string]any {
	models := []map[string]string{
		{"type": "model", "id": "claude-opus-4-1-20250805", "display_name": "Claude Opus 4.1", "created_at": "2025-08-05T00:00:00Z"},
		{"type": "model", "id": "claude-sonnet-4-5-20250929", "display_name": "Claude Sonnet 4.5", "created_at": "2025-09-29T00:00:00Z"},
		{"type": "model", "id": "claude-haiku-4-5-20251001", "display_name": "Claude Haiku 4.5", "created_at": "2025-10-01T00:00:00Z"},
	}
	return map[string]any{
		"data":     models,
		"has_more": false,
		"first_id": models[0]["id"],
		"last_id":  models[len(models)-1]["id"],
	}
}

// errorFor is Anthropic's error type and message for a status.
func errorFor(status int) (typ, msg string) {
	switch status {
	case http.StatusBadRequest:
		return "invalid_request_error", "Invalid request"
	case http.StatusUnauthorized:
		return "authentication_error", "invalid x-api-key"
	case http.StatusForbidden:
		return "permission_error", "Your API key does not have permission to use the specified resource."
	case http.StatusNotFound:
		return "not_found_error", "Not found"
	case http.StatusRequestEntityTooLarge:
		return "request_too_large", "Request exceeds the maximum allowed number of bytes."
	case http.StatusTooManyRequests:
		return "rate_limit_error", "This request would exceed your account's rate limit. Please try again later."
	case 529:
		return "overloaded_error", "Overloaded"
	}
	return "api_error", "Internal server error"
}

func writeFaultStatus(w http.ResponseWriter, f *Fault, unified map[string]string) {
	status := f.Status
	if status == 0 {
		status = http.StatusInternalServerError
	}
	h := make(map[string]string, len(unified)+len(f.Headers)+1)
	if !f.Bare {
		applyHeaderMap(h, unified)
	}
	h["content-type"] = "application/json"
	applyHeaderMap(h, f.Headers)
	if f.Body == "" {
		typ, msg := errorFor(status)
		if f.Type != "" {
			typ = f.Type
		}
		if f.Message != "" {
			msg = f.Message
		}
		writeAPIError(w, status, typ, msg, h)
		return
	}
	setHeaders(w.Header(), h)
	w.WriteHeader(status)
	_, _ = io.WriteString(w, f.Body)
}

// writeAPIError answers with Anthropic's error shape.
func writeAPIError(w http.ResponseWriter, status int, typ, msg string, headers map[string]string) {
	body := map[string]any{
		"type":       "error",
		"error":      map[string]string{"type": typ, "message": msg},
		"request_id": w.Header().Get("request-id"),
	}
	writeJSON(w, status, body, headers)
}

func writeJSON(w http.ResponseWriter, status int, v any, headers map[string]string) {
	b, _ := json.Marshal(v)
	setHeaders(w.Header(), headers)
	if w.Header().Get("Content-Type") == "" {
		w.Header().Set("Content-Type", "application/json")
	}
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// sleepCtx waits d; false when the request was cancelled first.
func sleepCtx(r *http.Request, d time.Duration) bool {
	if d <= 0 {
		return r.Context().Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-r.Context().Done():
		return false
	}
}

// resetConn drops the connection with a TCP reset, without finishing the
// response. With flush, what was written is sent first (flushing writes the
// headers, so it is only for a response already started).
func resetConn(w http.ResponseWriter, flush bool) {
	rc := http.NewResponseController(w)
	if flush {
		_ = rc.Flush()
	}
	conn, _, err := rc.Hijack()
	if err != nil {
		panic(http.ErrAbortHandler)
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = conn.Close()
}
