package proxy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"

	"github.com/claudeflare/claudeflare/config"
	"github.com/claudeflare/claudeflare/internal/apierr"
	"github.com/claudeflare/claudeflare/store"
)

// The request body: read whole before the first try (it is replayed on
// failover), within a size limit, a read timeout and the server's budget
// of body bytes in flight.

// bodyInitialCap is the most a body buffer starts with, whatever the
// Content-Length says: memory follows the bytes that arrived, never a
// client's promise.
const bodyInitialCap = 64 << 10

// errBodyBudget is a body refused because all bodies in flight together
// hold server.max_inflight_body_bytes.
var errBodyBudget = errors.New("request bodies in flight hold server.max_inflight_body_bytes")

// readBody reads the whole request body (it is replayed on failover)
// within server.body_read_timeout, into a buffer that grows as bytes
// arrive, each growth reserved first in the server's body budget. The
// buffers come from the size-class pools (bufpool.go); the body is kept
// once, in x.buf, and every upstream try and the payload capture read
// that one copy.
func (x *exchange) readBody() error {
	limit := x.s.cfg.Server.MaxBodyBytes
	if limit <= 0 {
		limit = config.Default().Server.MaxBodyBytes
	}
	if x.r.ContentLength > limit {
		if createsOwned(x.r.Method, x.route) {
			x.streamBody(nil, limit)
			return nil
		}
		x.tooLarge(limit)
		return errors.New("body too large")
	}
	if x.r.Body == nil || x.r.Body == http.NoBody {
		return nil
	}
	// A real deadline on the connection (or HTTP/2 stream): the injected
	// clock does not drive sockets. Cleared once the body is in, so a
	// long stream back is never cut by it; left in place when reading
	// fails, so that net/http's own drain of an unread body is bounded
	// too.
	rc := http.NewResponseController(x.w)
	deadline := false
	if d := x.s.cfg.Server.BodyReadTimeout.Std(); d > 0 {
		deadline = rc.SetReadDeadline(time.Now().Add(d)) == nil
	}
	ceiling := limit + 1 // one more byte says "too large"
	want := int64(bodyInitialCap)
	if n := x.r.ContentLength; n >= 0 {
		want = min(want, n+1) // +1 so the EOF read does not grow it
	}
	var buf []byte // (*x.buf.box)[:len:usable cap]
	var err error
	for {
		if len(buf) == cap(buf) {
			if int64(len(buf)) >= ceiling {
				break
			}
			var ok bool
			if buf, ok = x.growBody(buf, want, ceiling); !ok {
				x.w.Header().Set("Connection", "close")
				x.bodyBudgetFull()
				return errBodyBudget
			}
		}
		var n int
		n, err = x.r.Body.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err != nil {
			break
		}
	}
	if err == io.EOF {
		err = nil
	}
	if err != nil {
		x.bodyReadFailed(err)
		return err
	}
	if int64(len(buf)) > limit {
		if createsOwned(x.r.Method, x.route) {
			if deadline {
				rc.SetReadDeadline(time.Time{})
			}
			// The upload may read the prefix until the transport is
			// done with it, after this exchange: it is not pooled again.
			x.buf = nil
			x.streamBody(buf, limit)
			return nil
		}
		x.w.Header().Set("Connection", "close")
		x.tooLarge(limit)
		return errors.New("body too large")
	}
	if deadline {
		rc.SetReadDeadline(time.Time{})
	}
	x.body = buf
	return nil
}

// growBody makes room for more of the body: the capacity doubles (up to
// ceiling and the Content-Length), rounded up to a pool's size class; the
// growth (by what the buffers pin) is reserved first in the server's body
// budget; false when the budget is full. The smaller buffer goes back to
// its pool at once.
func (x *exchange) growBody(buf []byte, want, ceiling int64) ([]byte, bool) {
	next := want
	if cap(buf) > 0 {
		next = min(int64(cap(buf))*2, ceiling)
		if n := x.r.ContentLength; n >= 0 && int64(cap(buf)) <= n {
			next = min(next, n+1)
		}
	}
	var old int64 // what the current buffer pins
	if x.buf != nil {
		old = int64(cap(*x.buf.box))
	}
	pinned := int64(bufCap(int(next)))
	if !x.s.bodies.reserve(pinned - old) {
		return buf, false
	}
	x.held += pinned - old
	box := getBuf(int(next))
	nb := append((*box)[:0], buf...)
	nb = nb[:len(buf):next] // reads stop at next, whatever the class's size
	if x.buf != nil {
		x.buf.release()
	}
	x.buf = newBodyBuf(box)
	return nb, true
}

// bodyReadFailed answers and logs a request whose body could not be read.
func (x *exchange) bodyReadFailed(err error) {
	x.row.Status, x.row.EndState, x.row.Error = store.StatusClientClosed, EndClientCancelled, "read request body: "+err.Error()
	// What is left of the body is not read: close the connection
	// after the answer rather than parse it as a next request.
	x.w.Header().Set("Connection", "close")
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded):
		msg := fmt.Sprintf("claudeflare: the request body did not arrive within server.body_read_timeout (%s)", x.s.cfg.Server.BodyReadTimeout.Std())
		apierr.Write(x.w, apierr.Reply{Status: http.StatusRequestTimeout, Type: apierr.InvalidRequest, Message: msg})
		x.row.Status, x.row.EndState, x.row.Error = http.StatusRequestTimeout, EndComplete, msg
	case x.r.Context().Err() == nil:
		apierr.Write(x.w, apierr.Reply{Status: http.StatusBadRequest, Type: apierr.InvalidRequest, Message: "could not read the request body"})
		x.row.Status, x.row.EndState = http.StatusBadRequest, EndComplete
	}
	x.finish()
}

// releaseBody gives the body's memory back to the budget once the
// exchange is over (the recorder may still hold the bytes briefly; its
// queue bounds the bytes it holds on its own), and lets go of the
// exchange's reference to the buffer: it goes back to its pool once the
// upstream requests and the capture are done with it too.
func (x *exchange) releaseBody() {
	if x.held > 0 {
		x.s.bodies.release(x.held)
		x.held = 0
	}
	x.body = nil
	x.buf.release()
	x.buf = nil
}

func (x *exchange) bodyBudgetFull() {
	x.s.log.Debug("request body refused: body budget full", "request_id", x.id, "in_flight_bytes", x.s.bodies.used.Load())
	x.reply(apierr.Reply{Status: http.StatusServiceUnavailable, Type: apierr.Overloaded, Retry: apierr.RetryYes, RetryAfter: time.Second,
		Message: "claudeflare is holding as many request bodies as server.max_inflight_body_bytes allows; retry shortly"})
}

func (x *exchange) tooLarge(limit int64) {
	msg := fmt.Sprintf("Request body exceeds claudeflare's server.max_body_bytes (%d bytes).", limit)
	x.reply(apierr.Reply{Status: http.StatusRequestEntityTooLarge, Type: apierr.TooLarge, Message: msg, Retry: apierr.RetryNo})
}

// streamBody sends a batch or file upload bigger than server.max_body_bytes
// upstream as it arrives (what was read already, prefix, first), so that
// memory stays bounded: it is not kept, hence tried on one account only.
// The upload takes as long as the client and the upstream take; no
// read deadline cuts it.
func (x *exchange) streamBody(prefix []byte, limit int64) {
	x.s.log.Debug("streaming a request body over server.max_body_bytes", "request_id", x.id, "limit", limit, "content_length", x.r.ContentLength)
	x.upload = io.MultiReader(bytes.NewReader(prefix), x.r.Body)
	x.uploadLen = x.r.ContentLength
}
