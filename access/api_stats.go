package access

import (
	"net/http"
	"time"

	"github.com/claudeflare/claudeflare/config"
	"github.com/claudeflare/claudeflare/internal/apierr"
	"github.com/claudeflare/claudeflare/requestlog"
)

// GET /api/stats?by=account|model|client|hour|day&since=D: the request
// log's totals since D (default 24h) grouped as asked (default by
// account), as `stats --by` prints them:
//
//	{"since": "...", "by": "day", "groups": [GroupLine...], "total": GroupLine}
//
// and, by account, also the per-account lines with their rate-limit
// state and the pool's ("accounts", "pool"), as this route always
// answered. By client each group also has the key's "budgets" with
// their use in the current period, as GET /api/keys shows them ([] for
// none, or a client that is no key). Hours and days are UTC buckets, each from since to now, the
// empty ones included. The cost is at the API's list prices: for a
// subscription account the API-equivalent value ("subscription_cost"
// says whether the period has such a cost).
func (g *Guard) apiStats(w http.ResponseWriter, r *http.Request) {
	if g.logDB == nil {
		reject(w, http.StatusServiceUnavailable, apierr.API, "claudeflare: the request log is not available")
		return
	}
	q := r.URL.Query()
	since := defaultStatsSince
	if s := q.Get("since"); s != "" {
		d, err := config.ParseDuration(s)
		if err != nil {
			reject(w, http.StatusBadRequest, apierr.InvalidRequest, "claudeflare: since: "+err.Error())
			return
		}
		since = d
	}
	by := q.Get("by")
	if by == "" {
		by = requestlog.ByAccount
	}
	if err := requestlog.CheckGrouping(by); err != nil {
		reject(w, http.StatusBadRequest, apierr.InvalidRequest, "claudeflare: by: "+err.Error())
		return
	}
	now := g.now()
	from := now.Add(-since)
	grp, err := requestlog.ComputeGroups(r.Context(), g.logDB, requestlog.GroupsOptions{Since: from, By: by, Vault: g.vaultDB, Now: func() time.Time { return now }})
	if err != nil {
		g.internalError(w, r, "read stats", err)
		return
	}
	groups, total := grp.Lines()
	var groupsOut any = groups
	if by == requestlog.ByClient {
		groupsOut = clientGroups(groups, g.Budgets())
	}
	out := map[string]any{
		"since":             from.UTC().Format(time.RFC3339),
		"by":                by,
		"groups":            groupsOut,
		"total":             total,
		"subscription_cost": grp.Subscription,
	}
	if by == requestlog.ByAccount {
		st, err := requestlog.ComputeStats(r.Context(), g.logDB, requestlog.StatsOptions{Since: from, Vault: g.vaultDB, Now: g.now})
		if err != nil {
			g.internalError(w, r, "read stats", err)
			return
		}
		accts, pool := st.Lines()
		if accts == nil {
			accts = []requestlog.StatsLine{}
		}
		out["accounts"], out["pool"] = accts, pool
	}
	writeJSON(w, http.StatusOK, out)
}
