package access

import (
	"net/http"
	"regexp"

	"github.com/claudeflare/claudeflare/config"
	"github.com/claudeflare/claudeflare/internal/apierr"
	"github.com/claudeflare/claudeflare/requestlog"
)

// GET /api/status (dashboard.view): the status view of `claudeflare
// status` (requestlog.Status): each account's state, 5h/7d utilization
// and resets, the live sessions on it, and the pool's time to exhaustion.
// ?session=HASH (the request log's 12-hex session hash) adds that
// session's latest account, for `claudeflare statusline`.

// sessionHashRE is the request log's session hash: 12 lowercase hex digits.
var sessionHashRE = regexp.MustCompile(`^[0-9a-f]{12}$`)

func (g *Guard) apiStatus(w http.ResponseWriter, r *http.Request) {
	opts := requestlog.StatusOptions{Now: g.now(), MaxUtilization: g.maxUtil}
	if g.sessions != nil {
		opts.Sessions = g.sessions()
	}
	if s := r.URL.Query().Get("session"); s != "" {
		if !sessionHashRE.MatchString(s) {
			reject(w, http.StatusBadRequest, apierr.InvalidRequest, "claudeflare: session: want the request log's 12 hex digit session hash")
			return
		}
		if g.logDB == nil {
			reject(w, http.StatusServiceUnavailable, apierr.API, "claudeflare: the request log is not available")
			return
		}
		opts.SessionHash = s
	}
	st, err := requestlog.ComputeStatus(r.Context(), g.vaultDB, g.logDB, opts)
	if err != nil {
		g.internalError(w, r, "read status", err)
		return
	}
	writeJSON(w, http.StatusOK, st)
}

// statusMaxUtil is where an account counts as full for /api/status's
// estimate under cfg (routing.max_utilization is a restart setting).
func statusMaxUtil(cfg *config.Config) float64 { return requestlog.StatusMaxUtilization(cfg) }
