// Package retention deletes old data from the request log: by age and
// type, in bounded batches of short transactions, so that a daemon writing
// to the same log never waits long; it reclaims the freed space with
// incremental vacuum. The cleanup command and the daemon's periodic Sweeper
// run the same code.
package retention

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/claudeflare/claudeflare/store"
)

// Type is what a cleanup deletes.
type Type string

// Types of data.
const (
	// Requests are request rows; their payloads go with them.
	Requests Type = "requests"
	// Payloads are sealed payloads only; the request rows stay.
	Payloads Type = "payloads"
	// All is both: old requests with their payloads, and old payloads.
	All Type = "all"
)

// ParseType parses "requests", "payloads" or "all".
func ParseType(s string) (Type, error) {
	switch t := Type(s); t {
	case Requests, Payloads, All:
		return t, nil
	}
	return "", fmt.Errorf("unknown type %q: use requests, payloads or all", s)
}

// Defaults for Options.
const (
	// DefaultBatchSize is the most rows one transaction deletes.
	DefaultBatchSize = 5000
	// DefaultBatchTime is the target length of one delete transaction;
	// batches shrink below BatchSize when they take longer.
	DefaultBatchTime = 5 * time.Millisecond
	// DefaultVacuumStep is how many pages one incremental_vacuum frees.
	DefaultVacuumStep = 1024
	// DefaultCheckpointInterval is how often a cleanup checkpoints.
	DefaultCheckpointInterval = 100 * time.Millisecond
)

// Options say what a cleanup deletes and how.
type Options struct {
	Type Type
	// Before is the cut: rows with a timestamp before it are deleted.
	// Ignored when Everything is set.
	Before time.Time
	// Everything deletes all rows of Type that exist when the cleanup
	// starts, whatever their age (cleanup --force). Rows written while it
	// runs stay.
	Everything bool
	// DryRun counts what would be deleted and deletes nothing.
	DryRun bool
	// Vacuum reclaims freed pages afterwards (incremental vacuum in
	// steps) and truncates the write-ahead log.
	Vacuum bool

	// BatchSize caps the rows deleted per transaction (DefaultBatchSize).
	BatchSize int
	// BatchTime is the target duration of one transaction (DefaultBatchTime).
	BatchTime time.Duration
	// Pause is the rest between transactions, so that a writer in another
	// process, polling in its busy handler, finds the lock free. Zero
	// means as long as the last batch took, at least 1ms; a negative
	// value means no pause.
	Pause time.Duration
	// VacuumStep is the pages freed per incremental_vacuum (DefaultVacuumStep).
	VacuumStep int
	// CheckpointInterval: while it deletes, the cleanup turns SQLite's
	// automatic checkpoints off on its connection and copies the
	// write-ahead log back into the database itself, with a passive
	// checkpoint (which never holds the write lock) at most this often
	// (DefaultCheckpointInterval). Each checkpoint costs two fsyncs, and
	// at the automatic 1000 pages they were most of a big cleanup's time.
	// Negative leaves the automatic checkpoints on.
	CheckpointInterval time.Duration

	// Progress, when set, is called after the count and after every batch.
	Progress func(Progress)
	// Log receives debug lines; nil discards them.
	Log *slog.Logger
}

// Progress reports a running cleanup.
type Progress struct {
	Phase string // "delete" or "vacuum"
	Done  int64  // rows (requests plus payloads) deleted, or pages freed
	Total int64  // rows to delete, or pages to free
}

// Result is what a cleanup deleted, or would delete with DryRun.
type Result struct {
	Type       Type
	DryRun     bool
	Before     time.Time // the cut; zero with Everything
	Requests   int64     // request rows deleted
	Payloads   int64     // payload rows deleted (including those of deleted requests)
	Batches    int
	FreedPages int64 // pages returned to the file system by vacuum
	FreedBytes int64
	Duration   time.Duration
}

