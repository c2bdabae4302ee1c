package access

import (
	"fmt"
	"net/http"
	"strconv"

	"github.com/claudeflare/claudeflare/internal/apierr"
	"github.com/claudeflare/claudeflare/proxy"
	"github.com/claudeflare/claudeflare/requestlog"
	"github.com/claudeflare/claudeflare/store"
)

// GET /api/requests/{id}/payload (payloads.view: admin only): one
// request's captured payload, the line `claudeflare payload export --id
// ID` prints ({"id","timestamp","account","status","request":{...},
// "response":{...},"truncated"}), opened with the vault's payload key and
// redacted the same way: credentials in headers are "[REDACTED]" (as
// captured), and the whole answer passes the redactors once more
// (the built-in patterns and log.redact), since a stream's final message
// joins pieces that were each redacted alone. A request that is not in the
// log, or has no payload, is a 404 saying which.

// maxPayloadAnswer bounds the answer: a payload is at most
// log.payload_max_bytes per side, but a hostile row is not trusted.
const maxPayloadAnswer = 64 << 20

func (g *Guard) apiPayload(w http.ResponseWriter, r *http.Request) {
	if g.logDB == nil {
		reject(w, http.StatusServiceUnavailable, apierr.API, "claudeflare: the request log is not available")
		return
	}
	if g.tools.Vault == nil {
		reject(w, http.StatusServiceUnavailable, apierr.API, "claudeflare: payloads cannot be opened here (no vault key)")
		return
	}
	id := r.PathValue("id")
	if id == "" || len(id) > 200 {
		reject(w, http.StatusBadRequest, apierr.InvalidRequest, "claudeflare: id: not a request id")
		return
	}
	ctx := r.Context()
	var line []byte
	err := requestlog.Export(ctx, g.logDB, requestlog.Filter{ID: id}, g.tools.Vault.OpenPayload, func(row *requestlog.Row) error {
		line = row.AppendJSON(line[:0])
		if len(line) > maxPayloadAnswer {
			return fmt.Errorf("payload of request %s: larger than %d bytes", id, maxPayloadAnswer)
		}
		return nil
	})
	if err != nil {
		g.internalError(w, r, "read payload", err)
		return
	}
	if line == nil {
		found := false
		err := requestlog.List(ctx, g.logDB, requestlog.Filter{ID: id}, func(*store.Request) error { found = true; return nil })
		switch {
		case err != nil:
			g.internalError(w, r, "read request log", err)
		case !found:
			reject(w, http.StatusNotFound, apierr.NotFound, fmt.Sprintf("claudeflare: no request with id %s in the request log", strconv.Quote(id)))
		default:
			reject(w, http.StatusNotFound, apierr.NotFound, fmt.Sprintf("claudeflare: request %s has no captured payload (log.payloads, log.body_paths, or removed by cleanup)", strconv.Quote(id)))
		}
		return
	}
	body := proxy.RedactFunc(g.policy.Load().redactors)(line)
	body = append(body, '\n')
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(http.StatusOK)
	w.Write(body)
}
