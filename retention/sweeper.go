package retention

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/claudeflare/claudeflare/config"
	"github.com/claudeflare/claudeflare/store"
)

// Sweeper is the daemon's periodic cleanup: every retention.interval it
// deletes payloads older than retention.payloads_max_age and requests older
// than retention.requests_max_age, with the same code as the cleanup
// command, then reclaims the space. A zero duration means never.
type Sweeper struct {
	db  *store.DB
	log *slog.Logger
	now func() time.Time

	// After makes the timer between sweeps; tests replace it. Default
	// time.After.
	After func(time.Duration) <-chan time.Time
	// Swept, when set, is called after every sweep (for tests and metrics).
	Swept func(Result, error)

	mu  sync.Mutex
	cfg config.Retention
}

// NewSweeper returns a sweeper of db with cfg. now is the clock the cut is
// computed from (nil means time.Now).
func NewSweeper(db *store.DB, cfg config.Retention, log *slog.Logger, now func() time.Time) *Sweeper {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if now == nil {
		now = time.Now
	}
	return &Sweeper{db: db, log: log, now: now, cfg: cfg, After: time.After}
}

// SetConfig replaces the retention settings (on a reload); the next sweep
// uses them.
func (s *Sweeper) SetConfig(cfg config.Retention) {
	s.mu.Lock()
	s.cfg = cfg
	s.mu.Unlock()
}

func (s *Sweeper) config() config.Retention {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cfg
}

// firstSweepDelay lets the daemon start serving before the first sweep.
const firstSweepDelay = time.Minute

// Run sweeps once shortly after it starts, then every interval, until ctx
// is done. With a zero interval it never sweeps, but keeps waiting for a
// reload (SetConfig) that sets one, checking once a minute.
func (s *Sweeper) Run(ctx context.Context) {
	wait := firstSweepDelay
	for {
		interval := time.Duration(s.config().Interval)
		if interval <= 0 {
			wait = time.Minute
		} else if wait > interval {
			wait = interval
		}
		select {
		case <-ctx.Done():
			return
		case <-s.After(wait):
		}
		interval = time.Duration(s.config().Interval)
		if interval <= 0 {
			continue
		}
		s.Sweep(ctx)
		wait = interval
	}
}

// Sweep runs one sweep now and returns what it deleted. Errors are logged
// and returned; the next sweep tries again.
func (s *Sweeper) Sweep(ctx context.Context) (Result, error) {
	cfg := s.config()
	now := s.now()
	var total Result
	total.Type = All
	var firstErr error
	run := func(typ Type, age config.Duration) {
		if age <= 0 || firstErr != nil {
			return
		}
		res, err := Cleanup(ctx, s.db, Options{Type: typ, Before: now.Add(-time.Duration(age)), Log: s.log})
		total.Requests += res.Requests
		total.Payloads += res.Payloads
		total.Batches += res.Batches
		total.Duration += res.Duration
		if err != nil {
			firstErr = err
		}
	}
	run(Requests, cfg.RequestsMaxAge)
	run(Payloads, cfg.PayloadsMaxAge)
	if firstErr == nil && total.Requests+total.Payloads > 0 {
		t0 := time.Now()
		pages, bytes, err := Vacuum(ctx, s.db, VacuumOptions{Log: s.log})
		total.FreedPages, total.FreedBytes = pages, bytes
		total.Duration += time.Since(t0)
		firstErr = err
	}
	switch {
	case firstErr != nil && ctx.Err() == nil:
		s.log.Warn("retention sweep failed", "err", firstErr, "requests", total.Requests, "payloads", total.Payloads)
	case total.Requests+total.Payloads > 0:
		s.log.Info("retention sweep", "requests", total.Requests, "payloads", total.Payloads,
			"freed_bytes", total.FreedBytes, "duration", total.Duration.Round(time.Millisecond))
	default:
		s.log.Debug("retention sweep: nothing to delete")
	}
	if s.Swept != nil {
		s.Swept(total, firstErr)
	}
	return total, firstErr
}
