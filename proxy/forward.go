package proxy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/claudeflare/claudeflare/cloud"
	"github.com/claudeflare/claudeflare/internal/acctstate"
	"github.com/claudeflare/claudeflare/internal/apierr"
	"github.com/claudeflare/claudeflare/internal/target"
	"github.com/claudeflare/claudeflare/store"
)

// End states of a request in the log.
const (
	EndComplete        = "complete"
	EndTruncated       = "truncated"
	EndUpstreamError   = "upstream_error"
	EndClientCancelled = "client_cancelled"
)

// failureBodyMax bounds what is kept of a failed attempt's body, to hand
// to the client if no other account does better.
const failureBodyMax = 64 << 10

// attemptFailure is a response (or error) that moved a request on.
type attemptFailure struct {
	verdict Verdict
	status  int
	header  http.Header
	body    []byte
	err     error
}

// exchange is the state of one proxied request.
type exchange struct {
	s       *Server
	w       http.ResponseWriter
	r       *http.Request
	start   time.Time
	id      string
	route   string   // the canonical path (escaped), as authorized
	body    []byte   // the request body, read once (body.go), in buf
	buf     *bodyBuf // body's pooled buffer; nil when empty or not pooled
	held    int64    // bytes of body memory reserved in Server.bodies
	sent    []string // the credentials sent upstream by the current attempt
	model   string   // the request's "model", read from the body once (serve)
	family  string   // the model family of model (acctstate.Family), "" when none
	rt      route    // what the selector knows of the request (family, affinity key)
	row     store.Request
	capture bool
	payload *capture
	// upload is a body too big to buffer (server.max_body_bytes) on a
	// route that may stream it (body.go): sent once, as it arrives, of
	// uploadLen bytes (-1 = unknown).
	upload    io.Reader
	uploadLen int64
	ownedID   string // the owned id the path names, when pinned to its account (owned.go)
	cloudCode string // a cloud provider's error code for the last send (cloud.go)

	// relayCreds are the client's own credential headers, for a relay
	// key's request (relay.go); nil otherwise.
	relayCreds http.Header
}

// forward serves /v1/*.
func (s *Server) forward(w http.ResponseWriter, r *http.Request) {
	start := s.now()
	x := &exchange{s: s, w: w, r: r, start: start, id: s.ids.Next(start)}
	w.Header().Set(apierr.RequestIDHeader, x.id)
	route, ok := target.AuthorizedFrom(r.Context())
	if !ok {
		var err error
		if route, err = target.Path(r); err != nil {
			RefuseTarget(w, err)
			return
		}
	}
	x.route = route
	path := x.route
	if r.URL.RawQuery != "" {
		path += "?" + r.URL.RawQuery
	}
	x.row = store.Request{
		ID: x.id, TS: store.ToMS(start), Method: r.Method, Path: path,
		Client: s.clientOf(r),
	}
	x.capture = s.rec.wantPayload()
	defer x.releaseBody()
	x.serve()
}

func userAgent(r *http.Request) string {
	ua := r.Header.Get("User-Agent")
	if len(ua) > 128 {
		ua = ua[:128]
	}
	return ua
}

