package config

import (
	"fmt"
	"reflect"
	"sort"
	"strconv"
	"strings"
)

// Setting describes one settable key. Every key of the config file is one;
// the environment and command-line flags set them by the same table.
type Setting struct {
	// Key is the dotted config key: "port", "log.payloads".
	Key string
	// Env is the environment variable that sets Key: EnvName(Key).
	Env string
	// LegacyEnv is the predecessor's unprefixed variable for Key ("PORT"),
	// read by the daemon only and below Env; "" for most keys.
	LegacyEnv string
	// Reload is what a running daemon does with a changed value on
	// SIGHUP: apply it at once, or keep the running value until a
	// restart (and log the key).
	Reload Reload
}

// Reload classifies a setting by what SIGHUP does with a changed value.
type Reload int

const (
	// ReloadUnclassified is a setting nobody classified (a test fails).
	// RestartChanges treats it as needing a restart.
	ReloadUnclassified Reload = iota
	// ReloadLive: SIGHUP applies the new value to the running daemon.
	ReloadLive
	// ReloadRestart: read at start only; SIGHUP logs that it changed.
	ReloadRestart
)

func (r Reload) String() string {
	switch r {
	case ReloadLive:
		return "live"
	case ReloadRestart:
		return "restart"
	}
	return "unclassified"
}

// reloads classifies every setting: what the daemon applies on SIGHUP
// (daemon.Reload is the consumer of every "live" row) and what it only
// reads at start.
var reloads = map[string]Reload{
	"data_dir":                         ReloadRestart,
	"host":                             ReloadRestart,
	"port":                             ReloadRestart,
	"lb_strategy":                      ReloadRestart,
	"session_duration_ms":              ReloadRestart,
	"retry_attempts":                   ReloadRestart,
	"retry_delay_ms":                   ReloadRestart,
	"retry_backoff":                    ReloadRestart,
	"client_id":                        ReloadRestart,
	"log_level":                        ReloadLive,
	"log_format":                       ReloadRestart,
	"debug":                            ReloadLive, // sets the log level
	"allowed_origins":                  ReloadLive,
	"identity_file":                    ReloadRestart,
	"upstream_url":                     ReloadRestart,
	"oauth_token_url":                  ReloadRestart,
	"server.tls_cert":                  ReloadRestart, // the same files' new contents are picked up live
	"server.tls_key":                   ReloadRestart,
	"server.allow_ips":                 ReloadLive,
	"server.max_body_bytes":            ReloadRestart,
	"server.shutdown_grace":            ReloadLive,
	"server.read_header_timeout":       ReloadRestart,
	"server.body_read_timeout":         ReloadRestart,
	"server.max_inflight_body_bytes":   ReloadRestart,
	"upstream.pin_sha256":              ReloadRestart,
	"upstream.response_header_timeout": ReloadRestart,
	"upstream.dial_timeout":            ReloadRestart,
	"tokens.refresh_margin":            ReloadLive,
	"ratelimit.cooldown_initial":       ReloadLive,
	"ratelimit.cooldown_max":           ReloadLive,
	"ratelimit.overloaded_cooldown":    ReloadLive,
	"ratelimit.recheck_interval":       ReloadLive,
	"routing.max_utilization":          ReloadRestart,
	"routing.session_idle":             ReloadRestart,
	"routing.sessions_max":             ReloadRestart,
	"routing.hold_max":                 ReloadRestart,
	"log.payloads":                     ReloadRestart,
	"log.payload_max_bytes":            ReloadRestart,
	"log.body_paths":                   ReloadRestart,
	"log.redact":                       ReloadRestart,
	"log.queue_size":                   ReloadRestart,
	"log.queue_bytes":                  ReloadRestart,
	"log.flush_interval":               ReloadRestart,
	"log.batch_size":                   ReloadRestart,
	"retention.payloads_max_age":       ReloadLive,
	"retention.requests_max_age":       ReloadLive,
	"retention.interval":               ReloadLive,
	"limits.requests_per_minute":       ReloadLive,
	"limits.concurrent_streams":        ReloadLive,
	"metrics.public":                   ReloadLive,
	"alerts.webhook":                   ReloadRestart,
	"pricing":                          ReloadLive, // proxy.SetLive
	"cloud.bedrock_models":             ReloadRestart,
	"cloud.vertex_models":              ReloadRestart,
	"models.aliases":                   ReloadLive, // proxy.SetLive
	"models.allow":                     ReloadLive, // proxy.SetLive
}

