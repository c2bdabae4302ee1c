package config

import (
	"errors"
	"math"
	"os"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"
)

// companions set the keys a value is checked against, so that an edge of
// one key's range is not refused for another key's sake: the largest
// cooldown_initial is allowed only with a cooldown_max as large.
var companions = map[string]map[string]string{
	"ratelimit.cooldown_initial":     {"ratelimit.cooldown_max": "24h"},
	"ratelimit.cooldown_max":         {"ratelimit.cooldown_initial": "1s"},
	"server.max_body_bytes":          {"server.max_inflight_body_bytes": "8589934592"},
	"server.max_inflight_body_bytes": {"server.max_body_bytes": "1"},
}

type edge struct {
	name string
	raw  int64   // integers and durations
	f    float64 // floats
	ok   bool
}

// edges are the values just inside and just outside s's range.
func edges(s *setting) []edge {
	b := s.bound
	if s.typ.Kind() == reflect.Float64 {
		return []edge{
			{name: "min", f: b.fmin, ok: true},
			{name: "max", f: b.fmax, ok: true},
			{name: "below min", f: math.Nextafter(b.fmin, math.Inf(-1))},
			{name: "above max", f: math.Nextafter(b.fmax, math.Inf(1))},
		}
	}
	const step = 1 // one unit: a byte, a millisecond, a nanosecond
	out := []edge{
		{name: "min", raw: b.min, ok: true},
		{name: "max", raw: b.max, ok: true},
		{name: "above max", raw: b.max + step},
	}
	if b.zero != "" {
		out = append(out, edge{name: "zero", raw: 0, ok: true})
	}
	if below := b.min - step; below > 0 || below == 0 && b.zero == "" {
		out = append(out, edge{name: "below min", raw: below})
	}
	// A negative value is refused too, whether by the parser (durations)
	// or by the range.
	out = append(out, edge{name: "negative", raw: -1})
	return out
}

// flagValue is e as a flag or environment value of s.
func flagValue(s *setting, e edge) string {
	switch {
	case s.typ.Kind() == reflect.Float64:
		return strconv.FormatFloat(e.f, 'g', -1, 64)
	case s.typ == durationType:
		return time.Duration(e.raw).String()
	}
	return strconv.FormatInt(e.raw, 10)
}

// tomlValue is e as a TOML value of s.
func tomlValue(s *setting, e edge) string {
	switch {
	case s.typ.Kind() == reflect.Float64:
		v := strconv.FormatFloat(e.f, 'f', -1, 64)
		if !strings.Contains(v, ".") {
			v += ".0"
		}
		return v
	case s.typ == durationType:
		return strconv.Quote(time.Duration(e.raw).String())
	}
	return strconv.FormatInt(e.raw, 10)
}

// TestBoundsEdges sets every numeric setting, from the settings table, to
// the values just inside and just outside its range, by flag, environment
// and config file, and requires the ones outside to be refused with an
// error that names the key, where it was set and the range. A numeric
// setting without a range fails.
func TestBoundsEdges(t *testing.T) {
	n := 0
	for _, s := range settings {
		if !numeric(s.typ) {
			if s.bound != nil {
				t.Errorf("%s is not numeric but has bounds", s.Key)
			}
			continue
		}
		if s.bound == nil {
			t.Errorf("%s (%s) has no bounds: add it to bounds in bounds.go", s.Key, s.typ)
			continue
		}
		n++
		for _, e := range edges(s) {
			t.Run(s.Key+"/"+e.name, func(t *testing.T) {
				flags := map[string]string{s.Key: flagValue(s, e)}
				for k, v := range companions[s.Key] {
					flags[k] = v
				}
				c, err := Load(Source{Getenv: newEnv(t).get, Flags: flags})
				if e.ok {
					if err != nil {
						t.Fatalf("%s = %s refused: %v", s.Key, flags[s.Key], err)
					}
					if s.typ.Kind() == reflect.Float64 {
						if got := s.field(c).Float(); got != e.f {
							t.Errorf("got %v, want %v", got, e.f)
						}
					} else if got := s.field(c).Int(); got != e.raw {
						t.Errorf("got %v, want %v", got, e.raw)
					}
					return
				}
				inRangeMsg := !(s.typ == durationType && e.raw < 0) // the parser refuses negative durations
				want := "config flag " + s.Key + ": must be " + s.rangeText()
				var ce *Error
				if !errors.As(err, &ce) || ce.Key != s.Key || !ce.Flag || (inRangeMsg && ce.Error() != want) {
					t.Fatalf("%s = %s: got %v, want %s", s.Key, flags[s.Key], err, want)
				}

				// The same value in the config file names the file and line.
				section, name, ok := strings.Cut(s.Key, ".")
				text := "\n" + s.Key + " = " + tomlValue(s, e) + "\n"
				if ok {
					text = "\n[" + section + "]\n" + name + " = " + tomlValue(s, e) + "\n"
				}
				path := writeFile(t, text)
				err = loadErrAny(Source{Path: path, Getenv: newEnv(t).get})
				if !errors.As(err, &ce) || ce.Key != s.Key || ce.File != path || ce.Line != strings.Count(text, "\n") {
					t.Fatalf("file %q: got %+v (%v)", text, ce, err)
				}
				if inRangeMsg && !strings.HasSuffix(ce.Error(), ": "+s.Key+": must be "+s.rangeText()) {
					t.Errorf("file: got %s", ce)
				}

				// And in its environment variable, the variable.
				if s.Env == "" {
					return
				}
				env := newEnv(t)
				env[s.Env] = flagValue(s, e)
				err = loadErrAny(Source{Getenv: env.get})
				if !errors.As(err, &ce) || ce.Key != s.Key || ce.Env != s.Env {
					t.Fatalf("env %s=%s: got %v", s.Env, env[s.Env], err)
				}
				if inRangeMsg && ce.Error() != "config env "+s.Env+": must be "+s.rangeText() {
					t.Errorf("env: got %s", ce)
				}
			})
		}
	}
	if n < 20 {
		t.Errorf("only %d numeric settings found", n)
	}
	for k := range bounds {
		if settingByKey[k] == nil {
			t.Errorf("bounds has %s, which is not a setting", k)
		}
	}
}

