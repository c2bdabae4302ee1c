package access

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/claudeflare/claudeflare/config"
	"github.com/claudeflare/claudeflare/internal/apierr"
	"github.com/claudeflare/claudeflare/requestlog"
)

// GET /api/series?since=24h&step=30m (dashboard.view): the request log as
// a time series for the dashboard's charts:
//
//	{"since": T, "until": T, "step": "30m", "step_seconds": 1800,
//	 "buckets": [{"start": T, "requests", "errors", "p50_ms", "p95_ms",
//	   "input_tokens", "output_tokens", "cache_read_input_tokens",
//	   "cache_creation_input_tokens", "tokens", "cost_usd"|null}, ...]}
//
// Buckets are aligned to multiples of step since the Unix epoch (UTC),
// oldest first, every one from since to now, empty ones included; at most
// requestlog.MaxSeriesBuckets. The default step gives about 48 buckets.

const defaultSeriesSince = 24 * time.Hour

var seriesParams = []string{"since", "step"}

func (g *Guard) apiSeries(w http.ResponseWriter, r *http.Request) {
	if g.logDB == nil {
		reject(w, http.StatusServiceUnavailable, apierr.API, "claudeflare: the request log is not available")
		return
	}
	since, step, err := seriesQuery(r.URL.Query())
	if err != nil {
		reject(w, http.StatusBadRequest, apierr.InvalidRequest, "claudeflare: "+err.Error())
		return
	}
	now := g.now()
	from := now.Add(-since)
	buckets, err := requestlog.Series(r.Context(), g.logDB, from, now.Add(time.Millisecond), step)
	if err != nil {
		if strings.HasPrefix(err.Error(), "step:") {
			reject(w, http.StatusBadRequest, apierr.InvalidRequest, "claudeflare: "+err.Error())
			return
		}
		g.internalError(w, r, "read request series", err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"since":        from.UTC().Format(time.RFC3339),
		"until":        now.UTC().Format(time.RFC3339),
		"step":         config.Duration(step).String(),
		"step_seconds": int64(step / time.Second),
		"buckets":      buckets,
	})
}

// seriesQuery reads since (default 24h) and step (default since/48,
// rounded up to a whole minute); an error names the bad parameter.
func seriesQuery(q url.Values) (since, step time.Duration, err error) {
	for k, v := range q {
		known := false
		for _, p := range seriesParams {
			known = known || k == p
		}
		if !known {
			return 0, 0, fmt.Errorf("unknown parameter %q (want one of %s)", k, strings.Join(seriesParams, ", "))
		}
		if len(v) > 1 {
			return 0, 0, fmt.Errorf("%s: given more than once", k)
		}
	}
	since = defaultSeriesSince
	if s := q.Get("since"); s != "" {
		d, err := config.ParseDuration(s)
		if err != nil || d <= 0 {
			return 0, 0, fmt.Errorf("since: %q is not a positive duration (e.g. 24h, 7d)", s)
		}
		since = d
	}
	step = (since/48 + time.Minute - 1).Truncate(time.Minute)
	if s := q.Get("step"); s != "" {
		d, err := config.ParseDuration(s)
		if err != nil || d < time.Second {
			return 0, 0, fmt.Errorf("step: %q is not a duration of at least 1s (e.g. 5m, 1h, 1d)", s)
		}
		step = d
	}
	return since, step, nil
}