// EnvPrefix starts the environment variable of every setting: the key
// path in upper case with dots as underscores (EnvName).
const EnvPrefix = "CLAUDEFLARE_"

// EnvName is the environment variable that sets key:
// "routing.max_utilization" -> "CLAUDEFLARE_ROUTING_MAX_UTILIZATION".
func EnvName(key string) string {
	return EnvPrefix + strings.ToUpper(strings.ReplaceAll(key, ".", "_"))
}

// legacyEnv are the unprefixed variables kept from the TypeScript
// predecessor (CONTRACT.md). Only the daemon reads them (Source.Legacy),
// below the CLAUDEFLARE_ variable of the same key: a stray PORT in a
// shell must not break `claudeflare stats`. CLIENT_ID is not among them:
// a stray one silently replaced the OAuth client id.
var legacyEnv = map[string]string{
	"host":                "HOST",
	"port":                "PORT",
	"lb_strategy":         "LB_STRATEGY",
	"session_duration_ms": "SESSION_DURATION_MS",
	"retry_attempts":      "RETRY_ATTEMPTS",
	"retry_delay_ms":      "RETRY_DELAY_MS",
	"retry_backoff":       "RETRY_BACKOFF",
	"log_level":           "LOG_LEVEL",
	"log_format":          "LOG_FORMAT",
	"allowed_origins":     "ALLOWED_ORIGINS",
}

// pathKeys are file paths: "~/" is expanded, and a relative path in the
// config file is taken from the file's directory.
var pathKeys = map[string]bool{
	"data_dir":        true,
	"identity_file":   true,
	"server.tls_cert": true,
	"server.tls_key":  true,
}

// setting is one row of the table: where the key lives in Config and how a
// string sets it.
type setting struct {
	Setting
	index []int
	typ   reflect.Type
	path  bool
	// bound is the range of a numeric setting (bounds.go), nil otherwise.
	bound *bound
}

var durationType = reflect.TypeOf(Duration(0))

var (
	settings     = buildSettings()
	settingByKey = indexSettings(settings)
	// sections are the table names of Config.
	sections = map[string]bool{}
)

func buildSettings() []*setting {
	var out []*setting
	var walk func(t reflect.Type, prefix string, index []int)
	walk = func(t reflect.Type, prefix string, index []int) {
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			tag := strings.Split(f.Tag.Get("toml"), ",")[0]
			if !f.IsExported() || tag == "" || tag == "-" {
				continue
			}
			idx := append(append([]int(nil), index...), i)
			key := prefix + tag
			if f.Type.Kind() == reflect.Struct {
				sections[key] = true
				walk(f.Type, key+".", idx)
				continue
			}
			out = append(out, &setting{
				Setting: Setting{Key: key, Env: EnvName(key), LegacyEnv: legacyEnv[key], Reload: reloads[key]},
				index:   idx,
				typ:     f.Type,
				path:    pathKeys[key],
				bound:   bounds[key],
			})
		}
	}
	walk(reflect.TypeOf(Config{}), "", nil)
	return out
}

func indexSettings(list []*setting) map[string]*setting {
	m := make(map[string]*setting, len(list))
	for _, s := range list {
		m[s.Key] = s
	}
	return m
}

// Settings lists every settable key in file order, with its environment
// variables. The keys are those Source.Flags accepts.
func Settings() []Setting {
	out := make([]Setting, len(settings))
	for i, s := range settings {
		out[i] = s.Setting
	}
	return out
}

