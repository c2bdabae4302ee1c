package proxy

import (
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/claudeflare/claudeflare/internal/apierr"
)

// The three answers of GET /health. Load balancers key on the HTTP code
// (200 for ok and degraded, 503 for down), people on the word.
const (
	HealthOK       = "ok"       // every account usable, the request log writing
	HealthDegraded = "degraded" // requests are served, but something is out
	HealthDown     = "down"     // no request can be served now
)

// healthWindow is how long a loss of request-log records (a failed write,
// a full queue) keeps /health degraded after it was last seen: long
// enough for a probe every minute to see it, short enough that the word
// comes back to ok soon after the cause is gone.
const healthWindow = 5 * time.Minute

type healthReply struct {
	Status  string   `json:"status"`
	Reasons []string `json:"reasons,omitempty"`
	// Counts only: /health needs no client key, so it names no account
	// (GET /api/accounts does, behind dashboard.view).
	Accounts       int            `json:"accounts"`
	UsableAccounts int            `json:"usable_accounts"`
	Unusable       map[string]int `json:"unusable,omitempty"` // state word -> accounts
	Strategy       string         `json:"strategy"`
	// RequestLog is "ok", "unavailable" (not open: requests are not
	// logged), "failing" (writes failed lately) or "dropping" (the queue
	// was full lately).
	RequestLog string `json:"request_log"`
	Recorder   struct {
		Queued          int   `json:"queued"`
		DroppedPayloads int64 `json:"dropped_payloads"`
		DroppedRecords  int64 `json:"dropped_records"`
		FailedRecords   int64 `json:"failed_records"` // lost to a write error
	} `json:"recorder"`
}

// healthWatch remembers when the request log last lost something and
// whether the accounts database answers. The recorder only counts its
// losses; the counts are sampled here (on every /health and every account
// poll) so that a loss an hour ago does not read as one now.
type healthWatch struct {
	mu                  sync.Mutex
	failed, dropped     int64     // the recorder's counts at the last sample
	failedAt, droppedAt time.Time // when they last grew
	pollErr             error     // the account poll's last error, nil once it works
	pollErrSince        time.Time
}

// observe samples the recorder's loss counters at now.
func (w *healthWatch) observe(rec *recorder, now time.Time) {
	failed := rec.failedRecords.Load()
	dropped := rec.droppedRecords.Load() + rec.droppedPayloads.Load()
	w.mu.Lock()
	defer w.mu.Unlock()
	if failed > w.failed {
		w.failedAt = now
	}
	if dropped > w.dropped {
		w.droppedAt = now
	}
	w.failed, w.dropped = failed, dropped
}

// polled records the account poll's outcome.
func (w *healthWatch) polled(err error, now time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	switch {
	case err == nil:
		w.pollErr = nil
	case w.pollErr == nil:
		w.pollErr, w.pollErrSince = err, now
	default:
		w.pollErr = err
	}
}

func (s *Server) health(w http.ResponseWriter, r *http.Request) {
	now := s.now()
	h := s.healthAt(now)
	body, _ := json.Marshal(h)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set(apierr.RequestIDHeader, s.ids.Next(now))
	if h.Status == HealthDown {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	w.Write(append(body, '\n'))
}

// HealthStatus is /health's word (HealthOK, HealthDegraded, HealthDown)
// and its reasons, now.
func (s *Server) HealthStatus() (string, []string) {
	h := s.healthAt(s.now())
	return h.Status, h.Reasons
}

// healthAt is /health's answer at now. Reasons are fixed phrases with
// counts, never an account's name or a database error's text (which may
// hold a path or a user).
func (s *Server) healthAt(now time.Time) healthReply {
	var h healthReply
	h.Strategy = s.cfg.LBStrategy
	h.Unusable = map[string]int{}
	limited := 0
	s.pool.mu.Lock()
	for _, a := range s.pool.accounts {
		ok, lim, _ := a.usable(now)
		if ok {
			h.UsableAccounts++
			continue
		}
		if lim {
			limited++
		}
		h.Unusable[a.state(now).Word]++
	}
	h.Accounts = len(s.pool.accounts)
	s.pool.mu.Unlock()
	if len(h.Unusable) == 0 {
		h.Unusable = nil
	}

	s.healthw.observe(s.rec, now)
	h.Recorder.Queued = len(s.rec.ch)
	h.Recorder.DroppedPayloads = s.rec.droppedPayloads.Load()
	h.Recorder.DroppedRecords = s.rec.droppedRecords.Load()
	h.Recorder.FailedRecords = s.rec.failedRecords.Load()

	var down, degraded []string
	switch {
	case h.Accounts == 0:
		down = append(down, "no accounts: add one with `claudeflare accounts add`")
	case h.UsableAccounts == 0 && limited == h.Accounts:
		down = append(down, fmt.Sprintf("every account is rate limited (%s)", countWords(h.Unusable)))
	case h.UsableAccounts == 0:
		down = append(down, fmt.Sprintf("no usable account (%s)", countWords(h.Unusable)))
	case h.UsableAccounts < h.Accounts:
		degraded = append(degraded, fmt.Sprintf("%d of %d accounts not usable (%s)", h.Accounts-h.UsableAccounts, h.Accounts, countWords(h.Unusable)))
	}

	h.RequestLog = "ok"
	s.healthw.mu.Lock()
	failedAt, droppedAt := s.healthw.failedAt, s.healthw.droppedAt
	pollErr, pollErrSince := s.healthw.pollErr, s.healthw.pollErrSince
	s.healthw.mu.Unlock()
	switch {
	case s.rec.db == nil:
		h.RequestLog = "unavailable"
		degraded = append(degraded, "request log unavailable: requests are not logged")
	case !failedAt.IsZero() && now.Sub(failedAt) < healthWindow:
		h.RequestLog = "failing"
		degraded = append(degraded, "request log writes failing: records lost (see recorder.failed_records)")
	case !droppedAt.IsZero() && now.Sub(droppedAt) < healthWindow:
		h.RequestLog = "dropping"
		degraded = append(degraded, "request log queue full: records or payloads dropped")
	}
	if pollErr != nil {
		degraded = append(degraded, fmt.Sprintf("accounts database unreadable for %s: retrying, serving the accounts read before",
			now.Sub(pollErrSince).Round(time.Second)))
	}

	if len(down) > 0 && s.relayKey != nil && s.relayKey() {
		// Relay keys are served with the client's own credentials
		// (relay.go): requests can still be served.
		degraded = append(append(down, "relay keys are still served (with the client's own credentials)"), degraded...)
		down = nil
	}
	switch {
	case len(down) > 0:
		h.Status, h.Reasons = HealthDown, append(down, degraded...)
	case len(degraded) > 0:
		h.Status, h.Reasons = HealthDegraded, degraded
	default:
		h.Status = HealthOK
	}
	return h
}

// countWords writes {"paused":1,"limited":2} as "2 limited, 1 paused".
func countWords(m map[string]int) string {
	words := make([]string, 0, len(m))
	for w := range m {
		words = append(words, w)
	}
	sort.Slice(words, func(i, j int) bool {
		if m[words[i]] != m[words[j]] {
			return m[words[i]] > m[words[j]]
		}
		return words[i] < words[j]
	})
	parts := make([]string, len(words))
	for i, w := range words {
		parts[i] = fmt.Sprintf("%d %s", m[w], w)
	}
	return strings.Join(parts, ", ")
}
