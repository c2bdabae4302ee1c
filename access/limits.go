package access

import (
	"strconv"
	"sync"
	"time"
)

// limiter enforces the per-client limits: requests per minute (GCRA, a
// token bucket that holds a minute's worth and refills evenly) and
// requests in flight. A client is a key, or an address when there are no
// keys.
type limiter struct {
	mu        sync.Mutex
	clients   map[string]*clientLimit
	lastSweep time.Time
}

type clientLimit struct {
	tat      time.Time // GCRA theoretical arrival time
	inflight int
}

// limitRejection says why a request was refused and when to come back.
type limitRejection struct {
	retryAfter time.Duration
	message    string
}

func newLimiter() *limiter { return &limiter{clients: map[string]*clientLimit{}} }

// acquire admits a request of client id at now, or refuses it. rpm and
// streams of 0 mean unlimited; only a counted request (streams applies)
// holds a slot until release is called.
func (l *limiter) acquire(id string, rpm, streams int, counted bool, now time.Time) (release func(), rej *limitRejection) {
	if rpm <= 0 && (streams <= 0 || !counted) {
		return func() {}, nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sweepLocked(now)
	c := l.clients[id]
	if c == nil {
		c = &clientLimit{}
		l.clients[id] = c
	}
	if counted && streams > 0 && c.inflight >= streams {
		return nil, &limitRejection{
			retryAfter: time.Second,
			message: "claudeflare client limit: this client already has the maximum of " + strconv.Itoa(streams) +
				" requests in flight (limits.concurrent_streams). This is claudeflare's own per-client limit, not an Anthropic rate limit.",
		}
	}
	if rpm > 0 {
		interval := time.Minute / time.Duration(rpm)
		tat := c.tat
		if tat.Before(now) {
			tat = now
		}
		next := tat.Add(interval)
		if over := next.Sub(now) - time.Minute; over > 0 {
			return nil, &limitRejection{
				retryAfter: over,
				message: "claudeflare client limit: this client made more than " + strconv.Itoa(rpm) +
					" requests in a minute (limits.requests_per_minute). This is claudeflare's own per-client limit, not an Anthropic rate limit.",
			}
		}
		c.tat = next
	}
	if !counted || streams <= 0 {
		return func() {}, nil
	}
	c.inflight++
	var once sync.Once
	return func() {
		once.Do(func() {
			l.mu.Lock()
			c.inflight--
			l.mu.Unlock()
		})
	}, nil
}

// sweepLocked forgets idle clients once a minute, so the map stays as
// small as the set of recently active clients.
func (l *limiter) sweepLocked(now time.Time) {
	if now.Sub(l.lastSweep) < time.Minute {
		return
	}
	l.lastSweep = now
	for id, c := range l.clients {
		if c.inflight == 0 && !c.tat.After(now) {
			delete(l.clients, id)
		}
	}
}