func loadErrAny(src Source) error {
	_, err := Load(src)
	return err
}

// TestBoundsMessages pins the wording of a few ranges.
func TestBoundsMessages(t *testing.T) {
	for key, want := range map[string]string{
		"server.max_body_bytes":          "between 1 and 268435456 (256 MiB)",
		"server.read_header_timeout":     "between 1s and 10m",
		"retry_backoff":                  "a number between 1 and 10",
		"session_duration_ms":            "between 1000 (1s) and 2592000000 (30d)",
		"retention.interval":             "0s (never) or between 1m and 1w",
		"server.max_inflight_body_bytes": "between 1048576 (1 MiB) and 8589934592 (8 GiB)",
	} {
		if got := settingByKey[key].rangeText(); got != want {
			t.Errorf("%s: %q, want %q", key, got, want)
		}
	}
}

// TestSettingsFromTheIssue are the settings that validated but broke the
// daemon (issue 11, item 6).
func TestSettingsFromTheIssue(t *testing.T) {
	for _, tt := range []struct {
		text string
		line int
		want string
	}{
		{"[server]\nmax_body_bytes = 9223372036854775807\n", 2, "server.max_body_bytes: must be between 1 and 268435456 (256 MiB)"},
		{"[log]\nqueue_size = 1000000000\n", 2, "log.queue_size: must be between 1 and 65536"},
		{"[log]\nbatch_size = 1000000000\n", 2, "log.batch_size: must be between 1 and 4096"},
		{"[server]\nread_header_timeout = \"0s\"\n", 2, "server.read_header_timeout: must be between 1s and 10m"},
		{"[server]\nmax_body_bytes = 67108864\nmax_inflight_body_bytes = 33554432\n", 3, "server.max_inflight_body_bytes: must not be less than server.max_body_bytes (67108864)"},
	} {
		path := writeFile(t, tt.text)
		e := loadErr(t, Source{Path: path, Getenv: newEnv(t).get})
		if want := "config " + path + ":" + itoa(tt.line) + ": " + tt.want; e.Error() != want {
			t.Errorf("got %s\nwant %s", e, want)
		}
	}
}

// TestBoundsDocumented requires the range of every numeric key, worded as
// the error words it, in the example file and in claudeflare.toml(5).
func TestBoundsDocumented(t *testing.T) {
	ex, err := os.ReadFile(examplePath)
	if err != nil {
		t.Fatal(err)
	}
	man, err := os.ReadFile("../man/claudeflare.toml.5")
	if err != nil {
		t.Fatal(err)
	}
	exLines := strings.Split(string(ex), "\n")
	manLines := strings.Split(string(man), "\n")
	for _, s := range settings {
		if s.bound == nil {
			continue
		}
		want := "Must be " + s.rangeText()
		says := func(text string) bool {
			return strings.Contains(text, want+".") || strings.Contains(text, want+",")
		}
		path := strings.Split(s.Key, ".")
		// The example: the comment block right above the key.
		line := findLine(string(ex), path)
		var block []string
		for i := line - 2; i >= 0 && strings.HasPrefix(exLines[i], "#"); i-- {
			block = append([]string{strings.TrimSpace(strings.TrimPrefix(exLines[i], "#"))}, block...)
		}
		if !says(strings.Join(block, " ")) {
			t.Errorf("claudeflare.toml.example: the comment of %s does not say %q", s.Key, want)
		}
		// The man page: the key's paragraph, in its section.
		i := 0
		if len(path) == 2 {
			for i < len(manLines) && manLines[i] != ".SS ["+path[0]+"]" {
				i++
			}
		}
		name := path[len(path)-1]
		for i < len(manLines) && !strings.HasPrefix(manLines[i], ".BR "+name+" ") {
			i++
		}
		var para []string
		for i++; i < len(manLines) && !strings.HasPrefix(manLines[i], ".TP") && !strings.HasPrefix(manLines[i], ".S"); i++ {
			para = append(para, manLines[i])
		}
		if !says(strings.Join(para, " ")) {
			t.Errorf("claudeflare.toml.5: the paragraph of %s does not say %q", s.Key, want)
		}
	}
}

// numeric reports whether a setting of type t needs a bound.
func numeric(t reflect.Type) bool {
	switch t.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64,
		reflect.Float32, reflect.Float64:
		return true
	}
	return false
}
