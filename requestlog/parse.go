package requestlog

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/claudeflare/claudeflare/config"
)

// The filters' values are read the same way by `requests list`, `payload
// export` and GET /api/requests; each caller adds the flag or parameter
// name to the error.

// ParseWhen reads a since/until value: a duration back from now (Go syntax
// plus d and w) or an RFC 3339 time (a bare date also works).
func ParseWhen(s string, now time.Time) (time.Time, error) {
	s = strings.TrimSpace(s)
	if d, err := config.ParseDuration(s); err == nil {
		if d < 0 {
			return time.Time{}, fmt.Errorf("%q: the duration must not be negative", s)
		}
		return now.Add(-d), nil
	}
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05", "2006-01-02"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("%q: want a duration (30m, 12h, 7d) or an RFC 3339 time", s)
}

// ParseStatus reads a status filter: a code (429) or a class (4xx), as the
// inclusive range it stands for.
func ParseStatus(s string) (lo, hi int, err error) {
	s = strings.ToLower(strings.TrimSpace(s))
	if len(s) == 3 && strings.HasSuffix(s, "xx") && s[0] >= '1' && s[0] <= '5' {
		c := int(s[0]-'0') * 100
		return c, c + 99, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 100 || n > 599 {
		return 0, 0, fmt.Errorf("%q: want a status code (429) or a class (4xx)", s)
	}
	return n, n, nil
}