// serve reads the body, then tries the selected accounts in order, at
// most RETRY_ATTEMPTS times (a fresh account at once, one already tried
// after a backoff), until an answer goes to the client; what each answer
// means is classify's to say. A request-scoped 429 (ClassScoped) gets one
// more try, on an account not tried yet. giveUp answers when no try did.
func (x *exchange) serve() {
	s := x.s
	if err := x.readBody(); err != nil {
		return
	}
	var mStart, mEnd int
	x.model, mStart, mEnd = modelField(x.body)
	if !x.applyModelPolicy(mStart, mEnd) {
		return
	}
	x.family = acctstate.Family(x.model)
	x.rt = route{fam: x.family, key: affinityKey(x.r, x.body, x.row.Client), peek: x.route != messagesRoute}
	if s.relayOf != nil && s.relayOf(x.r) {
		x.serveRelay() // the client's own credentials: no account (relay.go)
		return
	}
	sel, pinned := x.selectFor()
	held := pinned // a request waits for an account at most once; a pinned one never
	if len(sel.Candidates) == 0 {
		if pinned {
			x.refuseOwned(sel)
			return
		}
		var ok bool
		if sel, ok = x.hold(sel); !ok {
			return
		}
		held = true
	}
	maxTries := max(s.cfg.RetryAttempts, 1)
	if x.upload != nil {
		maxTries = 1 // a streamed body goes upstream once: nothing is kept to replay
	}
	var (
		last    *attemptFailure
		tries   int
		tried   = make(map[int64]int, len(sel.Candidates))
		repeats int
		scoped  int // request-scoped 429s so far
	)
	for tries < maxTries {
		a := x.next(sel, tried)
		if a == nil && !held && last != nil && last.verdict.Limited {
			// This request found every account limited: wait for one
			// if the hold is on and one comes back soon enough.
			if again := s.pool.pickFor(s.now(), x.rt); len(again.Candidates) == 0 && holdable(again, s.now(), s.cfg.Routing.HoldMax.Std()) {
				var ok bool
				if sel, ok = x.hold(again); !ok {
					return
				}
				held = true
				clear(tried) // the accounts came back: no backoff owed
				maxTries = max(maxTries, tries+1)
				continue
			}
		}
		if a == nil {
			break
		}
		if last != nil && last.verdict.Class == ClassScoped && (scoped > 1 || tried[a.ID] > 0) {
			// A request-scoped 429 is tried once more, on another
			// account only; then the upstream's 429 goes through.
			break
		}
		if tried[a.ID] > 0 {
			// An account this request already tried (nothing fresh is
			// usable): back off first. A fresh account goes at once.
			delay := time.Duration(float64(s.cfg.RetryDelay()) * math.Pow(max(s.cfg.RetryBackoff, 1), float64(repeats)))
			repeats++
			if err := s.sleep(x.r.Context(), delay); err != nil {
				x.clientGone()
				return
			}
		}
		tried[a.ID]++
		tries++
		done, fail := x.attempt(a)
		if done {
			if !x.rt.peek {
				s.pool.stay(x.rt.key, a, s.now())
			}
			return
		}
		if x.r.Context().Err() == nil {
			s.obs.Failover(a.Name, fail.reason())
		}
		if fail != nil {
			last = fail
			if fail.verdict.Class == ClassScoped {
				scoped++
			}
		}
		if x.r.Context().Err() != nil {
			x.clientGone()
			return
		}
	}
	x.giveUp(last)
}

// next returns the first candidate not tried yet that is still usable, or
// else one already tried that is still usable (a 529, another 5xx or a
// connection error does not block an account), or nil.
func (x *exchange) next(sel selection, tried map[int64]int) *account {
	now := x.s.now()
	var again *account
	for _, a := range sel.Candidates {
		if !x.s.pool.usable(a, now, x.family) || !x.serves(a) {
			continue
		}
		if tried[a.ID] == 0 {
			return a
		}
		if again == nil || tried[a.ID] < tried[again.ID] {
			again = a
		}
	}
	return again
}

// reply answers with the proxy's own error and logs the request.
func (x *exchange) reply(r apierr.Reply) {
	apierr.Write(x.w, r)
	x.row.Status, x.row.EndState, x.row.Error = r.Status, EndComplete, r.Message
	x.row.TTFBMS = x.s.now().Sub(x.start).Milliseconds()
	x.finish()
}

// refuse answers when no account can be tried.
func (x *exchange) refuse(sel selection) {
	now := x.s.now()
	switch {
	case len(sel.Reasons) == 0:
		x.reply(apierr.Reply{Status: http.StatusServiceUnavailable, Type: apierr.API, Retry: apierr.RetryNo,
			Message: "claudeflare has no accounts: run `claudeflare accounts add NAME` to add one"})
	case sel.Limited:
		secs := int(math.Ceil(sel.EarliestOK.Sub(now).Seconds()))
		secs = max(secs, 1)
		retry := apierr.RetryUnset
		if secs > 300 {
			retry = apierr.RetryNo
		}
		setUnifiedHeaders(x.w.Header(), sel.Soonest)
		x.reply(apierr.Reply{Status: http.StatusTooManyRequests, Type: apierr.RateLimit, RetryAfter: time.Duration(secs) * time.Second,
			Retry: retry,
			Message: fmt.Sprintf("all claudeflare accounts are rate limited; the first is available again in %s (%s): %s",
				(time.Duration(secs) * time.Second).String(), sel.EarliestOK.UTC().Format(time.RFC3339), strings.Join(sel.Reasons, "; "))})
	default:
		x.reply(apierr.Reply{Status: http.StatusServiceUnavailable, Type: apierr.API, Retry: apierr.RetryNo,
			Message: "no claudeflare account is usable: " + strings.Join(sel.Reasons, "; ")})
	}
}