// RestartChanges lists, in file order, the settings whose value differs
// between running and next and that a running daemon only reads at start
// (ReloadRestart, or not classified): what SIGHUP cannot apply.
func RestartChanges(running, next *Config) []string {
	var keys []string
	for _, s := range settings {
		if s.Reload == ReloadLive {
			continue
		}
		a, b := s.field(running), s.field(next)
		if a.Kind() == reflect.Slice && a.Len() == 0 && b.Len() == 0 {
			continue // nil and empty are the same list
		}
		if !reflect.DeepEqual(a.Interface(), b.Interface()) {
			keys = append(keys, s.Key)
		}
	}
	return keys
}

// field returns the setting's field in c.
func (s *setting) field(c *Config) reflect.Value {
	return reflect.ValueOf(c).Elem().FieldByIndex(s.index)
}

// set parses v for the setting's type and stores it in c. Booleans are
// 1, true, 0 or false; lists are comma separated; durations as
// ParseDuration.
func (s *setting) set(c *Config, v string) error {
	f := s.field(c)
	if es, ok := f.Addr().Interface().(envSetter); ok {
		return es.setEnv(v)
	}
	if s.typ == durationType {
		d, err := ParseDuration(v)
		if err != nil {
			return err
		}
		f.SetInt(int64(d))
		return nil
	}
	switch s.typ.Kind() {
	case reflect.String:
		f.SetString(v)
	case reflect.Bool:
		switch strings.ToLower(v) {
		case "1", "true":
			f.SetBool(true)
		case "0", "false":
			f.SetBool(false)
		default:
			return fmt.Errorf("invalid boolean %q (use 1, true, 0 or false)", v)
		}
	case reflect.Int, reflect.Int64:
		n, err := strconv.ParseInt(v, 10, s.typ.Bits())
		if err != nil {
			if ne, ok := err.(*strconv.NumError); ok && ne.Err == strconv.ErrRange {
				return fmt.Errorf("integer %q out of range", v)
			}
			return fmt.Errorf("invalid integer %q", v)
		}
		f.SetInt(n)
	case reflect.Float64:
		n, err := strconv.ParseFloat(v, 64)
		if err != nil {
			return fmt.Errorf("invalid number %q", v)
		}
		f.SetFloat(n)
	case reflect.Slice:
		list := []string{}
		for _, p := range strings.Split(v, ",") {
			if p = strings.TrimSpace(p); p != "" {
				list = append(list, p)
			}
		}
		f.Set(reflect.ValueOf(list))
	default:
		panic("config: no setter for " + s.typ.String())
	}
	return nil
}

// knownKey reports whether k (dotted) is a setting or a section, or a
// key inside a setting that is a list of tables (alerts.webhook.url): the
// decoder reports those it does not know as undecoded.
func knownKey(k string) bool {
	if settingByKey[k] != nil || sections[k] {
		return true
	}
	for i := strings.LastIndex(k, "."); i > 0; i = strings.LastIndex(k[:i], ".") {
		if s := settingByKey[k[:i]]; s != nil {
			_, tables := reflect.New(s.typ).Interface().(envSetter)
			return tables
		}
	}
	return false
}

// suggest returns the known key closest to k, or "" when none is close.
func suggest(k string) string {
	best, bestD := "", 3
	keys := make([]string, 0, len(settingByKey)+len(sections))
	for s := range settingByKey {
		keys = append(keys, s)
	}
	for s := range sections {
		keys = append(keys, s)
	}
	sort.Strings(keys)
	for _, cand := range keys {
		if strings.EqualFold(k, cand) {
			return cand
		}
		if d := editDistance(k, cand, bestD); d < bestD {
			best, bestD = cand, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance of a and b, or max when it is
// at least max.
func editDistance(a, b string, max int) int {
	if len(a)-len(b) >= max || len(b)-len(a) >= max || len(a) > 64 || len(b) > 64 {
		return max
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return min(prev[len(b)], max)
}
