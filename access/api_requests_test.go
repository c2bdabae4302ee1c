package access_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/claudeflare/claudeflare/store"
)

// requestsPage is the answer of GET /api/requests.
type requestsPage struct {
	Requests []struct {
		ID        string `json:"id"`
		Timestamp string `json:"timestamp"`
		Account   string `json:"account"`
		Status    int    `json:"status"`
	} `json:"requests"`
	NextCursor *string `json:"next_cursor"`
}

func (d *daemonStack) requestsPage(key string, q url.Values) requestsPage {
	d.t.Helper()
	r := d.do("GET", "/api/requests?"+q.Encode(), "", "x-api-key", key)
	expectStatus(d.t, r, 200, "")
	var p requestsPage
	if err := json.Unmarshal([]byte(r.body), &p); err != nil {
		d.t.Fatalf("not a page: %s", r.body)
	}
	return p
}

// insert writes rows into the daemon's request log, as the recorder would.
func (d *daemonStack) insert(rows ...store.Request) {
	d.t.Helper()
	if err := store.InsertRequests(context.Background(), d.ldb, rows, nil); err != nil {
		d.t.Fatal(err)
	}
}

// logRow is a request at ts with status and account; ids say which.
func logRow(id string, ts time.Time, status int, account string) store.Request {
	return store.Request{ID: id, TS: ts.UnixMilli(), Method: "POST", Path: "/v1/messages", Model: "claude-sonnet-4-5",
		Account: account, Status: status, Attempts: 1, EndState: "complete"}
}

