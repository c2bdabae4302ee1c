package requestlog_test

import (
	"context"
	"testing"
	"time"

	"github.com/claudeflare/claudeflare/requestlog"
	"github.com/claudeflare/claudeflare/store"
)

// Series buckets the log on step boundaries, keeps empty buckets, counts
// errors as stats does, and gives exact per-bucket percentiles and cost.
func TestSeries(t *testing.T) {
	ctx := context.Background()
	db, err := store.OpenLog(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	base := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	cost := func(v float64) *float64 { return &v }
	at := func(m int) int64 { return base.Add(time.Duration(m) * time.Minute).UnixMilli() }
	rows := []store.Request{
		// bucket 10:00
		{ID: "a", TS: at(1), Status: 200, DurationMS: 100, InputTokens: 10, OutputTokens: 5, CostUSD: cost(0.25)},
		{ID: "b", TS: at(2), Status: 200, DurationMS: 300, InputTokens: 1, CacheReadInputTokens: 100},
		{ID: "c", TS: at(3), Status: 429, DurationMS: 200, CostUSD: cost(0.5)},
		// bucket 10:10 is empty; bucket 10:20
		{ID: "d", TS: at(25), Status: 0, Error: "upstream gone", DurationMS: 50},
		// outside the window
		{ID: "e", TS: at(-5), Status: 200, DurationMS: 1},
		{ID: "f", TS: at(30), Status: 200, DurationMS: 1},
	}
	for i := range rows {
		rows[i].Method, rows[i].Path = "POST", "/v1/messages"
	}
	if err := store.InsertRequests(ctx, db, rows, nil); err != nil {
		t.Fatal(err)
	}
	got, err := requestlog.Series(ctx, db, base, base.Add(30*time.Minute), 10*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 {
		t.Fatalf("%d buckets, want 3: %+v", len(got), got)
	}
	b0, b1, b2 := got[0], got[1], got[2]
	if b0.Start != "2026-12-02T10:00:00Z" || b1.Start != "2026-12-02T10:10:00Z" || b2.Start != "2026-12-02T10:20:00Z" {
		t.Errorf("starts %s %s %s", b0.Start, b1.Start, b2.Start)
	}
	if b0.Requests != 3 || b0.Errors != 1 || b0.P50MS != 200 || b0.P95MS != 300 || b0.Tokens != 116 || b0.CostUSD == nil || *b0.CostUSD != 0.75 {
		t.Errorf("bucket 0: %+v", b0)
	}
	if b1.Requests != 0 || b1.CostUSD != nil || b1.P50MS != 0 {
		t.Errorf("empty bucket: %+v", b1)
	}
	if b2.Requests != 1 || b2.Errors != 1 || b2.P95MS != 50 || b2.CostUSD != nil {
		t.Errorf("bucket 2: %+v", b2)
	}

	if _, err := requestlog.Series(ctx, db, base, base.Add(24*time.Hour), time.Second); err == nil {
		t.Error("86400 buckets accepted")
	}
}
