package config

import (
	"strings"
	"testing"
	"time"
)

func TestParseDuration(t *testing.T) {
	tests := []struct {
		in   string
		want time.Duration
	}{
		{"0", 0},
		{"0s", 0},
		{"+5s", 5 * time.Second},
		{"250ms", 250 * time.Millisecond},
		{"1.5h", 90 * time.Minute},
		{"1h30m", 90 * time.Minute},
		{"90m", 90 * time.Minute},
		{"1d", Day},
		{"30d", 30 * Day},
		{"365d", 365 * Day},
		{"1w", Week},
		{"1w2d", 9 * Day},
		{"1d12h", 36 * time.Hour},
		{"1.5d", 36 * time.Hour},
		{".5w", 84 * time.Hour},
		{"2w3d4h5m6s7ms8us9ns", 2*Week + 3*Day + 4*time.Hour + 5*time.Minute + 6*time.Second + 7*time.Millisecond + 8*time.Microsecond + 9},
		{"1µs", time.Microsecond},
		{"9223372036854775807ns", 1<<63 - 1},
	}
	for _, tt := range tests {
		got, err := ParseDuration(tt.in)
		if err != nil {
			t.Errorf("ParseDuration(%q): %v", tt.in, err)
			continue
		}
		if got != tt.want {
			t.Errorf("ParseDuration(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

func TestParseDurationErrors(t *testing.T) {
	tests := []struct {
		in, want string
	}{
		{"", "empty duration"},
		{"-5m", "negative duration"},
		{"-0", "negative duration"},
		{"30", "missing unit"},
		{"5y", `unknown unit "y"`},
		{"5D", `unknown unit "D"`},
		{"1w-2d", `unknown unit "w-"`},
		{"d", "invalid duration"},
		{".d", "invalid duration"},
		{"+", "invalid duration"},
		{" 5m", "invalid duration"},
		{"15251w", "out of range"},
		{"106752d", "out of range"},
		{"9223372036854775808ns", "out of range"},
		{"99999999999999999999s", "out of range"},
		{"15250w2d", "out of range"},
	}
	for _, tt := range tests {
		d, err := ParseDuration(tt.in)
		if err == nil {
			t.Errorf("ParseDuration(%q) = %v, want error", tt.in, d)
			continue
		}
		if !strings.Contains(err.Error(), tt.want) {
			t.Errorf("ParseDuration(%q) error %q, want it to contain %q", tt.in, err, tt.want)
		}
	}
}

func TestDurationString(t *testing.T) {
	tests := []struct {
		d    time.Duration
		want string
	}{
		{0, "0s"},
		{250 * time.Millisecond, "250ms"},
		{30 * time.Second, "30s"},
		{5 * time.Minute, "5m"},
		{90 * time.Minute, "1h30m"},
		{time.Hour, "1h"},
		{10 * time.Minute, "10m"},
		{Day, "1d"},
		{36 * time.Hour, "1d12h"},
		{Week, "1w"},
		{9 * Day, "9d"},
		{365 * Day, "365d"},
		{Day + 1500*time.Millisecond, "1d1.5s"},
	}
	for _, tt := range tests {
		if got := Duration(tt.d).String(); got != tt.want {
			t.Errorf("Duration(%v).String() = %q, want %q", tt.d, got, tt.want)
		}
		text, err := Duration(tt.d).MarshalText()
		if err != nil || string(text) != tt.want {
			t.Errorf("Duration(%v).MarshalText() = %q, %v", tt.d, text, err)
		}
		var back Duration
		if err := back.UnmarshalText([]byte(tt.want)); err != nil || time.Duration(back) != tt.d {
			t.Errorf("UnmarshalText(%q) = %v, %v; want %v", tt.want, time.Duration(back), err, tt.d)
		}
	}
}

func FuzzParseDuration(f *testing.F) {
	for _, s := range []string{"0", "1w2d", "1d12h", "30d", "1.5h", "250ms", "-5m", "", "9223372036854775807ns", ".5w", "1µs"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := ParseDuration(s)
		if err != nil {
			if d != 0 {
				t.Fatalf("ParseDuration(%q) = %v with error %v", s, d, err)
			}
			return
		}
		if d < 0 {
			t.Fatalf("ParseDuration(%q) = %v, negative", s, d)
		}
		// Go syntax means what Go says it means.
		if g, gerr := time.ParseDuration(s); gerr == nil && g != d {
			t.Fatalf("ParseDuration(%q) = %v, time.ParseDuration = %v", s, d, g)
		}
		// String reads back to the same value.
		str := Duration(d).String()
		back, err := ParseDuration(str)
		if err != nil || back != d {
			t.Fatalf("ParseDuration(%q) = %v; String %q reads back as %v, %v", s, d, str, back, err)
		}
	})
}
