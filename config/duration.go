package config

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// Day and Week are the two units ParseDuration accepts beyond Go's own.
const (
	Day  = 24 * time.Hour
	Week = 7 * Day
)

// Duration is a time.Duration that reads and writes the syntax of
// ParseDuration, so config files can say "30d" or "1w".
type Duration time.Duration

// UnmarshalText parses text with ParseDuration.
func (d *Duration) UnmarshalText(text []byte) error {
	v, err := ParseDuration(string(text))
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// MarshalText formats d as String does.
func (d Duration) MarshalText() ([]byte, error) {
	return []byte(d.String()), nil
}

// String formats d with the largest of the w and d units that divides it,
// then Go syntax for any remainder, with zero minutes and seconds dropped:
// "1w", "365d", "1d12h", "5m", "250ms", "0s". ParseDuration reads it back.
func (d Duration) String() string {
	v := time.Duration(d)
	if v < 0 {
		return v.String()
	}
	var b strings.Builder
	if v >= Day {
		if v%Week == 0 {
			fmt.Fprintf(&b, "%dw", v/Week)
			return b.String()
		}
		fmt.Fprintf(&b, "%dd", v/Day)
		v %= Day
		if v == 0 {
			return b.String()
		}
	}
	s := v.String()
	switch {
	case strings.HasSuffix(s, "h0m0s"):
		s = strings.TrimSuffix(s, "0m0s")
	case strings.HasSuffix(s, "m0s"):
		s = strings.TrimSuffix(s, "0s")
	}
	b.WriteString(s)
	return b.String()
}

// Std returns d as a time.Duration.
func (d Duration) Std() time.Duration { return time.Duration(d) }

var durationUnits = map[string]uint64{
	"ns": uint64(time.Nanosecond),
	"us": uint64(time.Microsecond),
	"µs": uint64(time.Microsecond), // U+00B5 micro sign
	"μs": uint64(time.Microsecond), // U+03BC Greek mu
	"ms": uint64(time.Millisecond),
	"s":  uint64(time.Second),
	"m":  uint64(time.Minute),
	"h":  uint64(time.Hour),
	"d":  uint64(Day),
	"w":  uint64(Week),
}

var errEmptyDuration = errors.New("empty duration")

// ParseDuration parses a non-negative duration in Go syntax ("1h30m",
// "1.5s", "250ms") extended with the units d (24h) and w (7d), which
// combine with the others: "30d", "1w2d", "1d12h". A bare "0" is zero.
// Negative, empty and out-of-range values are errors.
func ParseDuration(s string) (time.Duration, error) {
	orig := s
	if s == "" {
		return 0, errEmptyDuration
	}
	switch s[0] {
	case '-':
		return 0, fmt.Errorf("negative duration %q", orig)
	case '+':
		s = s[1:]
	}
	if s == "0" {
		return 0, nil
	}
	if s == "" {
		return 0, fmt.Errorf("invalid duration %q", orig)
	}
	const maxDur = 1<<63 - 1
	var total uint64
	for s != "" {
		if c := s[0]; c != '.' && (c < '0' || c > '9') {
			return 0, fmt.Errorf("invalid duration %q", orig)
		}
		n := len(s)
		v, rest, ok := leadingInt(s)
		if !ok {
			return 0, fmt.Errorf("duration %q out of range", orig)
		}
		s = rest
		pre := n != len(s)

		var f uint64
		scale := 1.0
		post := false
		if s != "" && s[0] == '.' {
			s = s[1:]
			n := len(s)
			f, scale, s = leadingFraction(s)
			post = n != len(s)
		}
		if !pre && !post {
			return 0, fmt.Errorf("invalid duration %q", orig)
		}

		i := 0
		for ; i < len(s); i++ {
			if c := s[i]; c == '.' || '0' <= c && c <= '9' {
				break
			}
		}
		if i == 0 {
			return 0, fmt.Errorf("missing unit in duration %q", orig)
		}
		u := s[:i]
		s = s[i:]
		unit, ok := durationUnits[u]
		if !ok {
			return 0, fmt.Errorf("unknown unit %q in duration %q", u, orig)
		}
		if v > maxDur/unit {
			return 0, fmt.Errorf("duration %q out of range", orig)
		}
		v *= unit
		if f > 0 {
			v += uint64(float64(f) * (float64(unit) / scale))
			if v > maxDur {
				return 0, fmt.Errorf("duration %q out of range", orig)
			}
		}
		total += v
		if total > maxDur {
			return 0, fmt.Errorf("duration %q out of range", orig)
		}
	}
	return time.Duration(total), nil
}

// leadingInt consumes the leading decimal digits of s; ok is false on
// overflow.
func leadingInt(s string) (x uint64, rest string, ok bool) {
	i := 0
	for ; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			break
		}
		if x > 1<<63/10 {
			return 0, "", false
		}
		x = x*10 + uint64(c-'0')
		if x > 1<<63 {
			return 0, "", false
		}
	}
	return x, s[i:], true
}

// leadingFraction consumes the leading digits of s as a fraction, ignoring
// the digits that no longer fit.
func leadingFraction(s string) (x uint64, scale float64, rest string) {
	i := 0
	scale = 1
	overflow := false
	for ; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			break
		}
		if overflow {
			continue
		}
		if x > (1<<63-1)/10 {
			overflow = true
			continue
		}
		y := x*10 + uint64(c-'0')
		if y > 1<<63 {
			overflow = true
			continue
		}
		x = y
		scale *= 10
	}
	return x, scale, s[i:]
}
