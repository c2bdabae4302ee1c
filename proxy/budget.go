package proxy

import "sync/atomic"

// bodyBudget bounds the memory all request bodies in flight hold
// together (server.max_inflight_body_bytes): a body's buffer grows only
// after its growth is reserved here, and the reservation is released
// when the request ends.
type bodyBudget struct {
	limit int64 // <= 0: unbounded
	used  atomic.Int64
	peak  atomic.Int64 // the most ever held, for tests and metrics
}

// reserve takes n bytes of the budget, or reports that they are not
// there (and takes nothing).
func (b *bodyBudget) reserve(n int64) bool {
	for {
		cur := b.used.Load()
		next := cur + n
		if b.limit > 0 && next > b.limit {
			return false
		}
		if b.used.CompareAndSwap(cur, next) {
			for {
				p := b.peak.Load()
				if next <= p || b.peak.CompareAndSwap(p, next) {
					return true
				}
			}
		}
	}
}

func (b *bodyBudget) release(n int64) { b.used.Add(-n) }

// BodyBytesInFlight is the memory request bodies in flight hold now, and
// the most they ever held together.
func (s *Server) BodyBytesInFlight() (now, peak int64) {
	return s.bodies.used.Load(), s.bodies.peak.Load()
}
