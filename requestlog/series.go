package requestlog

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/claudeflare/claudeflare/store"
)

// MaxSeriesBuckets bounds how many buckets one series may have.
const MaxSeriesBuckets = 2000

// SeriesBucket is one step of GET /api/series: the requests that started
// in [Start, Start+step).
type SeriesBucket struct {
	Start    string `json:"start"` // RFC 3339 UTC
	Requests int64  `json:"requests"`
	// Errors: status >= 400, no status, or an error recorded (as stats).
	Errors                   int64 `json:"errors"`
	P50MS                    int64 `json:"p50_ms"` // 0 for an empty bucket
	P95MS                    int64 `json:"p95_ms"`
	InputTokens              int64 `json:"input_tokens"`
	OutputTokens             int64 `json:"output_tokens"`
	CacheReadInputTokens     int64 `json:"cache_read_input_tokens"`
	CacheCreationInputTokens int64 `json:"cache_creation_input_tokens"`
	// Tokens is the sum of the four above.
	Tokens int64 `json:"tokens"`
	// CostUSD sums the priced rows (API list prices: for subscription
	// accounts the API-equivalent value); null when no row has a price.
	CostUSD *float64 `json:"cost_usd"`
}

// Series buckets the requests of [since, until) by step. Buckets are
// aligned to multiples of step since the Unix epoch (so a step of 1h or
// 24h starts on UTC hours or days); every bucket from the one holding
// since to the one holding until-1ms is returned, oldest first, empty
// ones included. Latency percentiles are nearest-rank, exact, computed
// from (bucket, duration, count) groups rather than rows.
func Series(ctx context.Context, db *store.DB, since, until time.Time, step time.Duration) ([]SeriesBucket, error) {
	stepMS := step.Milliseconds()
	if stepMS < 1000 {
		return nil, errors.New("step: must be at least 1s")
	}
	from, to := store.ToMS(since), store.ToMS(until)
	if to <= from {
		return nil, errors.New("until: not after since")
	}
	first, last := floorDiv(from, stepMS), floorDiv(to-1, stepMS)
	n := last - first + 1
	if n > MaxSeriesBuckets {
		return nil, fmt.Errorf("step: %s gives %d buckets, more than %d; use a longer step or a shorter period", step, n, MaxSeriesBuckets)
	}
	out := make([]SeriesBucket, n)
	for i := range out {
		out[i].Start = time.UnixMilli((first + int64(i)) * stepMS).UTC().Format(time.RFC3339)
	}

	rows, err := db.R.QueryContext(ctx, `SELECT ts / ? AS b, count(*),
		sum(status >= 400 OR status = 0 OR error != ''),
		sum(input_tokens), sum(output_tokens), sum(cache_read_input_tokens), sum(cache_creation_input_tokens),
		sum(cost_usd)
		FROM requests WHERE ts >= ? AND ts < ? GROUP BY b`, stepMS, from, to)
	if err != nil {
		return nil, fmt.Errorf("read request log: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var b int64
		var s SeriesBucket
		var cost sql.NullFloat64
		if err := rows.Scan(&b, &s.Requests, &s.Errors, &s.InputTokens, &s.OutputTokens,
			&s.CacheReadInputTokens, &s.CacheCreationInputTokens, &cost); err != nil {
			return nil, fmt.Errorf("read request log: %w", err)
		}
		i := b - first
		if i < 0 || i >= n {
			continue // ts < 0 rounds toward zero in SQLite: never for real rows
		}
		s.Start = out[i].Start
		s.Tokens = s.InputTokens + s.OutputTokens + s.CacheReadInputTokens + s.CacheCreationInputTokens
		if cost.Valid {
			c := cost.Float64
			s.CostUSD = &c
		}
		out[i] = s
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read request log: %w", err)
	}
	rows.Close()

	if err := seriesLatency(ctx, db, from, to, stepMS, first, out); err != nil {
		return nil, err
	}
	return out, nil
}

// seriesLatency fills each bucket's p50 and p95 from (bucket, duration,
// count) groups, which come ordered by bucket, then duration.
func seriesLatency(ctx context.Context, db *store.DB, from, to, stepMS, first int64, out []SeriesBucket) error {
	rows, err := db.R.QueryContext(ctx, `SELECT ts / ? AS b, duration_ms, count(*) FROM requests
		WHERE ts >= ? AND ts < ? GROUP BY b, duration_ms ORDER BY b, duration_ms`, stepMS, from, to)
	if err != nil {
		return fmt.Errorf("read request durations: %w", err)
	}
	defer rows.Close()
	var cur int64 = -1
	var durs, counts []int64
	flush := func() {
		if cur >= 0 && cur < int64(len(out)) {
			out[cur].P50MS, out[cur].P95MS = nearestRank(durs, counts, 0.5), nearestRank(durs, counts, 0.95)
		}
		durs, counts = durs[:0], counts[:0]
	}
	for rows.Next() {
		var b, d, c int64
		if err := rows.Scan(&b, &d, &c); err != nil {
			return fmt.Errorf("read request durations: %w", err)
		}
		if b-first != cur {
			flush()
			cur = b - first
		}
		durs, counts = append(durs, d), append(counts, c)
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read request durations: %w", err)
	}
	flush()
	return nil
}

// nearestRank is the nearest-rank p-th percentile of the values (ascending)
// with their counts; 0 when there are none.
func nearestRank(values, counts []int64, p float64) int64 {
	var n int64
	for _, c := range counts {
		n += c
	}
	if n == 0 {
		return 0
	}
	want := int64(p*float64(n) + 0.999999999)
	want = max(want, 1)
	var seen int64
	for i, c := range counts {
		seen += c
		if seen >= want {
			return values[i]
		}
	}
	return values[len(values)-1]
}

// floorDiv is a/b rounded down (b > 0).
func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && a < 0 {
		q--
	}
	return q
}
