package access

import (
	"encoding/base64"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/claudeflare/claudeflare/internal/apierr"
	"github.com/claudeflare/claudeflare/requestlog"
	"github.com/claudeflare/claudeflare/store"
)

// GET /api/requests: the request log with the filters of `requests list`
// (since, until, account, status, limit), paged by cursor.
//
// Pages walk back in time: the first page holds the newest rows that
// match, and next_cursor (present only when older rows match) asks for the
// rows just before them. Within a page the rows are oldest first (newest
// last), as this route has always answered. The cursor is the position of
// the page's oldest row (its timestamp and insertion sequence), so rows
// written while a client pages never shift a page: each row is returned
// once. A cursor is meant for the same filters it came with.

// requestsParams are the query parameters /api/requests accepts.
var requestsParams = []string{"since", "until", "account", "status", "limit", "cursor"}

// apiRequests answers {"requests": [...], "next_cursor": "..."|null}.
func (g *Guard) apiRequests(w http.ResponseWriter, r *http.Request) {
	if g.logDB == nil {
		reject(w, http.StatusServiceUnavailable, apierr.API, "claudeflare: the request log is not available")
		return
	}
	f, err := requestsFilter(r.URL.Query(), g.now())
	if err != nil {
		reject(w, http.StatusBadRequest, apierr.InvalidRequest, "claudeflare: "+err.Error())
		return
	}
	limit := f.Limit
	f.Limit++ // one more row says whether an older page exists
	rows := make([]*store.Request, 0, f.Limit)
	err = requestlog.List(r.Context(), g.logDB, f, func(q *store.Request) error {
		c := *q
		rows = append(rows, &c)
		return nil
	})
	if err != nil {
		g.internalError(w, r, "read request log", err)
		return
	}
	var next *string
	if len(rows) > limit {
		// Oldest first: the extra row is the first; the page starts after it.
		rows = rows[len(rows)-limit:]
		c := encodeCursor(rows[0].TS, rows[0].Seq)
		next = &c
	}
	out := make([]requestlog.RequestLine, len(rows))
	for i, q := range rows {
		out[i] = requestlog.NewRequestLine(q)
	}
	writeJSON(w, http.StatusOK, map[string]any{"requests": out, "next_cursor": next})
}

// requestsFilter reads the query; an error names the bad parameter.
func requestsFilter(q url.Values, now time.Time) (requestlog.Filter, error) {
	f := requestlog.Filter{Limit: defaultRequestsLimit}
	for k, v := range q {
		known := false
		for _, p := range requestsParams {
			known = known || k == p
		}
		if !known {
			return f, fmt.Errorf("unknown parameter %q (want one of %s)", k, strings.Join(requestsParams, ", "))
		}
		if len(v) > 1 {
			return f, fmt.Errorf("%s: given more than once", k)
		}
	}
	var err error
	if s := q.Get("since"); s != "" {
		if f.Since, err = requestlog.ParseWhen(s, now); err != nil {
			return f, fmt.Errorf("since: %w", err)
		}
	}
	if s := q.Get("until"); s != "" {
		if f.Until, err = requestlog.ParseWhen(s, now); err != nil {
			return f, fmt.Errorf("until: %w", err)
		}
	}
	if !f.Since.IsZero() && !f.Until.IsZero() && f.Until.Before(f.Since) {
		return f, fmt.Errorf("until: before since")
	}
	f.Account = q.Get("account")
	if s := q.Get("status"); s != "" {
		if f.StatusMin, f.StatusMax, err = requestlog.ParseStatus(s); err != nil {
			return f, fmt.Errorf("status: %w", err)
		}
	}
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			return f, fmt.Errorf("limit: %q is not a positive integer", s)
		}
		f.Limit = min(n, maxRequestsLimit)
	}
	if s := q.Get("cursor"); s != "" {
		if f.BeforeTS, f.BeforeSeq, err = decodeCursor(s); err != nil {
			return f, err
		}
	}
	return f, nil
}

// cursorPrefix versions the cursor, so that a later form can be told apart.
const cursorPrefix = "r1:"

// encodeCursor is the opaque cursor of the row (ts, seq).
func encodeCursor(ts, seq int64) string {
	return base64.RawURLEncoding.EncodeToString(fmt.Appendf(nil, "%s%d:%d", cursorPrefix, ts, seq))
}

func decodeCursor(s string) (ts, seq int64, err error) {
	// Not quoted back: a cursor is opaque and may be long.
	bad := fmt.Errorf("cursor: not a cursor this API gave out (pass next_cursor unchanged)")
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return 0, 0, bad
	}
	rest, ok := strings.CutPrefix(string(b), cursorPrefix)
	a, c, ok2 := strings.Cut(rest, ":")
	if !ok || !ok2 {
		return 0, 0, bad
	}
	ts, err1 := strconv.ParseInt(a, 10, 64)
	seq, err2 := strconv.ParseInt(c, 10, 64)
	if err1 != nil || err2 != nil || seq < 1 {
		return 0, 0, bad
	}
	return ts, seq, nil
}