// GET /api/requests against the real daemon: the CLI's filters (since,
// until, account, status as a code or a class, limit), bad values a 400
// naming the parameter, and cursor paging that returns every row once
// while new rows are written.
func TestAdminRequestsFiltersAndPaging(t *testing.T) {
	d := newDaemonStack(t, nil)
	_, viewer := d.adminKeys()
	now := d.clk.Now()
	base := now.Add(-10 * time.Hour)
	statusOf := func(i int) int {
		switch {
		case i%5 == 0:
			return 429
		case i%7 == 0:
			return 503
		case i%11 == 0:
			return 400
		}
		return 200
	}
	var rows []store.Request
	want := map[string]store.Request{}
	for i := range 250 {
		// Three rows share each timestamp: the cursor must tell them apart.
		r := logRow(fmt.Sprintf("req_%03d", i), base.Add(time.Duration(i/3)*time.Minute), statusOf(i), []string{"work", "pool"}[i%2])
		rows, want[r.ID] = append(rows, r), r
	}
	d.insert(rows...)
	// The daemon logs requests of its own (the 401s of adminKeys): rows
	// are checked against the filter by what the answer says of them, and
	// every row of ours that matches must be there.
	count := func(keep func(store.Request) bool) int {
		n := 0
		for _, r := range want {
			if keep(r) {
				n++
			}
		}
		return n
	}
	asRow := func(id, ts, account string, status int) store.Request {
		at, err := time.Parse(time.RFC3339, ts)
		if err != nil {
			t.Fatalf("timestamp %q: %v", ts, err)
		}
		return store.Request{ID: id, TS: at.UnixMilli(), Account: account, Status: status}
	}

	// Without parameters: the newest 100, newest last, and a cursor.
	p := d.requestsPage(viewer, nil)
	if len(p.Requests) != 100 || p.NextCursor == nil {
		t.Fatalf("default page: %d rows, cursor %v", len(p.Requests), p.NextCursor)
	}
	for i := 1; i < len(p.Requests); i++ {
		if p.Requests[i].Timestamp < p.Requests[i-1].Timestamp {
			t.Fatalf("default page not oldest first at %d", i)
		}
	}

	filters := []struct {
		q    url.Values
		keep func(store.Request) bool
	}{
		{url.Values{"status": {"4xx"}}, func(r store.Request) bool { return r.Status >= 400 && r.Status < 500 }},
		{url.Values{"status": {"5XX"}}, func(r store.Request) bool { return r.Status >= 500 }},
		{url.Values{"status": {"429"}}, func(r store.Request) bool { return r.Status == 429 }},
		{url.Values{"account": {"work"}, "status": {"2xx"}}, func(r store.Request) bool { return r.Account == "work" && r.Status == 200 }},
		{url.Values{"since": {"9h"}}, func(r store.Request) bool { return r.TS >= now.Add(-9*time.Hour).UnixMilli() }},
		{url.Values{"since": {base.Add(30 * time.Minute).Format(time.RFC3339)}, "until": {"9h"}},
			func(r store.Request) bool {
				return r.TS >= base.Add(30*time.Minute).UnixMilli() && r.TS <= now.Add(-9*time.Hour).UnixMilli()
			}},
	}
	for _, f := range filters {
		q := f.q
		q.Set("limit", "1000")
		p := d.requestsPage(viewer, q)
		ours := 0
		for _, r := range p.Requests {
			if !f.keep(asRow(r.ID, r.Timestamp, r.Account, r.Status)) {
				t.Fatalf("%s: row %+v does not match", q.Encode(), r)
			}
			if _, ok := want[r.ID]; ok {
				ours++
			}
		}
		if n := count(f.keep); ours != n || n == 0 || p.NextCursor != nil {
			t.Fatalf("%s: %d of our rows (cursor %v), want %d", q.Encode(), ours, p.NextCursor, n)
		}
	}

	// Bad values: 400 in Anthropic's shape, naming the parameter.
	for q, param := range map[string]string{
		"status=abc": "status", "status=6xx": "status", "status=99": "status",
		"limit=0": "limit", "limit=x": "limit", "limit=-3": "limit",
		"since=yesterday": "since", "since=-2h": "since", "until=soon": "until",
		"since=1h&until=2h": "until", "cursor=bm9wZQ": "cursor", "cursor=%25%25": "cursor",
		"stauts=4xx": "stauts", "limit=5&limit=6": "limit",
	} {
		r := d.do("GET", "/api/requests?"+q, "", "x-api-key", viewer)
		expectStatus(t, r, 400, "invalid_request_error")
		if !strings.Contains(r.body, param) {
			t.Fatalf("%s: the error does not name %s: %s", q, param, r.body)
		}
	}

	// Paging back through every 4xx row, 7 at a time, while new rows
	// arrive at both ends: each original row once, pages going back in
	// time, rows within a page oldest first.
	seen := map[string]int{}
	q := url.Values{"status": {"4xx"}, "limit": {"7"}}
	prevOldest := "9999"
	for page := 0; ; page++ {
		if page > 100 {
			t.Fatal("paging does not end")
		}
		p := d.requestsPage(viewer, q)
		for i, r := range p.Requests {
			seen[r.ID]++
			if i > 0 && r.Timestamp < p.Requests[i-1].Timestamp {
				t.Fatalf("page %d not oldest first: %+v", page, p.Requests)
			}
		}
		if len(p.Requests) > 0 {
			if last := p.Requests[len(p.Requests)-1].Timestamp; last > prevOldest {
				t.Fatalf("page %d is newer than the one before", page)
			}
			prevOldest = p.Requests[0].Timestamp
		}
		d.insert(logRow(fmt.Sprintf("new_%03d", page), now.Add(time.Duration(page)*time.Second), 429, "work"))
		if p.NextCursor == nil {
			break
		}
		q.Set("cursor", *p.NextCursor)
	}
	for id, n := range seen {
		if n != 1 {
			t.Fatalf("%s returned %d times", id, n)
		}
		if strings.HasPrefix(id, "new_") {
			t.Fatalf("a row newer than the first page showed up: %s", id)
		}
	}
	for id, r := range want {
		if r.Status >= 400 && r.Status < 500 && seen[id] != 1 {
			t.Fatalf("paging did not return %s", id)
		}
	}

	// A limit over the maximum gives the maximum; the last page has no cursor.
	p = d.requestsPage(viewer, url.Values{"limit": {"5000"}, "account": {"pool"}, "until": {"1h"}})
	if len(p.Requests) != 125 || p.NextCursor != nil {
		t.Fatalf("limit=5000: %d rows, cursor %v", len(p.Requests), p.NextCursor)
	}
}

// GET /api/openapi.json is served by the real daemon to any client key.
func TestAdminOpenAPIServed(t *testing.T) {
	d := newDaemonStack(t, nil)
	_, viewer := d.adminKeys()
	expectStatus(t, d.do("GET", "/api/openapi.json", ""), 401, "authentication_error")
	r := d.do("GET", "/api/openapi.json", "", "x-api-key", viewer)
	expectStatus(t, r, 200, "")
	var doc struct {
		OpenAPI string         `json:"openapi"`
		Paths   map[string]any `json:"paths"`
	}
	if err := json.Unmarshal([]byte(r.body), &doc); err != nil || doc.OpenAPI != "3.1.0" || doc.Paths["/api/requests"] == nil {
		t.Fatalf("openapi.json: %v %s", err, r.body[:min(200, len(r.body))])
	}
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type %q", ct)
	}
}