// setUnifiedHeaders gives the proxy's all-limited 429 the unified
// rate-limit headers of the account that resets soonest, when a unified
// status blocked it (status, reset, representative claim), as Anthropic's
// own 429 would have carried them: clients read them to tell the user when
// the limit ends.
func setUnifiedHeaders(h http.Header, l LimitState) {
	status := l.Reason
	if w, st, ok := strings.Cut(l.Reason, " "); ok && (w == "5h" || w == "7d") {
		status = st
	}
	if !hardStatus(status) || l.Until.IsZero() {
		return
	}
	h.Set(hdrUnifiedStatus, status)
	h.Set(hdrUnifiedReset, strconv.FormatInt(l.Until.Unix(), 10))
	if l.Claim != "" {
		h.Set(hdrUnifiedClaim, l.Claim)
	}
}

// clientGone logs a request whose client went away before an answer.
func (x *exchange) clientGone() {
	x.row.Status, x.row.EndState = store.StatusClientClosed, EndClientCancelled
	if x.row.Error == "" {
		x.row.Error = "client went away"
	}
	x.finish()
}

// giveUp answers after the last try failed.
func (x *exchange) giveUp(last *attemptFailure) {
	if last == nil {
		// No try reached the upstream: every candidate turned out
		// unusable (a refresh failed, or a concurrent request limited it).
		if sel := x.s.pool.pick(x.s.now(), x.family); len(sel.Candidates) == 0 {
			x.refuse(sel)
			return
		}
		msg := "no claudeflare account could get a credential"
		if x.row.Error != "" {
			msg += ": " + x.row.Error
		}
		x.reply(apierr.Reply{Status: http.StatusServiceUnavailable, Type: apierr.API, Message: msg})
		return
	}
	if last.verdict.Limited {
		if sel := x.s.pool.pick(x.s.now(), x.family); len(sel.Candidates) == 0 && sel.Limited {
			x.refuse(sel)
			return
		}
	}
	if last.err != nil {
		x.row.Error = last.err.Error()
		x.reply(apierr.Reply{Status: http.StatusBadGateway, Type: apierr.API, Message: "upstream unreachable: " + last.err.Error()})
		return
	}
	// Pass the upstream's last answer through unchanged.
	h := x.w.Header()
	copyResponseHeader(h, last.header)
	if last.status == http.StatusUnauthorized {
		// No retry of the client's can cure it: the account it reached
		// rests, and Claude Code would otherwise retry for minutes.
		h.Set("X-Should-Retry", "false")
	}
	h.Set("Content-Length", strconv.Itoa(len(last.body)))
	x.w.WriteHeader(last.status)
	x.w.Write(last.body)
	x.row.Status, x.row.EndState = last.status, EndComplete
	x.row.TTFBMS = x.s.now().Sub(x.start).Milliseconds()
	if x.row.Error == "" {
		x.row.Error = fmt.Sprintf("upstream %d on every try", last.status)
	}
	x.finish()
}