func (o *Options) defaults() error {
	switch o.Type {
	case "":
		o.Type = All
	case Requests, Payloads, All:
	default:
		return fmt.Errorf("unknown type %q", o.Type)
	}
	if !o.Everything && o.Before.IsZero() {
		return errors.New("no cut: give a time to delete before, or delete everything")
	}
	if o.BatchSize <= 0 {
		o.BatchSize = DefaultBatchSize
	}
	if o.BatchTime <= 0 {
		o.BatchTime = DefaultBatchTime
	}
	if o.VacuumStep <= 0 {
		o.VacuumStep = DefaultVacuumStep
	}
	if o.CheckpointInterval == 0 {
		o.CheckpointInterval = DefaultCheckpointInterval
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Progress == nil {
		o.Progress = func(Progress) {}
	}
	return nil
}

// bounds select the rows a cleanup deletes: ts < cut and seq <= maxSeq.
type bounds struct {
	cut    int64 // exclusive, unix ms
	maxSeq int64 // inclusive
}

// Cleanup deletes (or with DryRun counts) the log data opts selects, in
// batches of at most opts.BatchSize rows, each in its own short
// transaction on db.W. A cancelled ctx stops it between batches with what
// was deleted so far and ctx's error.
func Cleanup(ctx context.Context, db *store.DB, opts Options) (Result, error) {
	if err := opts.defaults(); err != nil {
		return Result{}, fmt.Errorf("cleanup: %w", err)
	}
	start := time.Now()
	res := Result{Type: opts.Type, DryRun: opts.DryRun}
	b := bounds{cut: math.MaxInt64, maxSeq: math.MaxInt64}
	if opts.Everything {
		// Only what exists now: rows the daemon writes meanwhile stay.
		var err error
		if b.maxSeq, err = db.MaxRequestSeq(ctx); err != nil {
			return res, fmt.Errorf("cleanup: read log: %w", err)
		}
	} else {
		b.cut = store.ToMS(opts.Before)
		res.Before = opts.Before.UTC()
	}

	reqs, pays, err := count(ctx, db, opts.Type, b)
	if err != nil {
		return res, err
	}
	if opts.DryRun {
		res.Requests, res.Payloads = reqs, pays
		res.Duration = time.Since(start)
		return res, nil
	}
	total := reqs + pays
	opts.Progress(Progress{Phase: "delete", Total: total})

	cp, err := startCheckpoints(ctx, db, opts.CheckpointInterval)
	if err != nil {
		return res, fmt.Errorf("cleanup: %w", err)
	}
	defer cp.stop()
	d := deleter{db: db, opts: &opts, b: b, res: &res, total: total, cp: cp}
	if opts.Type == Requests || opts.Type == All {
		if err := d.run(ctx, deleteRequests); err != nil {
			res.Duration = time.Since(start)
			return res, err
		}
	}
	if opts.Type == Payloads || opts.Type == All {
		if err := d.run(ctx, deletePayloads); err != nil {
			res.Duration = time.Since(start)
			return res, err
		}
	}
	opts.Log.Debug("cleanup deleted", "type", string(opts.Type), "requests", res.Requests, "payloads", res.Payloads, "batches", res.Batches)
	cp.stop()
	if opts.Vacuum {
		pages, bytes, err := Vacuum(ctx, db, VacuumOptions{Step: opts.VacuumStep, BatchTime: opts.BatchTime, Progress: opts.Progress,
			Pause: opts.Pause, CheckpointInterval: opts.CheckpointInterval, Log: opts.Log})
		res.FreedPages, res.FreedBytes = pages, bytes
		if err != nil {
			res.Duration = time.Since(start)
			return res, err
		}
	}
	res.Duration = time.Since(start)
	return res, nil
}

// count returns how many requests and payloads the bounds select for typ.
func count(ctx context.Context, db *store.DB, typ Type, b bounds) (reqs, pays int64, err error) {
	switch typ {
	case Requests:
		reqs, pays, err = db.CountOldRequests(ctx, b.cut, b.maxSeq)
	case Payloads:
		pays, err = db.CountOldPayloads(ctx, b.cut, b.maxSeq)
	case All:
		reqs, pays, err = db.CountOldAll(ctx, b.cut, b.maxSeq)
	}
	if err != nil {
		return 0, 0, fmt.Errorf("cleanup: count rows: %w", err)
	}
	return reqs, pays, nil
}

type batchFunc func(ctx context.Context, db *store.DB, b bounds, limit int) (reqs, pays int64, err error)

// deleteRequests deletes up to limit of the oldest selected requests and
// their payloads in one transaction. The payloads are deleted first and
// explicitly, so that they can be counted (cascaded deletes are not).
func deleteRequests(ctx context.Context, db *store.DB, b bounds, limit int) (reqs, pays int64, err error) {
	err = store.Tx(ctx, db, func(tx *sqlx.Tx) error {
		reqs, pays, err = store.DeleteOldRequests(ctx, tx, b.cut, b.maxSeq, limit)
		return err
	})
	return reqs, pays, err
}

// deletePayloads deletes up to limit of the oldest selected payloads.
func deletePayloads(ctx context.Context, db *store.DB, b bounds, limit int) (reqs, pays int64, err error) {
	err = store.Tx(ctx, db, func(tx *sqlx.Tx) error {
		pays, err = store.DeleteOldPayloads(ctx, tx, b.cut, b.maxSeq, limit)
		return err
	})
	return 0, pays, err
}

type deleter struct {
	db    *store.DB
	opts  *Options
	b     bounds
	res   *Result
	total int64
	size  int // current batch size, adapted to BatchTime
	cp    *checkpointer
}

// run repeats fn until a batch deletes nothing. The batch size adapts so
// that one transaction takes about BatchTime: it halves after a slow batch
// and grows by half after a fast one, never above BatchSize.
func (d *deleter) run(ctx context.Context, fn batchFunc) error {
	if d.size == 0 {
		d.size = min(d.opts.BatchSize, 500)
	}
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		t0 := time.Now()
		reqs, pays, err := fn(ctx, d.db, d.b, d.size)
		if err != nil {
			return fmt.Errorf("cleanup: %w", err)
		}
		took := time.Since(t0)
		d.res.Batches++
		d.res.Requests += reqs
		d.res.Payloads += pays
		d.opts.Progress(Progress{Phase: "delete", Done: d.res.Requests + d.res.Payloads, Total: d.total})
		if reqs == 0 && pays == 0 {
			return d.cp.maybe(ctx, true)
		}
		if err := d.cp.maybe(ctx, false); err != nil {
			return err
		}
		d.size = adapt(d.size, took, d.opts.BatchTime, d.opts.BatchSize)
		if err := rest(ctx, d.opts.Pause, took); err != nil {
			return err
		}
	}
}

