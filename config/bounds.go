package config

import (
	"fmt"
	"math"
	"reflect"
	"strconv"
	"time"
)

// bound is the range a numeric setting must lie in. Every integer, float,
// duration and byte size of Config has one (bounds below); a value outside
// it is refused when the config is loaded, so no setting that validates can
// turn a protection off (a zero timeout) or make the daemon allocate
// without limit (a huge queue or body size).
type bound struct {
	// min and max hold integers and durations (in nanoseconds).
	min, max int64
	// fmin and fmax hold floats.
	fmin, fmax float64
	// zero, when set, allows 0 outside [min, max] and says what it means
	// ("never").
	zero string
	// unit annotates integers for people: "bytes" adds KiB/MiB/GiB, "ms"
	// adds a duration.
	unit string
}

const (
	kib = 1 << 10
	mib = 1 << 20
	gib = 1 << 30
)

func ints(lo, hi int64) *bound  { return &bound{min: lo, max: hi} }
func sizes(lo, hi int64) *bound { return &bound{min: lo, max: hi, unit: "bytes"} }
func millis(lo, hi time.Duration) *bound {
	return &bound{min: lo.Milliseconds(), max: hi.Milliseconds(), unit: "ms"}
}
func floats(lo, hi float64) *bound     { return &bound{fmin: lo, fmax: hi} }
func durs(lo, hi time.Duration) *bound { return &bound{min: int64(lo), max: int64(hi)} }

// bounds are the ranges of the numeric settings, by key. A numeric key
// missing here fails TestBoundsEdges.
var bounds = map[string]*bound{
	"port":                             ints(0, 65535),
	"session_duration_ms":              millis(time.Second, 30*Day),
	"retry_attempts":                   ints(1, 20),
	"retry_delay_ms":                   millis(0, time.Minute),
	"retry_backoff":                    floats(1, 10),
	"server.max_body_bytes":            sizes(1, 256*mib),
	"server.shutdown_grace":            durs(0, time.Hour),
	"server.read_header_timeout":       durs(time.Second, 10*time.Minute),
	"server.body_read_timeout":         durs(time.Second, time.Hour),
	"server.max_inflight_body_bytes":   sizes(mib, 8*gib),
	"upstream.response_header_timeout": durs(time.Second, time.Hour),
	"upstream.dial_timeout":            durs(time.Second, 5*time.Minute),
	"tokens.refresh_margin":            durs(0, time.Hour),
	"ratelimit.cooldown_initial":       durs(time.Second, time.Hour),
	"ratelimit.cooldown_max":           durs(time.Second, Day),
	"ratelimit.overloaded_cooldown":    durs(0, time.Hour),
	"ratelimit.recheck_interval":       durs(time.Minute, Day),
	"routing.max_utilization":          floats(0.1, 1),
	"routing.session_idle":             durs(time.Minute, Day),
	"routing.sessions_max":             ints(1, 1000000),
	"routing.hold_max":                 {min: int64(time.Second), max: int64(10 * time.Minute), zero: "off"},
	"log.payload_max_bytes":            sizes(0, 64*mib),
	"log.queue_size":                   ints(1, 65536),
	"log.queue_bytes":                  sizes(mib, 8*gib),
	"log.flush_interval":               durs(10*time.Millisecond, time.Minute),
	"log.batch_size":                   ints(1, 4096),
	"retention.payloads_max_age":       {min: int64(time.Hour), max: int64(3650 * Day), zero: "never"},
	"retention.requests_max_age":       {min: int64(time.Hour), max: int64(3650 * Day), zero: "never"},
	"retention.interval":               {min: int64(time.Minute), max: int64(Week), zero: "never"},
	"limits.requests_per_minute":       ints(0, 1000000),
	"limits.concurrent_streams":        ints(0, 100000),
}

// check returns the problem of s's value in c, or nil when it is in range.
func (s *setting) checkBound(c *Config) *problem {
	b := s.bound
	if b == nil {
		return nil
	}
	f := s.field(c)
	ok := false
	switch f.Kind() {
	case reflect.Float32, reflect.Float64:
		v := f.Float()
		ok = !math.IsNaN(v) && v >= b.fmin && v <= b.fmax
	default:
		v := f.Int()
		ok = v >= b.min && v <= b.max || b.zero != "" && v == 0
	}
	if ok {
		return nil
	}
	return &problem{key: s.Key, msg: "must be " + s.rangeText()}
}

// rangeText words s's bound, as errors, the man page and the example say
// it: "between 1s and 10m", "between 1 and 268435456 (256 MiB)",
// "0s (never) or between 1m and 1w".
func (s *setting) rangeText() string {
	b := s.bound
	if s.typ.Kind() == reflect.Float64 {
		return "a number between " + strconv.FormatFloat(b.fmin, 'f', -1, 64) + " and " + strconv.FormatFloat(b.fmax, 'f', -1, 64)
	}
	text := "between " + s.formatValue(b.min) + " and " + s.formatValue(b.max)
	if b.zero != "" {
		text = s.formatValue(0) + " (" + b.zero + ") or " + text
	}
	return text
}

// formatValue writes an integer value of s as a user would set it.
func (s *setting) formatValue(v int64) string {
	if s.typ == durationType {
		return Duration(v).String()
	}
	out := strconv.FormatInt(v, 10)
	switch s.bound.unit {
	case "bytes":
		for _, u := range []struct {
			size int64
			name string
		}{{gib, "GiB"}, {mib, "MiB"}, {kib, "KiB"}} {
			if v >= u.size && v%u.size == 0 {
				return fmt.Sprintf("%s (%d %s)", out, v/u.size, u.name)
			}
		}
	case "ms":
		if v > 0 {
			return fmt.Sprintf("%s (%s)", out, Duration(time.Duration(v)*time.Millisecond))
		}
	}
	return out
}
