package retention_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/claudeflare/claudeflare/config"
	"github.com/claudeflare/claudeflare/internal/logtest"
	"github.com/claudeflare/claudeflare/internal/testutil"
	"github.com/claudeflare/claudeflare/retention"
	"github.com/claudeflare/claudeflare/store"
)

// plainSeal stands in for the vault: retention never opens payloads.
func plainSeal(_ string, p []byte) (int64, []byte, error) { return 1, append([]byte(nil), p...), nil }

var t0 = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

func openLog(t testing.TB) *store.DB {
	t.Helper()
	db, err := store.OpenLog(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func fill(t testing.TB, db *store.DB, n int) logtest.Options {
	t.Helper()
	o := logtest.Options{N: n, Start: t0, Step: time.Second, Seal: plainSeal}
	if err := logtest.Fill(context.Background(), db, o); err != nil {
		t.Fatal(err)
	}
	return o
}

func counts(t testing.TB, db *store.DB) (reqs, pays int64) {
	t.Helper()
	if err := db.R.QueryRow(`SELECT (SELECT count(*) FROM requests), (SELECT count(*) FROM payloads)`).Scan(&reqs, &pays); err != nil {
		t.Fatal(err)
	}
	return reqs, pays
}

func countWhere(t testing.TB, db *store.DB, q string, args ...any) int64 {
	t.Helper()
	var n int64
	if err := db.R.Get(&n, q, args...); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestDryRunDeletesNothing(t *testing.T) {
	db := openLog(t)
	fill(t, db, 1000)
	cut := t0.Add(400 * time.Second) // rows 0..399 are older
	for _, typ := range []retention.Type{retention.Requests, retention.Payloads, retention.All} {
		res, err := retention.Cleanup(context.Background(), db, retention.Options{Type: typ, Before: cut, DryRun: true})
		if err != nil {
			t.Fatal(err)
		}
		wantReqs := int64(400)
		if typ == retention.Payloads {
			wantReqs = 0
		}
		if !res.DryRun || res.Requests != wantReqs || res.Payloads != 400 {
			t.Errorf("%s: dry run counted %+v", typ, res)
		}
		if r, p := counts(t, db); r != 1000 || p != 1000 {
			t.Fatalf("%s: dry run deleted rows: %d requests %d payloads left", typ, r, p)
		}
	}
}

func TestCleanupRemovesExactlyOlderRows(t *testing.T) {
	db := openLog(t)
	fill(t, db, 3000)
	cut := t0.Add(1234 * time.Second) // row 1234 has ts == cut and stays
	var last retention.Progress
	res, err := retention.Cleanup(context.Background(), db, retention.Options{
		Type: retention.Requests, Before: cut, BatchSize: 100,
		Progress: func(p retention.Progress) {
			if p.Done < last.Done {
				t.Errorf("progress went back: %+v after %+v", p, last)
			}
			last = p
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Requests != 1234 || res.Payloads != 1234 || res.Batches < 13 {
		t.Errorf("result %+v", res)
	}
	if last.Done != last.Total || last.Total != 2468 {
		t.Errorf("last progress %+v", last)
	}
	if n := countWhere(t, db, `SELECT count(*) FROM requests WHERE ts < ?`, store.ToMS(cut)); n != 0 {
		t.Errorf("%d older requests left", n)
	}
	if n := countWhere(t, db, `SELECT count(*) FROM requests WHERE ts >= ?`, store.ToMS(cut)); n != 3000-1234 {
		t.Errorf("%d younger requests left, want %d", n, 3000-1234)
	}
	if n := countWhere(t, db, `SELECT count(*) FROM payloads WHERE request_seq NOT IN (SELECT seq FROM requests)`); n != 0 {
		t.Errorf("%d orphan payloads", n)
	}
	if r, p := counts(t, db); r != 1766 || p != 1766 {
		t.Errorf("left %d requests %d payloads", r, p)
	}
	// The request exactly at the cut survives, the one before it does not.
	if n := countWhere(t, db, `SELECT count(*) FROM requests WHERE id IN ('req-00001233', 'req-00001234')`); n != 1 {
		t.Errorf("boundary rows: %d", n)
	}
	if n := countWhere(t, db, `SELECT count(*) FROM requests WHERE id = 'req-00001234'`); n != 1 {
		t.Error("the request at the cut was deleted")
	}
}

func TestCleanupPayloadsKeepsRequests(t *testing.T) {
	db := openLog(t)
	fill(t, db, 500)
	res, err := retention.Cleanup(context.Background(), db, retention.Options{Type: retention.Payloads, Before: t0.Add(200 * time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	if res.Requests != 0 || res.Payloads != 200 {
		t.Errorf("result %+v", res)
	}
	if r, p := counts(t, db); r != 500 || p != 300 {
		t.Errorf("left %d requests %d payloads", r, p)
	}
}

func TestCleanupAllTakesOldPayloadsOfYoungRequests(t *testing.T) {
	db := openLog(t)
	fill(t, db, 100)
	// A payload stamped older than its request (clock skew): type all
	// deletes it with the old payloads, type requests would not.
	if _, err := db.W.Exec(`UPDATE payloads SET ts = 0 WHERE request_seq = (SELECT seq FROM requests WHERE id = 'req-00000090')`); err != nil {
		t.Fatal(err)
	}
	cut := t0.Add(50 * time.Second)
	dry, err := retention.Cleanup(context.Background(), db, retention.Options{Type: retention.All, Before: cut, DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	res, err := retention.Cleanup(context.Background(), db, retention.Options{Type: retention.All, Before: cut})
	if err != nil {
		t.Fatal(err)
	}
	if res.Requests != 50 || res.Payloads != 51 || dry.Requests != res.Requests || dry.Payloads != res.Payloads {
		t.Errorf("dry %+v, result %+v", dry, res)
	}
	if r, p := counts(t, db); r != 50 || p != 49 {
		t.Errorf("left %d requests %d payloads", r, p)
	}
}

func TestCleanupEverything(t *testing.T) {
	db := openLog(t)
	fill(t, db, 700)
	res, err := retention.Cleanup(context.Background(), db, retention.Options{Type: retention.Payloads, Everything: true, BatchSize: 64})
	if err != nil {
		t.Fatal(err)
	}
	if res.Payloads != 700 {
		t.Errorf("result %+v", res)
	}
	if r, p := counts(t, db); r != 700 || p != 0 {
		t.Errorf("left %d requests %d payloads", r, p)
	}
	res, err = retention.Cleanup(context.Background(), db, retention.Options{Type: retention.All, Everything: true})
	if err != nil {
		t.Fatal(err)
	}
	if res.Requests != 700 {
		t.Errorf("result %+v", res)
	}
	if r, p := counts(t, db); r != 0 || p != 0 {
		t.Errorf("left %d requests %d payloads", r, p)
	}
}

func TestCleanupNeedsACut(t *testing.T) {
	db := openLog(t)
	if _, err := retention.Cleanup(context.Background(), db, retention.Options{Type: retention.All}); err == nil {
		t.Fatal("cleanup without a cut or Everything succeeded")
	}
	if _, err := retention.ParseType("logs"); err == nil {
		t.Fatal("ParseType accepted logs")
	}
}

func TestCleanupCancelled(t *testing.T) {
	db := openLog(t)
	fill(t, db, 1000)
	ctx, cancel := context.WithCancel(context.Background())
	batches := 0
	res, err := retention.Cleanup(ctx, db, retention.Options{Type: retention.All, Everything: true, BatchSize: 100, Pause: -1,
		Progress: func(p retention.Progress) {
			if p.Done > 0 {
				batches++
			}
			if batches == 2 {
				cancel()
			}
		}})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err %v", err)
	}
	if r, _ := counts(t, db); r != 1000-res.Requests || res.Requests == 0 || res.Requests == 1000 {
		t.Errorf("cancelled cleanup: result %+v, %d left", res, r)
	}
}

func fileSize(t testing.TB, path string) int64 {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return st.Size()
}

func TestVacuumReclaimsSpace(t *testing.T) {
	db := openLog(t)
	fill(t, db, 3000)
	if err := retention.Checkpoint(context.Background(), db, time.Second); err != nil {
		t.Fatal(err)
	}
	before := fileSize(t, db.Path)
	res, err := retention.Cleanup(context.Background(), db, retention.Options{Type: retention.All, Before: t0.Add(2500 * time.Second), Vacuum: true, VacuumStep: 50})
	if err != nil {
		t.Fatal(err)
	}
	if res.FreedPages == 0 || res.FreedBytes == 0 {
		t.Errorf("result %+v", res)
	}
	var free int64
	db.W.Get(&free, `PRAGMA freelist_count`)
	if free != 0 {
		t.Errorf("%d free pages left", free)
	}
	after := fileSize(t, db.Path)
	if after >= before*3/4 {
		t.Errorf("file %d bytes before, %d after", before, after)
	}
	if wal := fileSize(t, db.Path+"-wal"); wal != 0 {
		t.Errorf("wal is %d bytes after the truncating checkpoint", wal)
	}
	if r, p := counts(t, db); r != 500 || p != 500 {
		t.Errorf("left %d requests %d payloads", r, p)
	}
}

// TestCleanupWhileWriting runs cleanup and vacuum while writers insert
// through store.InsertRequests, on the same handle (the daemon's sweeper)
// and on a second handle (another process): no write fails, no row that
// should stay is lost.
func TestCleanupWhileWriting(t *testing.T) {
	dir := t.TempDir()
	db, err := store.OpenLog(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	other, err := store.OpenLog(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	fill(t, db, 20000)
	cut := t0.Add(15000 * time.Second)

	now := time.Now()
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var written atomic.Int64
	var failures atomic.Int64
	for w, h := range []*store.DB{db, other} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ctx.Err() == nil; i++ {
				var reqs []store.Request
				var pays []store.Payload
				for j := range 20 {
					id := fmt.Sprintf("live-%d-%d-%d", w, i, j)
					reqs = append(reqs, store.Request{ID: id, TS: store.ToMS(now), Method: "POST", Path: "/v1/messages", Status: 200})
					pays = append(pays, store.Payload{RequestID: id, TS: store.ToMS(now), KeyID: 1, Sealed: make([]byte, 2000)})
				}
				if err := store.InsertRequests(context.Background(), h, reqs, pays); err != nil {
					t.Errorf("write during cleanup: %v", err)
					failures.Add(1)
					return
				}
				written.Add(20)
				time.Sleep(2 * time.Millisecond)
			}
		}()
	}
	// Both writers are writing before the cleanups start, and go on
	// writing after they end: the cleanups run among live writes.
	testutil.WaitFor(t, "the writers' first rows", func() bool { return written.Load() >= 2*20 || t.Failed() })
	res, err := retention.Cleanup(context.Background(), other, retention.Options{Type: retention.All, Before: cut, BatchSize: 500, Vacuum: true})
	if err != nil {
		t.Fatal(err)
	}
	res2, err := retention.Cleanup(context.Background(), db, retention.Options{Type: retention.Payloads, Before: t0.Add(16000 * time.Second), BatchSize: 300, Vacuum: true})
	if err != nil {
		t.Fatal(err)
	}
	after := written.Load()
	testutil.WaitFor(t, "rows written after the cleanups", func() bool { return written.Load() >= after+2*20 || t.Failed() })
	stop()
	wg.Wait()
	if failures.Load() > 0 || written.Load() == 0 {
		t.Fatalf("%d write failures, %d rows written", failures.Load(), written.Load())
	}
	if res.Requests != 15000 || res2.Payloads != 1000 {
		t.Errorf("deleted %+v then %+v", res, res2)
	}
	live := countWhere(t, db, `SELECT count(*) FROM requests WHERE id LIKE 'live-%'`)
	livePays := countWhere(t, db, `SELECT count(*) FROM payloads p JOIN requests r ON r.seq = p.request_seq WHERE r.id LIKE 'live-%'`)
	if live != written.Load() || livePays != written.Load() {
		t.Errorf("wrote %d rows during cleanup, %d requests and %d payloads of them left", written.Load(), live, livePays)
	}
	if n := countWhere(t, db, `SELECT count(*) FROM requests WHERE id LIKE 'req-%'`); n != 5000 {
		t.Errorf("%d old-but-young-enough requests left, want 5000", n)
	}
}

type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func TestSweeper(t *testing.T) {
	db := openLog(t)
	fill(t, db, 1000) // t0 .. t0+999s
	clock := &fakeClock{now: t0.Add(1000 * time.Second)}
	cfg := config.Retention{
		PayloadsMaxAge: config.Duration(500 * time.Second),
		RequestsMaxAge: config.Duration(800 * time.Second),
		Interval:       config.Duration(time.Hour),
	}
	s := retention.NewSweeper(db, cfg, nil, clock.Now)
	ticks := make(chan time.Time)
	var waits []time.Duration
	var mu sync.Mutex
	s.After = func(d time.Duration) <-chan time.Time {
		mu.Lock()
		waits = append(waits, d)
		mu.Unlock()
		return ticks
	}
	swept := make(chan retention.Result)
	s.Swept = func(r retention.Result, err error) {
		if err != nil {
			t.Error(err)
		}
		swept <- r
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Run(ctx); close(done) }()

	ticks <- time.Time{}
	r := <-swept
	// requests older than t0+200s go with their payloads; payloads older
	// than t0+500s go on their own.
	if r.Requests != 200 || r.Payloads != 500 {
		t.Errorf("first sweep %+v", r)
	}
	if n, p := counts(t, db); n != 800 || p != 500 {
		t.Errorf("after first sweep: %d requests %d payloads", n, p)
	}
	clock.Add(100 * time.Second)
	ticks <- time.Time{}
	r = <-swept
	if r.Requests != 100 || r.Payloads != 100 {
		t.Errorf("second sweep %+v", r)
	}
	// Zero means never.
	s.SetConfig(config.Retention{Interval: config.Duration(time.Hour)})
	clock.Add(time.Hour)
	ticks <- time.Time{}
	r = <-swept
	if r.Requests != 0 || r.Payloads != 0 {
		t.Errorf("sweep with zero ages %+v", r)
	}
	cancel()
	<-done
	mu.Lock()
	defer mu.Unlock()
	if len(waits) < 3 || waits[1] != time.Hour || waits[0] > time.Hour {
		t.Errorf("waits %v", waits)
	}
}

func TestSweeperZeroIntervalNeverSweeps(t *testing.T) {
	db := openLog(t)
	fill(t, db, 10)
	s := retention.NewSweeper(db, config.Retention{PayloadsMaxAge: 1, RequestsMaxAge: 1}, nil, func() time.Time { return t0.Add(time.Hour) })
	ticks := make(chan time.Time)
	s.After = func(time.Duration) <-chan time.Time { return ticks }
	s.Swept = func(retention.Result, error) { t.Error("swept with a zero interval") }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Run(ctx); close(done) }()
	ticks <- time.Time{}
	ticks <- time.Time{}
	cancel()
	<-done
	if n, _ := counts(t, db); n != 10 {
		t.Errorf("%d left", n)
	}
}

func TestCleanupGivesCheckpointsBack(t *testing.T) {
	db := openLog(t)
	fill(t, db, 2000)
	var before int64
	db.W.Get(&before, `PRAGMA wal_autocheckpoint`)
	if _, err := retention.Cleanup(context.Background(), db, retention.Options{Type: retention.All, Before: t0.Add(1500 * time.Second), Vacuum: true, BatchSize: 100, CheckpointInterval: time.Nanosecond}); err != nil {
		t.Fatal(err)
	}
	var after int64
	db.W.Get(&after, `PRAGMA wal_autocheckpoint`)
	if before == 0 || after != before {
		t.Errorf("wal_autocheckpoint %d before, %d after", before, after)
	}
	// The write-ahead log was folded back as the cleanup went.
	if wal := fileSize(t, db.Path+"-wal"); wal != 0 {
		t.Errorf("wal %d bytes", wal)
	}
}