// checkpointer takes over checkpointing from SQLite while a cleanup or
// vacuum runs: automatic checkpoints off on the writer connection, a
// passive checkpoint (which never holds the write lock) at most every
// interval instead. A nil checkpointer leaves SQLite's alone.
type checkpointer struct {
	db       *store.DB
	interval time.Duration
	last     time.Time
	prev     int64 // wal_autocheckpoint to restore
	stopped  bool
}

func startCheckpoints(ctx context.Context, db *store.DB, interval time.Duration) (*checkpointer, error) {
	if interval <= 0 {
		return nil, nil
	}
	c := &checkpointer{db: db, interval: interval, last: time.Now()}
	var err error
	if c.prev, err = db.AutoCheckpoint(ctx); err != nil {
		return nil, fmt.Errorf("read checkpoint setting: %w", err)
	}
	if err := db.SetAutoCheckpoint(ctx, 0); err != nil {
		return nil, fmt.Errorf("set checkpoint setting: %w", err)
	}
	return c, nil
}

// maybe checkpoints when interval has passed since the last time, or now
// with final.
func (c *checkpointer) maybe(ctx context.Context, final bool) error {
	if c == nil || c.stopped || !final && time.Since(c.last) < c.interval {
		return nil
	}
	if err := c.db.CheckpointPassive(ctx); err != nil {
		return fmt.Errorf("checkpoint: %w", err)
	}
	c.last = time.Now()
	return nil
}

// stop gives checkpointing back to SQLite, as it was.
func (c *checkpointer) stop() {
	if c == nil || c.stopped {
		return
	}
	c.stopped = true
	c.db.SetAutoCheckpoint(context.Background(), c.prev)
}

// adapt returns the next batch size: half after a batch slower than
// target, half again as many after one faster than half of it, within
// [16, limit].
func adapt(size int, took, target time.Duration, limit int) int {
	switch {
	case took > target:
		return max(16, size/2)
	case took < target/2:
		return min(limit, size+size/2+1)
	}
	return size
}