// attempt tries one account. done means the client got its answer (or is
// gone and logged); otherwise fail says why the request moves on.
func (x *exchange) attempt(a *account) (done bool, fail *attemptFailure) {
	s := x.s
	s.pool.begin(a)
	ok := false
	defer func() { s.pool.end(a, ok, s.now()) }()
	x.row.Attempts++
	x.row.Account = a.Name
	x.row.AccountsTried = append(x.row.AccountsTried, a.Name)

	secret, err := s.tokens.get(x.r.Context(), a, "")
	x.sent = append(x.sent[:0], secret)
	if err != nil {
		if x.r.Context().Err() != nil {
			return false, &attemptFailure{err: err}
		}
		s.log.Warn("no credential", "request_id", x.id, "account", a.Name, "err", err)
		x.row.Error = "credential for " + a.Name + ": " + err.Error()
		if !errors.Is(err, errNeedsLogin) {
			// The token endpoint is failing: rest the account briefly
			// rather than make every request wait on it.
			s.pool.rest(a, refreshFailCooldown, s.now())
		}
		return false, nil
	}
	resp, err := x.send(a, secret)
	now := s.now()
	v := x.verdict(a, resp, err, a.Kind == store.KindOAuth && x.upload == nil && s.tokens.mayForce(a.ID, now), now)
	if v.Class == ClassRefresh {
		// The access token was refused: one forced refresh (at most one
		// per account per forceInterval), one retry.
		s.tokens.forced(a.ID, now)
		f := x.failure(a, resp, v)
		secret, err = s.tokens.get(x.r.Context(), a, secret)
		x.sent = append(x.sent, secret)
		if err != nil {
			f.verdict = classify(answer{status: resp.StatusCode, header: resp.Header, refreshFailed: true, message: v.Message}, now)
			x.row.Error = a.Name + ": 401 and no new token: " + err.Error()
			s.log.Warn("401 not cured by a refresh", "request_id", x.id, "account", a.Name, "err", err)
			if !errors.Is(err, errNeedsLogin) && !errors.Is(err, errRefreshBlocked) && x.r.Context().Err() == nil {
				s.unauthorized(x.id, a, s.now())
			}
			return false, f
		}
		x.row.Attempts++
		resp, err = x.send(a, secret)
		now = s.now()
		v = x.verdict(a, resp, err, false, now)
	}
	if err != nil {
		if x.r.Context().Err() != nil {
			return false, &attemptFailure{verdict: v, err: err}
		}
		s.log.Warn("upstream request failed", "request_id", x.id, "account", a.Name, "err", err)
		x.row.Error = a.Name + ": " + err.Error()
		return false, &attemptFailure{verdict: v, err: err}
	}
	if v.Learn {
		s.pool.observe(a, v, now)
	}
	switch v.Class {
	case ClassAccount:
		if v.KeyRefused {
			s.markStatus(x.id, a, store.StatusKeyRefused, keyRefusedReason(v), now)
		} else {
			s.unauthorized(x.id, a, now)
		}
	case ClassQuarantine:
		s.markStatus(x.id, a, store.StatusQuarantined, v.Message, now)
	}
	if v.Retry {
		f := x.failure(a, resp, v)
		x.row.Error = fmt.Sprintf("%s: upstream %d", a.Name, f.status)
		s.log.Info("failing over", "request_id", x.id, "account", a.Name, "status", f.status,
			"class", v.Class.String(), "rate_limit", v.Limit.Status, "state", s.pool.stateOf(a, now).String())
		return false, f
	}
	ok = v.Class == ClassOK
	x.noteOwned(a, resp)
	x.stream(a, resp)
	return true, nil
}

// verdict classifies the answer to one send to a: a response, or the
// error that stood for one. The message of an error answer that may name
// its cause (400, 401, 403, 429) is read first, scrubbed of a's
// credentials; the body still reaches whoever reads resp next, unchanged.
func (x *exchange) verdict(a *account, resp *http.Response, err error, canRefresh bool, now time.Time) Verdict {
	if err != nil {
		return classify(answer{err: err}, now)
	}
	ans := answer{status: resp.StatusCode, header: resp.Header, canRefresh: canRefresh, apiKey: a.Kind == store.KindAPIKey, cloud: x.cloudCode}
	if hasMessage(resp.StatusCode) {
		ans.message = peekMessage(resp, x.scrubber(a))
	}
	return classify(ans, now)
}

// peekMessage reads the error message of an answer whose status may be
// told apart by it (400, 401, 403, 429), scrubbed by sc, and puts the
// bytes it read back in front of the body.
func peekMessage(resp *http.Response, sc *scrubber) string {
	head, err := io.ReadAll(io.LimitReader(resp.Body, failureBodyMax))
	resp.Body = struct {
		io.Reader
		io.Closer
	}{io.MultiReader(bytes.NewReader(head), &errReader{err}, resp.Body), resp.Body}
	_, msg := errorMessage(head)
	if msg == "" {
		return ""
	}
	return string(sc.bytes([]byte(msg)))
}

// hasMessage reports whether an answer's status is one classify tells
// apart by the error message.
func hasMessage(status int) bool {
	switch status {
	case http.StatusBadRequest, http.StatusUnauthorized, http.StatusForbidden, http.StatusTooManyRequests:
		return true
	}
	return false
}

// errReader gives err once (nil: nothing), so that a read error met while
// peeking reaches the relay where it would have.
type errReader struct{ err error }

func (r *errReader) Read([]byte) (int, error) {
	if r.err == nil {
		return 0, io.EOF
	}
	return 0, r.err
}

