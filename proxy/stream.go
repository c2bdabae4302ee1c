package proxy

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"

	"github.com/claudeflare/claudeflare/store"
)

var copyBufPool = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// relay is one upstream answer on its way to the client.
type relay struct {
	resp   *http.Response
	header http.Header // the answer's headers as the client gets them
	sc     *scrubber   // set for an error answer: it may quote the credential
	isSSE  bool
	sse    *sseTap // reads usage and errors off an event stream
	js     *jsonTap
	capt   *capBuf // the body as the client got it, for the payload log

	readErr, writeErr error
}

// stream sends the upstream's answer to the client: status and headers
// unchanged, then the body, flushed read by read for event streams (each
// read returns what the upstream flushed, so events reach the client as
// they arrive). A bounded tap reads usage on the way; after the first
// byte nothing is retried.
func (x *exchange) stream(a *account, resp *http.Response) {
	defer resp.Body.Close()
	r := x.openRelay(a, resp)
	defer r.close()
	x.copyBody(&r)
	x.setUsage(r.usage())
	x.endState(a, &r)
	if x.capture {
		x.pay(resp, r.header, r.capt)
	}
	x.finish()
	if r.readErr != nil && r.writeErr == nil && x.r.Context().Err() == nil {
		// The upstream broke off: make sure the client sees an
		// incomplete response rather than a clean end.
		panic(http.ErrAbortHandler)
	}
}

// openRelay sends the status line and headers and sets up the taps.
func (x *exchange) openRelay(a *account, resp *http.Response) relay {
	s := x.s
	r := relay{resp: resp, header: resp.Header}
	h := x.w.Header()
	if resp.StatusCode >= 400 {
		// An error answer may quote the credential: scrub it.
		r.sc = x.scrubber(a)
		r.header = r.sc.header(resp.Header)
	}
	copyResponseHeader(h, r.header)
	if r.sc != nil {
		h.Del("Content-Length") // the scrubbed body may be shorter
	}
	ct := resp.Header.Get("Content-Type")
	r.isSSE = strings.HasPrefix(ct, "text/event-stream")
	x.row.Status = resp.StatusCode
	x.row.Streamed = r.isSSE

	if x.capture && s.rec.wantBodies(x.route) {
		r.capt = getCapBuf(int(min(s.cfg.Log.PayloadMaxBytes, 1<<30)))
	}
	if r.isSSE {
		r.sse = getSSETap()
	} else if strings.Contains(ct, "json") {
		r.js = getJSONTap()
	}
	x.w.WriteHeader(resp.StatusCode)
	return r
}

// close gives the taps back to their pools.
func (r *relay) close() {
	if r.sse != nil {
		putSSETap(r.sse)
	}
	if r.js != nil {
		putJSONTap(r.js)
	}
}

// copyBody copies the body to the client, through the scrubber and the
// taps, until the upstream ends it or either side fails.
func (x *exchange) copyBody(r *relay) {
	rc := http.NewResponseController(x.w)
	// The status line goes out now, whatever the body: should the
	// upstream break off mid-body, the client must see an answer that
	// breaks off, not a connection closed before any answer (which a
	// small JSON body still sitting in the write buffer would give).
	rc.Flush()
	sc, sse, js, capt := r.sc, r.sse, r.js, r.capt
	first := true
	bp := copyBufPool.Get().(*[]byte)
	buf := *bp
	for {
		n, err := r.resp.Body.Read(buf)
		if n > 0 {
			p := buf[:n]
			if first {
				x.row.TTFBMS = x.s.now().Sub(x.start).Milliseconds()
				first = false
			}
			out := p
			if sc != nil {
				out = sc.next(p)
			}
			if _, werr := x.w.Write(out); werr != nil {
				r.writeErr = werr
			} else if r.isSSE {
				if ferr := rc.Flush(); ferr != nil {
					r.writeErr = ferr
				}
			}
			if sse != nil {
				sse.Write(p)
			} else if js != nil {
				js.Write(p)
			}
			if capt != nil {
				capt.Write(out)
			}
			if r.writeErr != nil {
				break
			}
		}
		if err != nil {
			if err != io.EOF {
				r.readErr = err
			}
			if sc != nil {
				tail := sc.end()
				if _, werr := x.w.Write(tail); werr != nil {
					r.writeErr = werr
				}
				if capt != nil {
					capt.Write(tail)
				}
			}
			break
		}
	}
	copyBufPool.Put(bp)
	if first {
		x.row.TTFBMS = x.s.now().Sub(x.start).Milliseconds()
	}
}

// usage is what the taps read of the answer's token usage.
func (r *relay) usage() Usage {
	var u Usage
	switch {
	case r.sse != nil:
		r.sse.Close()
		u = r.sse.Usage
	case r.js != nil:
		u, _ = r.js.Result()
	}
	return u
}

func (x *exchange) setUsage(u Usage) {
	x.row.Model = u.Model
	x.row.InputTokens, x.row.OutputTokens = u.InputTokens, u.OutputTokens
	x.row.CacheReadInputTokens, x.row.CacheCreationInputTokens = u.CacheReadInputTokens, u.CacheCreationInputTokens
	x.row.CacheCreation5mInputTokens, x.row.CacheCreation1hInputTokens = u.CacheCreation5m, u.CacheCreation1h
	x.row.ServerToolUse = nil
	if u.ServerToolUse != "" {
		st := u.ServerToolUse
		x.row.ServerToolUse = &st
	}
}

// endState logs how the answer ended; an error event inside it tells the
// account's limit state too.
func (x *exchange) endState(a *account, r *relay) {
	s, sse, status := x.s, r.sse, r.resp.StatusCode
	switch {
	case r.writeErr != nil || (r.readErr != nil && x.r.Context().Err() != nil):
		x.row.Status, x.row.EndState = store.StatusClientClosed, EndClientCancelled
		x.row.Error = "client went away mid-response"
	case r.readErr != nil:
		x.row.EndState, x.row.Error = EndUpstreamError, "upstream read: "+r.readErr.Error()
	case sse != nil && sse.ErrorType != "":
		msg := cleanMessage(string(x.scrubber(a).bytes([]byte(sse.ErrorMsg))))
		x.row.EndState, x.row.Error = EndUpstreamError, "in-stream "+sse.ErrorType+": "+msg
		// The client got a 200 and then an error: say so where an
		// operator looks, with what ties it to the request and account.
		s.log.Warn("in-stream error event", "request_id", x.id, "account", x.row.Account,
			"error_type", sse.ErrorType, "message", msg)
		now := s.now()
		if v := classify(answer{sent: true, event: sse.ErrorType}, now); v.Learn && a != nil {
			s.pool.observe(a, v, now)
		}
	case sse != nil && !sse.Stopped && status < 300:
		x.row.EndState, x.row.Error = EndTruncated, "stream ended without message_stop"
	default:
		x.row.EndState = EndComplete
		x.row.Error = ""
	}
	if x.row.EndState == EndComplete && status >= 400 {
		x.row.Error = fmt.Sprintf("upstream %d", status)
	}
}

func (x *exchange) pay(resp *http.Response, respHeader http.Header, capt *capBuf) {
	x.payload = &capture{
		method: x.r.Method, path: x.row.Path, reqHeader: x.r.Header, reqBody: x.body,
		status: resp.StatusCode, respHeader: respHeader, respBody: capt,
	}
}