// rest waits between two transactions: pause, or when it is zero as long
// as the last one took (at least a millisecond). Half the time free is
// what lets a writer in another process, whose busy handler retries after
// 1, 3, 8, 18... ms, find the lock free at its first or second retry; the
// benchmarks measure its latency.
func rest(ctx context.Context, pause, took time.Duration) error {
	p := pause
	if p < 0 {
		return nil
	}
	if p == 0 {
		p = max(took, time.Millisecond)
	}
	t := time.NewTimer(p)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// VacuumOptions tune Vacuum.
type VacuumOptions struct {
	// Step caps the pages freed per incremental_vacuum (DefaultVacuumStep);
	// like delete batches, steps adapt to take about BatchTime.
	Step      int
	BatchTime time.Duration
	// Pause is the rest between steps, as in Options.
	Pause time.Duration
	// CheckpointTimeout bounds the wait of the final
	// wal_checkpoint(TRUNCATE) for readers (default 250ms); when they do
	// not finish in time the log is left for the next checkpoint.
	CheckpointTimeout time.Duration
	// CheckpointInterval is as in Options (DefaultCheckpointInterval).
	CheckpointInterval time.Duration
	Progress           func(Progress)
	Log                *slog.Logger
}

// Vacuum returns the log's free pages to the file system with
// PRAGMA incremental_vacuum in steps of Step pages, each its own short
// write, then truncates the write-ahead log. The log stays usable
// throughout. It returns the pages and bytes freed.
func Vacuum(ctx context.Context, db *store.DB, opts VacuumOptions) (pages, bytes int64, err error) {
	if opts.Step <= 0 {
		opts.Step = DefaultVacuumStep
	}
	if opts.BatchTime <= 0 {
		opts.BatchTime = DefaultBatchTime
	}
	if opts.CheckpointTimeout <= 0 {
		opts.CheckpointTimeout = 250 * time.Millisecond
	}
	if opts.CheckpointInterval == 0 {
		opts.CheckpointInterval = DefaultCheckpointInterval
	}
	if opts.Progress == nil {
		opts.Progress = func(Progress) {}
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	pageSize, err := db.PageSize(ctx)
	if err != nil {
		return 0, 0, fmt.Errorf("vacuum: read page size: %w", err)
	}
	free, err := db.FreePages(ctx)
	if err != nil {
		return 0, 0, fmt.Errorf("vacuum: read free pages: %w", err)
	}
	total := free
	opts.Progress(Progress{Phase: "vacuum", Total: total})
	cp, err := startCheckpoints(ctx, db, opts.CheckpointInterval)
	if err != nil {
		return 0, 0, fmt.Errorf("vacuum: %w", err)
	}
	defer cp.stop()
	step := min(opts.Step, 64)
	for free > 0 {
		if err := ctx.Err(); err != nil {
			return pages, pages * pageSize, err
		}
		t0 := time.Now()
		if err := db.IncrementalVacuum(ctx, step); err != nil {
			return pages, pages * pageSize, fmt.Errorf("vacuum: %w", err)
		}
		took := time.Since(t0)
		left, err := db.FreePages(ctx)
		if err != nil {
			return pages, pages * pageSize, fmt.Errorf("vacuum: read free pages: %w", err)
		}
		if left >= free {
			break // nothing freed: another writer is freeing pages as fast
		}
		pages += free - left
		free = left
		opts.Progress(Progress{Phase: "vacuum", Done: pages, Total: total})
		step = adapt(step, took, opts.BatchTime, opts.Step)
		if err := cp.maybe(ctx, false); err != nil {
			return pages, pages * pageSize, fmt.Errorf("vacuum: %w", err)
		}
		if free > 0 {
			if err := rest(ctx, opts.Pause, took); err != nil {
				return pages, pages * pageSize, err
			}
		}
	}
	cp.stop()
	if err := Checkpoint(ctx, db, opts.CheckpointTimeout); err != nil {
		opts.Log.Debug("wal checkpoint incomplete", "err", err)
	}
	return pages, pages * pageSize, nil
}

// ErrCheckpointBusy is returned by Checkpoint when readers kept the
// write-ahead log from being truncated.
var ErrCheckpointBusy = errors.New("checkpoint: readers still use the write-ahead log")

// Checkpoint copies the write-ahead log into the database and truncates
// it, waiting at most timeout for readers and writers (instead of the
// connection's long busy timeout, so that the daemon's writer is never
// held up long).
func Checkpoint(ctx context.Context, db *store.DB, timeout time.Duration) error {
	busy, err := db.CheckpointTruncateWithin(ctx, timeout.Milliseconds())
	if err != nil {
		return fmt.Errorf("checkpoint: %w", err)
	}
	if busy {
		return ErrCheckpointBusy
	}
	return nil
}
