package config

import (
	"encoding/json"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
)

// The alert events a webhook may ask for (alerts.webhook.events); the
// alerts package sends them.
const (
	AlertAccountNeedsLogin    = "account_needs_login"
	AlertAccountBlocked       = "account_blocked"
	AlertAccountRecovered     = "account_recovered"
	AlertPoolExhausted        = "pool_exhausted"
	AlertPoolRecovered        = "pool_recovered"
	AlertUtilizationThreshold = "utilization_threshold"
	AlertBudgetExceeded       = "budget_exceeded"
	AlertRecorderDropping     = "recorder_dropping"
)

// AlertEvents are every alert event, in the order the docs list them.
var AlertEvents = []string{
	AlertAccountNeedsLogin, AlertAccountBlocked, AlertAccountRecovered,
	AlertPoolExhausted, AlertPoolRecovered, AlertUtilizationThreshold,
	AlertBudgetExceeded, AlertRecorderDropping,
}

// DefaultUtilizationThresholds are a webhook's utilization thresholds
// when it names none.
var DefaultUtilizationThresholds = []float64{0.8, 0.95}

// Alerts is the [alerts] section: the webhooks told of accounts that need
// a login or are blocked, an exhausted pool, utilization thresholds, client
// keys over budget and a request log that drops records.
type Alerts struct {
	// Webhook are the [[alerts.webhook]] tables; none sends no alert.
	Webhook Webhooks `toml:"webhook"`
}

// Webhook is one [[alerts.webhook]] table.
type Webhook struct {
	// URL receives a POST of a JSON body per event. It may hold a
	// secret (a Slack hook's path, a token in the query): it is never
	// logged or shown whole (Redacted).
	URL string `toml:"url"`
	// Events are the events it wants (AlertEvents); empty means all.
	Events []string `toml:"events"`
	// UtilizationThresholds are the shares of a 5h or 7d window whose
	// upward crossing is an utilization_threshold event; empty means
	// DefaultUtilizationThresholds.
	UtilizationThresholds []float64 `toml:"utilization_thresholds"`
}

// Wants reports whether w asks for event.
func (w Webhook) Wants(event string) bool {
	return len(w.Events) == 0 || slices.Contains(w.Events, event)
}

// Thresholds are w's utilization thresholds, ascending.
func (w Webhook) Thresholds() []float64 {
	t := w.UtilizationThresholds
	if len(t) == 0 {
		t = DefaultUtilizationThresholds
	}
	t = slices.Clone(t)
	slices.Sort(t)
	return slices.Compact(t)
}

// Redacted is w's URL with everything that may be a secret hidden: the
// scheme and host are kept, user info, path and query are not
// ("https://hooks.slack.com/…").
func (w Webhook) Redacted() string { return RedactURL(w.URL) }

// String is w with its URL redacted, so that a Webhook in a log line or
// an error never shows the secret.
func (w Webhook) String() string {
	return fmt.Sprintf("{url = %s, events = %s, utilization_thresholds = %s}",
		strconv.Quote(w.Redacted()), tomlStrings(w.Events), tomlFloats(w.UtilizationThresholds))
}

// RedactURL keeps the scheme and host of a URL and replaces the rest (user
// info, path, query, fragment) by "…"; "[invalid URL]" when it does not
// parse.
func RedactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil || u.Host == "" {
		return "[invalid URL]"
	}
	out := u.Scheme + "://" + u.Host
	if u.User != nil || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		out += "/…"
	}
	return out
}

// Webhooks are the [[alerts.webhook]] tables. As a string (`config show`)
// and in JSON their URLs are redacted.
type Webhooks []Webhook

// String writes ws as a TOML inline array, URLs redacted.
func (ws Webhooks) String() string {
	parts := make([]string, len(ws))
	for i, w := range ws {
		parts[i] = w.String()
	}
	return "[" + strings.Join(parts, ", ") + "]"
}

// MarshalJSON writes ws with the URLs redacted.
func (ws Webhooks) MarshalJSON() ([]byte, error) {
	type shown struct {
		URL        string    `json:"url"`
		Events     []string  `json:"events"`
		Thresholds []float64 `json:"utilization_thresholds"`
	}
	out := make([]shown, len(ws))
	for i, w := range ws {
		out[i] = shown{URL: w.Redacted(), Events: w.Events, Thresholds: w.UtilizationThresholds}
		if out[i].Events == nil {
			out[i].Events = []string{}
		}
		if out[i].Thresholds == nil {
			out[i].Thresholds = []float64{}
		}
	}
	return json.Marshal(out)
}

// envSetter is a setting whose variable is not a plain list: the list of
// tables alerts.webhook. A setting whose type has it may also hold tables
// of its own in the file (knownKey).
type envSetter interface{ setEnv(v string) error }

// setEnv reads CLAUDEFLARE_ALERTS_WEBHOOK: comma-separated URLs, each a
// webhook with every event and the default thresholds.
func (ws *Webhooks) setEnv(v string) error {
	list := Webhooks{}
	for _, p := range strings.Split(v, ",") {
		if p = strings.TrimSpace(p); p != "" {
			list = append(list, Webhook{URL: p})
		}
	}
	*ws = list
	return nil
}

// validateAlerts checks each webhook's URL, events and thresholds.
func (c *Config) validateAlerts() *problem {
	for i, w := range c.Alerts.Webhook {
		n := fmt.Sprintf("webhook %d", i+1)
		if p := checkWebhookURL(w.URL); p != "" {
			return bad("alerts.webhook", "%s: url: %s", n, p)
		}
		for _, e := range w.Events {
			if !slices.Contains(AlertEvents, e) {
				return bad("alerts.webhook", "%s: events: unknown event %q (want any of %s)", n, e, strings.Join(AlertEvents, ", "))
			}
		}
		for _, t := range w.UtilizationThresholds {
			if !(t > 0 && t <= 1) {
				return bad("alerts.webhook", "%s: utilization_thresholds: %v is not a share between 0 and 1 (0.8 is 80%%)", n, t)
			}
		}
	}
	return nil
}

// checkWebhookURL is "" for an https URL with a host, or an http URL to a
// loopback host, else what is wrong, without the URL's secret parts.
func checkWebhookURL(v string) string {
	if strings.TrimSpace(v) == "" {
		return "must be set"
	}
	u, err := url.Parse(v)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Hostname() == "" {
		return fmt.Sprintf("must be an absolute http or https URL (got %q)", RedactURL(v))
	}
	if u.Scheme == "http" && !loopbackHost(u.Hostname()) {
		return fmt.Sprintf("must be an https URL: http:// is allowed only to a loopback host (127.0.0.1, ::1, localhost), got %q", RedactURL(v))
	}
	return ""
}

func tomlStrings(l []string) string {
	q := make([]string, len(l))
	for i, s := range l {
		q[i] = strconv.Quote(s)
	}
	return "[" + strings.Join(q, ", ") + "]"
}

func tomlFloats(l []float64) string {
	q := make([]string, len(l))
	for i, f := range l {
		q[i] = strconv.FormatFloat(f, 'f', -1, 64)
		if !strings.ContainsAny(q[i], ".eE") {
			q[i] += ".0"
		}
	}
	return "[" + strings.Join(q, ", ") + "]"
}
