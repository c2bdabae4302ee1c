package config

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
)

const hookSecret = "T0SECRET/B0SECRET/xoxSECRETpath"

func TestAlertsWebhooksLoad(t *testing.T) {
	path := writeFile(t, `
[alerts]
[[alerts.webhook]]
url = "https://hooks.example.com/services/`+hookSecret+`"
events = ["account_needs_login", "pool_exhausted"]

[[alerts.webhook]]
url = "http://127.0.0.1:9000/hook?token=`+hookSecret+`"
utilization_thresholds = [0.95, 0.5]
`)
	c, err := Load(Source{Path: path, Getenv: newEnv(t).get})
	if err != nil {
		t.Fatal(err)
	}
	ws := c.Alerts.Webhook
	if len(ws) != 2 {
		t.Fatalf("webhooks: %+v", ws)
	}
	if !ws[0].Wants(AlertPoolExhausted) || ws[0].Wants(AlertAccountBlocked) {
		t.Errorf("first webhook's events: %v", ws[0].Events)
	}
	if !reflect.DeepEqual(ws[0].Thresholds(), []float64{0.8, 0.95}) {
		t.Errorf("default thresholds: %v", ws[0].Thresholds())
	}
	for _, e := range AlertEvents {
		if !ws[1].Wants(e) {
			t.Errorf("a webhook without events does not want %s", e)
		}
	}
	if !reflect.DeepEqual(ws[1].Thresholds(), []float64{0.5, 0.95}) {
		t.Errorf("thresholds: %v", ws[1].Thresholds())
	}
	if o := c.Origin("alerts.webhook"); o.Kind != FromFile || o.Line != 3 {
		t.Errorf("origin %+v", o)
	}

	// Shown (config show: String and JSON) without the URL's secret.
	v, _ := c.Value("alerts.webhook")
	js, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	for _, shown := range []string{ws.String(), string(js), ws[0].String()} {
		if strings.Contains(shown, "SECRET") {
			t.Errorf("a webhook URL's secret is shown: %s", shown)
		}
		if !strings.Contains(shown, "https://hooks.example.com/…") {
			t.Errorf("the webhook's host is not shown: %s", shown)
		}
	}
	// String is TOML that loads again (config show's output is a config).
	again := writeFile(t, "[alerts]\nwebhook = "+ws.String()+"\n")
	if c2, err := Load(Source{Path: again, Getenv: newEnv(t).get}); err != nil || len(c2.Alerts.Webhook) != 2 {
		t.Errorf("config show's webhook line does not load: %v", err)
	}
}

func TestAlertsWebhookEnv(t *testing.T) {
	e := newEnv(t)
	e["CLAUDEFLARE_ALERTS_WEBHOOK"] = "https://a.example/x, http://localhost:9/y"
	c, err := Load(Source{Getenv: e.get})
	if err != nil {
		t.Fatal(err)
	}
	want := Webhooks{{URL: "https://a.example/x"}, {URL: "http://localhost:9/y"}}
	if !reflect.DeepEqual(c.Alerts.Webhook, want) {
		t.Errorf("got %+v", c.Alerts.Webhook)
	}
	if o := c.Origin("alerts.webhook"); o.Kind != FromEnv || o.Env != "CLAUDEFLARE_ALERTS_WEBHOOK" {
		t.Errorf("origin %+v", o)
	}

	e["CLAUDEFLARE_ALERTS_WEBHOOK"] = "http://hooks.example.com/" + hookSecret
	_, err = Load(Source{Getenv: e.get})
	var ce *Error
	if !errors.As(err, &ce) || ce.Env != "CLAUDEFLARE_ALERTS_WEBHOOK" || !strings.Contains(err.Error(), "https") {
		t.Errorf("cleartext webhook from env: %v", err)
	}
	if err != nil && strings.Contains(err.Error(), "SECRET") {
		t.Errorf("error shows the secret: %v", err)
	}
}

func TestAlertsWebhookInvalid(t *testing.T) {
	for _, tc := range []struct{ body, want string }{
		{`url = "ftp://hooks.example.com/` + hookSecret + `"`, `alerts.webhook: webhook 1: url: must be an absolute http or https URL (got "ftp://hooks.example.com/…")`},
		{`url = "http://hooks.example.com/` + hookSecret + `"`, `webhook 1: url: must be an https URL`},
		{`url = ""`, `webhook 1: url: must be set`},
		{`events = ["pool_exhausted"]`, `webhook 1: url: must be set`},
		{`url = "https://h.example/x"` + "\n" + `events = ["pool_exausted"]`, `webhook 1: events: unknown event "pool_exausted"`},
		{`url = "https://h.example/x"` + "\n" + `utilization_thresholds = [80]`, `webhook 1: utilization_thresholds: 80 is not a share between 0 and 1`},
		{`url = "https://h.example/x"` + "\n" + `urll = "x"`, `unknown key "alerts.webhook.urll"`},
		{`url = "https://h.example/x"` + "\n" + `events = "all"`, `alerts.webhook.events`},
	} {
		path := writeFile(t, "[[alerts.webhook]]\n"+tc.body+"\n")
		_, err := Load(Source{Path: path, Getenv: newEnv(t).get})
		var ce *Error
		if !errors.As(err, &ce) || ce.File == "" || ce.Line == 0 || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s:\n got %v\nwant a config error at a line with %q", tc.body, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), "SECRET") {
			t.Errorf("error shows the secret: %v", err)
		}
	}
}

func TestRedactURL(t *testing.T) {
	for in, want := range map[string]string{
		"https://hooks.slack.com/services/T/B/x": "https://hooks.slack.com/…",
		"https://user:pw@h.example":              "https://h.example/…",
		"https://h.example/":                     "https://h.example",
		"https://h.example?token=x":              "https://h.example/…",
		"http://127.0.0.1:9/":                    "http://127.0.0.1:9",
		"not a url":                              "[invalid URL]",
	} {
		if got := RedactURL(in); got != want {
			t.Errorf("RedactURL(%q) = %q, want %q", in, got, want)
		}
	}
}