// failure keeps what a failed answer said (bounded, scrubbed), to hand to
// the client should no other try do better.
func (x *exchange) failure(a *account, resp *http.Response, v Verdict) *attemptFailure {
	f := &attemptFailure{verdict: v, status: resp.StatusCode}
	f.body, _ = io.ReadAll(io.LimitReader(resp.Body, failureBodyMax))
	resp.Body.Close()
	sc := x.scrubber(a)
	f.header, f.body = sc.header(resp.Header), sc.bytes(f.body)
	return f
}

// send makes one upstream request with a's credentials, to the upstream
// base URL plus exactly the canonical path the guard authorized.
// A nil a is a relay request: it goes with the client's own credentials
// (relay.go).
func (x *exchange) send(a *account, secret string) (*http.Response, error) {
	if a != nil && cloud.Is(a.Kind) {
		return x.sendCloud(a, secret)
	}
	up := x.s.upstream
	base := strings.TrimRight(up.EscapedPath(), "/")
	u := *up
	u.Path = strings.TrimRight(up.Path, "/") + x.r.URL.Path
	u.RawPath = base + x.route
	u.RawQuery = x.r.URL.RawQuery
	var body io.Reader = http.NoBody
	if len(x.body) > 0 {
		// The one copy of the body, read in place; each reader holds the
		// buffer until the transport closes it (bufpool.go).
		body = newBodyReader(x.buf, x.body)
	}
	if x.upload != nil {
		body = x.upload
	}
	req, err := http.NewRequestWithContext(x.r.Context(), x.r.Method, u.String(), body)
	br, _ := body.(*bodyReader)
	if err != nil {
		if br != nil {
			br.Close()
		}
		return nil, fmt.Errorf("build upstream request: %w", err)
	}
	if br != nil {
		// The transport rewinds with it to resend on a fresh connection
		// (a reader a redirect asks for and never closes only keeps the
		// buffer from its pool).
		buf, b := x.buf, x.body
		req.GetBody = func() (io.ReadCloser, error) { return newBodyReader(buf, b), nil }
	}
	if got := req.URL.EscapedPath(); got != base+x.route {
		// Cannot happen for a canonical path; never send anything else.
		if br != nil {
			br.Close()
		}
		return nil, fmt.Errorf("build upstream request: path %q is not the authorized %q", got, base+x.route)
	}
	req.Header = outboundHeader(x.r.Header)
	if a == nil {
		for k, v := range x.relayCreds {
			req.Header[k] = v
		}
	} else {
		setCredentials(req.Header, a.Kind, secret)
	}
	req.ContentLength = int64(len(x.body))
	if x.upload != nil {
		req.ContentLength = x.uploadLen
	}
	resp, err := x.s.client.Do(req)
	x.row.UpstreamRequestID = upstreamRequestID(resp)
	if ue, ok := err.(*url.Error); ok {
		// It names the URL: not its query, which may hold a secret and
		// would reach the log and the row.
		u.RawQuery = ""
		ue.URL = u.Redacted()
	}
	return resp, err
}

// flushWriter is what streaming needs of the ResponseWriter.
type flushWriter interface {
	io.Writer
	Flush() error
}

// scrubber scrubs what the upstream said to a's request: the credentials
// sent with it and the ones the account holds.
func (x *exchange) scrubber(a *account) *scrubber {
	if a == nil {
		return newScrubber(x.sent) // a relay request: the client's own credentials
	}
	return newScrubber(append(x.s.tokens.known(a.ID), x.sent...))
}

// finish hands the row (and payload) to the recorder.
func (x *exchange) finish() {
	x.row.DurationMS = x.s.now().Sub(x.start).Milliseconds()
	x.logDetails()
	rec := &record{row: x.row, pay: x.payload}
	if rec.pay == nil && x.capture && x.row.Status != 0 {
		// The proxy's own answers are captured too (headers and request).
		rec.pay = &capture{method: x.r.Method, path: x.row.Path, reqHeader: x.r.Header, reqBody: x.body,
			status: x.row.Status, respHeader: x.w.Header().Clone()}
	}
	if rec.pay != nil && rec.pay.reqBody != nil && x.buf != nil {
		// The capture reads the body in place: the buffer is held until
		// the recorder is done with it (recorder.release).
		x.buf.acquire()
		rec.pay.reqBuf = x.buf
	}
	x.s.obs.Request(x.row)
	x.s.rec.submit(rec)
}
