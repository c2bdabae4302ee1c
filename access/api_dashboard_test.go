package access_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/claudeflare/claudeflare/access"
	"github.com/claudeflare/claudeflare/config"
)

// GET /api/series and GET /api/requests/{id}/payload against the real
// daemon: the series counts what was served, bad parameters are a 400,
// the payload is the redacted export line, and the permissions hold:
// series for viewers, payloads for admins only.
func TestSeriesAndPayloadAPI(t *testing.T) {
	d := newDaemonStack(t, nil)
	ctx := context.Background()
	placeholder := "sk-ant-api03-" + strings.Repeat("x", 40)
	expectStatus(t, d.message(false, "x-api-key", placeholder), 200, "")
	expectStatus(t, d.message(true), 200, "")

	type requestsPage struct {
		Requests []struct {
			ID string `json:"id"`
		} `json:"requests"`
	}
	var page requestsPage
	waitFor(t, "two requests in the log", func() bool {
		r := d.do("GET", "/api/requests", "")
		return json.Unmarshal([]byte(r.body), &page) == nil && len(page.Requests) == 2
	})

	var series struct {
		Step        string `json:"step"`
		StepSeconds int64  `json:"step_seconds"`
		Buckets     []struct {
			Start    string   `json:"start"`
			Requests int64    `json:"requests"`
			Errors   int64    `json:"errors"`
			Tokens   int64    `json:"tokens"`
			CostUSD  *float64 `json:"cost_usd"`
		} `json:"buckets"`
	}
	r := d.do("GET", "/api/series?since=1h&step=10m", "")
	expectStatus(t, r, 200, "")
	if err := json.Unmarshal([]byte(r.body), &series); err != nil {
		t.Fatal(err)
	}
	var n, tokens int64
	for _, b := range series.Buckets {
		n += b.Requests
		tokens += b.Tokens
		if _, err := time.Parse(time.RFC3339, b.Start); err != nil {
			t.Errorf("start %q", b.Start)
		}
	}
	if series.Step != "10m" || series.StepSeconds != 600 || len(series.Buckets) < 6 || len(series.Buckets) > 7 || n != 2 || tokens == 0 {
		t.Errorf("series: %s", r.body)
	}
	for _, q := range []string{"step=0s", "step=abc", "since=-1h", "since=30d&step=1s", "nope=1", "step=1m&step=2m"} {
		expectStatus(t, d.do("GET", "/api/series?"+q, ""), 400, "invalid_request_error")
	}

	id := page.Requests[0].ID
	r = d.do("GET", "/api/requests/"+id+"/payload", "")
	expectStatus(t, r, 200, "")
	var row struct {
		ID      string `json:"id"`
		Request struct {
			Headers map[string]string `json:"headers"`
			Body    json.RawMessage   `json:"body"`
		} `json:"request"`
		Response struct {
			Status int `json:"status"`
		} `json:"response"`
	}
	if err := json.Unmarshal([]byte(r.body), &row); err != nil {
		t.Fatalf("payload: %v: %s", err, r.body)
	}
	if row.ID != id || row.Response.Status != 200 || !strings.Contains(string(row.Request.Body), `"messages"`) {
		t.Errorf("payload: %.400s", r.body)
	}
	if strings.Contains(r.body, placeholder) || !strings.Contains(r.body, "[REDACTED]") {
		t.Errorf("payload not redacted: %.600s", r.body)
	}
	expectStatus(t, d.do("GET", "/api/requests/no-such-id/payload", ""), 404, "not_found_error")
	expectStatus(t, d.do("POST", "/api/requests/"+id+"/payload", ""), 405, "invalid_request_error")

	// Permissions once client keys exist.
	apiKey, _, err := access.CreateKey(ctx, d.vdb, d.akey, "cc", access.RoleAPI, "cli:test", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	viewer, _, _ := access.CreateKey(ctx, d.vdb, d.akey, "dash", access.RoleViewer, "cli:test", time.Now())
	admin, _, _ := access.CreateKey(ctx, d.vdb, d.akey, "ops", access.RoleAdmin, "cli:test", time.Now())
	d.extra = append(d.extra, apiKey, viewer, admin)
	waitFor(t, "keys to be required", func() bool { return d.do("GET", "/api/series", "").status == 401 })
	d.waitKeysSeen(apiKey, viewer, admin)
	expectStatus(t, d.do("GET", "/api/series", "", "x-api-key", apiKey), 403, "permission_error")
	expectStatus(t, d.do("GET", "/api/series", "", "x-api-key", viewer), 200, "")
	for _, k := range []string{apiKey, viewer} {
		expectStatus(t, d.do("GET", "/api/requests/"+id+"/payload", "", "x-api-key", k), 403, "permission_error")
	}
	expectStatus(t, d.do("GET", "/api/requests/"+id+"/payload", "", "x-api-key", admin), 200, "")
	expectStatus(t, d.do("GET", "/api/requests/"+id+"/payload", ""), 401, "authentication_error")
	// The dashboard's files need no key; they hold no data.
	expectStatus(t, d.do("GET", "/ui/", ""), 200, "")
	if r := d.do("GET", "/ui", ""); r.status != 200 || !strings.Contains(r.body, "<title>claudeflare dashboard</title>") {
		t.Errorf("GET /ui: %d", r.status)
	}
}

// The dashboard's files are public only past server.allow_ips: an address
// outside it gets the 403 every route gives, and the files never reach
// the proxied handler.
func TestDashboardFilesBehindAllowIPs(t *testing.T) {
	h := newHarness(t, func(c *config.Config) { c.Server.AllowIPs = []string{"10.0.0.0/8"} })
	h.expect(h.do("GET", "/ui/"), 403, "permission_error")
	open := newHarness(t, nil)
	r := open.do("GET", "/ui/app.js")
	if r.status != 200 || r.header.Get("X-Test-Seen") != "" || r.header.Get("Content-Security-Policy") == "" {
		t.Fatalf("GET /ui/app.js: %d %v", r.status, r.header)
	}
}
