package e2e

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/claudeflare/claudeflare/internal/fakeapi"
	"github.com/claudeflare/claudeflare/internal/testutil"
)

// The files in contrib/ for Prometheus users.
var contribMetricFiles = []string{
	"../contrib/grafana/claudeflare.json",
	"../contrib/prometheus/alerts.yml",
	"../contrib/prometheus/alerts_test.yml",
}

var metricNameRE = regexp.MustCompile(`\bclaudeflare_[a-z0-9_]+`)

// contribMetricNames are the claudeflare metric names the contrib files
// mention, sorted, with the files that mention each.
func contribMetricNames(t *testing.T) map[string][]string {
	t.Helper()
	names := map[string][]string{}
	for _, f := range contribMetricFiles {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range metricNameRE.FindAllString(string(b), -1) {
			if !slices.Contains(names[n], f) {
				names[n] = append(names[n], filepath.Base(f))
			}
		}
	}
	if len(names) < 15 {
		t.Fatalf("found only %d metric names in contrib/: %v", len(names), names)
	}
	return names
}

// TestContribMetricsExist: every metric the Grafana dashboard and the
// Prometheus rules name is exported by a running daemon, with a series,
// after some traffic: one account rate limited (failover, utilization),
// one whose refresh token is refused (a failed refresh, needs_login), one
// that serves (requests, latency, tokens, cost).
func TestContribMetricsExist(t *testing.T) {
	want := contribMetricNames(t)
	w := newWorld(t, "", "")
	for _, name := range []string{"alpha", "beta", "gamma"} {
		w.addOAuth(name)
	}
	d := w.start()
	h := fakeapi.RateLimitHeaders("rejected", time.Now().Add(3*time.Hour))
	h["retry-after"] = "10800"
	w.fake.Inject(fakeapi.Fault{Account: "alpha", Path: fakeapi.MessagesPath, Kind: fakeapi.FaultStatus, Status: 429, Headers: h, Count: -1})
	w.fake.RevokeAccount("beta")

	c := newClient(30*time.Second, 2)
	var missing []string
	scraped := map[string]bool{}
	defer func() {
		if t.Failed() {
			t.Logf("named in contrib/ but not in /metrics: %v", missing)
		}
	}()
	testutil.WaitFor(t, "a series of every metric contrib/ names", func() bool {
		send(context.Background(), c, d.url, false)
		send(context.Background(), c, d.url, true)
		for series := range d.metrics() {
			name, _, _ := strings.Cut(series, "{")
			scraped[name] = true
		}
		missing = missing[:0]
		for n := range want {
			if !scraped[n] {
				missing = append(missing, n)
			}
		}
		return len(missing) == 0
	})
}

// The names the test looks for are real: a name the daemon does not
// export is found missing.
func TestContribMetricNamesAreChecked(t *testing.T) {
	names := contribMetricNames(t)
	for _, n := range []string{"claudeflare_requests_total", "claudeflare_account_utilization_ratio", "claudeflare_recorder_dropped_records_total", "claudeflare_cost_usd_total"} {
		if names[n] == nil {
			t.Errorf("contrib/ does not use %s", n)
		}
	}
}

// promtool checks the rules and runs their unit tests.
func TestContribPrometheusRules(t *testing.T) {
	if _, err := exec.LookPath("promtool"); err != nil {
		testutil.Missing(t, "promtool not installed (Debian package prometheus): the alert rules are not checked")
		return
	}
	for _, args := range [][]string{{"check", "rules", "alerts.yml"}, {"test", "rules", "alerts_test.yml"}} {
		cmd := exec.Command("promtool", args...)
		cmd.Dir = "../contrib/prometheus"
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

// The Grafana dashboard is JSON Grafana imports: a uid, the datasource
// and instance variables, and every panel querying through them.
func TestContribGrafanaDashboard(t *testing.T) {
	b, err := os.ReadFile("../contrib/grafana/claudeflare.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		UID        string `json:"uid"`
		Title      string `json:"title"`
		Templating struct {
			List []struct{ Name string } `json:"list"`
		} `json:"templating"`
		Panels []struct {
			Type       string          `json:"type"`
			Title      string          `json:"title"`
			Datasource json.RawMessage `json:"datasource"`
			Targets    []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatal(err)
	}
	if dash.UID == "" || dash.Title == "" || len(dash.Panels) < 10 {
		t.Errorf("uid %q, title %q, %d panels", dash.UID, dash.Title, len(dash.Panels))
	}
	var vars []string
	for _, v := range dash.Templating.List {
		vars = append(vars, v.Name)
	}
	if !slices.Equal(vars, []string{"datasource", "instance"}) {
		t.Errorf("variables %v", vars)
	}
	for _, p := range dash.Panels {
		if p.Type == "row" {
			continue
		}
		if !strings.Contains(string(p.Datasource), "${datasource}") || len(p.Targets) == 0 {
			t.Errorf("panel %q: datasource %s, %d queries", p.Title, p.Datasource, len(p.Targets))
		}
		for _, q := range p.Targets {
			if !strings.Contains(q.Expr, `instance=~"$instance"`) || strings.Count(q.Expr, "(") != strings.Count(q.Expr, ")") {
				t.Errorf("panel %q: query %s", p.Title, q.Expr)
			}
		}
	}
}
