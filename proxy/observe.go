package proxy

import (
	"time"

	"github.com/claudeflare/claudeflare/internal/acctstate"
	"github.com/claudeflare/claudeflare/store"
)

// Failover reasons passed to Observer.Failover: the values of the reason
// label of claudeflare_failovers_total.
const (
	ReasonRateLimited  = "rate_limited"  // 429 or a hard unified status
	ReasonUnauthorized = "unauthorized"  // 401 the account cannot recover from
	ReasonOverloaded   = "overloaded"    // 529
	ReasonServerError  = "server_error"  // other 5xx
	ReasonConnection   = "connection"    // dial, TLS or read error before the first byte
	ReasonTokenRefresh = "token_refresh" // no valid access token could be had
	// ReasonAccountRefused: the upstream refused the account itself (a
	// 400/403 naming the organization or the credit balance).
	ReasonAccountRefused = "account_refused"
)

// Observer is told what the proxy does, for metrics. Its methods are
// called on request goroutines and must be fast and never block. A nil
// Options.Observer observes nothing.
type Observer interface {
	// Request is called once per finished client request with its log row.
	Request(r store.Request)
	// Failover is called when a request leaves account for reason.
	Failover(account, reason string)
	// Refresh is called after each OAuth refresh of account.
	Refresh(account string, ok bool)
}

type nopObserver struct{}

func (nopObserver) Request(store.Request)   {}
func (nopObserver) Failover(string, string) {}
func (nopObserver) Refresh(string, bool)    {}

// AccountStatus is a snapshot of one account's in-memory state.
type AccountStatus struct {
	Name            string
	Kind            string
	Paused          bool
	NeedsLogin      bool
	Usable          bool
	Reason          string // why not usable
	RateLimitStatus string
	Util5h, Util7d  float64 // negative when unknown
	Reset           time.Time
	Reset5h         time.Time
	Reset7d         time.Time
	BlockedUntil    time.Time
	InFlight        int
	Served          int64
	// State is the account's state in the one set of words
	// (internal/acctstate): ok, paused, needs_login, key_refused,
	// quarantined, refresh_blocked, limited, limited_model; its model
	// limits and extra-usage mark ride along.
	State acctstate.State
	// Overage is the account's extra-usage policy (store.OverageAvoid or
	// store.OverageAllow).
	Overage string
}

// Accounts returns a snapshot of every account, in priority order.
func (s *Server) Accounts() []AccountStatus {
	now := s.now()
	s.pool.mu.Lock()
	defer s.pool.mu.Unlock()
	out := make([]AccountStatus, 0, len(s.pool.accounts))
	for _, a := range s.pool.accounts {
		ok, _, reason := a.usable(now)
		st := AccountStatus{
			Name: a.Name, Kind: a.Kind, Paused: a.Paused, NeedsLogin: a.Status == store.StatusNeedsLogin,
			Usable: ok, Reason: reason, RateLimitStatus: a.limit.Status,
			Util5h: a.limit.Util5h, Util7d: a.limit.Util7d,
			Reset: a.limit.Reset, Reset5h: a.limit.Reset5h, Reset7d: a.limit.Reset7d,
			InFlight: a.inflight, Served: a.served,
			State: a.state(now), Overage: a.Overage,
		}
		if st.Overage == "" {
			st.Overage = store.OverageAvoid
		}
		if a.limit.Blocked(now) {
			st.BlockedUntil = a.limit.Until
		}
		out = append(out, st)
	}
	return out
}

// RecorderStats describes the request-log queue.
type RecorderStats struct {
	Queued, Capacity                int
	QueuedBytes, CapacityBytes      int64 // held by the queued records; log.queue_bytes
	DroppedPayloads, DroppedRecords int64
	FailedRecords                   int64 // lost to a database error
}

// RecorderStats returns the request-log queue's counters.
func (s *Server) RecorderStats() RecorderStats {
	return RecorderStats{
		Queued: len(s.rec.ch), Capacity: cap(s.rec.ch),
		QueuedBytes: s.rec.queuedBytes.Load(), CapacityBytes: s.rec.queueBytes,
		DroppedPayloads: s.rec.droppedPayloads.Load(), DroppedRecords: s.rec.droppedRecords.Load(),
		FailedRecords: s.rec.failedRecords.Load(),
	}
}
