package access

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/claudeflare/claudeflare/audit"
	"github.com/claudeflare/claudeflare/store"
)

// Failed authentications are written as one audit row per address and
// minute, for at most maxFailAddrsPerMinute addresses a minute; the
// failures from further addresses that minute share one "other
// addresses" row that counts them (distinct addresses counted up to
// maxOtherAddrs). A scan from many addresses thus adds at most
// maxFailAddrsPerMinute+1 rows a minute to the audit log, and the
// memory held is bounded as well: maxHeldFailMinutes minutes at most
// wait for a write (when writes keep failing, older ones are dropped).
const (
	maxFailAddrsPerMinute = 32
	maxOtherAddrs         = 4096
	maxHeldFailMinutes    = 60
)

// otherAddrs is the actor address of the aggregated row.
const otherAddrs = "other"

type failKey struct {
	addr   string
	minute int64 // unix minutes
}

type failCount struct {
	total   int
	reasons map[string]int
	// For the aggregated row: the distinct addresses seen (up to
	// maxOtherAddrs), and whether there were more.
	addrs    map[string]struct{}
	addrsCap bool
}

// failLog aggregates failed authentications per address and minute.
type failLog struct {
	mu      sync.Mutex
	m       map[failKey]*failCount
	perMin  map[int64]int // distinct addresses with their own row, per minute
	dropped int           // failures lost to maxHeldFailMinutes
}

func (f *failLog) add(addr, reason string, now time.Time) {
	k := failKey{addr: addr, minute: now.Unix() / 60}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.perMin == nil {
		f.perMin = map[int64]int{}
	}
	c := f.m[k]
	if c == nil {
		if f.perMin[k.minute] >= maxFailAddrsPerMinute {
			k.addr = otherAddrs
			c = f.m[k]
			if c == nil {
				c = &failCount{reasons: map[string]int{}, addrs: map[string]struct{}{}}
				f.m[k] = c
			}
			c.addAddr(addr)
		} else {
			if !f.heldLocked(k.minute) {
				f.dropped++
				return
			}
			c = &failCount{reasons: map[string]int{}}
			f.m[k] = c
			f.perMin[k.minute]++
		}
	}
	c.total++
	c.reasons[reason]++
}

// addAddr counts a distinct address on the aggregated row, up to
// maxOtherAddrs.
func (c *failCount) addAddr(addr string) {
	if _, seen := c.addrs[addr]; seen {
		return
	}
	if len(c.addrs) >= maxOtherAddrs {
		c.addrsCap = true
		return
	}
	c.addrs[addr] = struct{}{}
}

// heldLocked reports whether a new minute may be held (or minute is held
// already).
func (f *failLog) heldLocked(minute int64) bool {
	if _, ok := f.perMin[minute]; ok {
		return true
	}
	return len(f.perMin) < maxHeldFailMinutes
}

// take removes and returns the windows that ended before now (all of
// them when all is set), oldest first, each minute's aggregated row last.
func (f *failLog) take(now time.Time, all bool) []failWindow {
	cur := now.Unix() / 60
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []failWindow
	for k, c := range f.m {
		if all || k.minute < cur {
			out = append(out, failWindow{failKey: k, failCount: c})
			delete(f.m, k)
		}
	}
	for m := range f.perMin {
		if all || m < cur {
			delete(f.perMin, m)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].minute != out[j].minute {
			return out[i].minute < out[j].minute
		}
		if oi, oj := out[i].addrs != nil, out[j].addrs != nil; oi != oj {
			return oj
		}
		return out[i].addr < out[j].addr
	})
	return out
}

// takeDropped returns and resets the count of failures lost to
// maxHeldFailMinutes.
func (f *failLog) takeDropped() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := f.dropped
	f.dropped = 0
	return n
}

// putBack returns windows whose write failed.
func (f *failLog) putBack(ws []failWindow) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.perMin == nil {
		f.perMin = map[int64]int{}
	}
	for _, w := range ws {
		if !f.heldLocked(w.minute) {
			f.dropped += w.total
			continue
		}
		if _, ok := f.perMin[w.minute]; !ok {
			f.perMin[w.minute] = 0
		}
		c := f.m[w.failKey]
		if c == nil {
			f.m[w.failKey] = w.failCount
			if w.addrs == nil {
				f.perMin[w.minute]++
			}
			continue
		}
		c.total += w.total
		for r, n := range w.reasons {
			c.reasons[r] += n
		}
		for a := range w.addrs {
			c.addAddr(a)
		}
		c.addrsCap = c.addrsCap || w.addrsCap
	}
}

type failWindow struct {
	failKey
	*failCount
}

func (w failWindow) detail() string {
	start := time.Unix(w.minute*60, 0).UTC()
	reasons := make([]string, 0, len(w.reasons))
	for r, n := range w.reasons {
		reasons = append(reasons, fmt.Sprintf("%s: %d", r, n))
	}
	sort.Strings(reasons)
	noun := "authentications"
	if w.total == 1 {
		noun = "authentication"
	}
	from := w.addr
	if w.addrs != nil {
		n := strconv.Itoa(len(w.addrs))
		if w.addrsCap {
			n = "more than " + n
		}
		from = fmt.Sprintf("%s more addresses (past %d addresses a minute, one row for the rest)", n, maxFailAddrsPerMinute)
	}
	return fmt.Sprintf("%d failed %s from %s between %s and %s UTC (%s)", w.total, noun, from,
		start.Format("15:04"), start.Add(time.Minute).Format("15:04"), strings.Join(reasons, ", "))
}

// flush writes last-use times, new key addresses and the failed
// authentications of finished minutes (of every minute when all is set).
func (g *Guard) flush(ctx context.Context, all bool) error {
	g.flushMu.Lock()
	defer g.flushMu.Unlock()
	now := g.now()
	ks := g.keys.Load()

	used := map[int64]int64{}
	type newAddr struct {
		st *keyState
		pendingAddr
	}
	var addrs []newAddr
	for _, e := range ks.byHash {
		st := e.state
		if st == nil {
			continue
		}
		if v := st.lastUsed.Load(); v > st.flushed {
			used[st.id] = v
		}
		st.mu.Lock()
		for _, p := range st.pending {
			addrs = append(addrs, newAddr{st, p})
		}
		st.pending = nil
		st.mu.Unlock()
	}
	fails := g.fails.take(now, all)
	if n := g.fails.takeDropped(); n > 0 {
		g.log.Warn("failed authentications not recorded: audit writes kept failing for an hour", "count", n)
	}

	var errs []error
	if err := store.TouchClientKeys(ctx, g.vaultDB, used); err != nil {
		errs = append(errs, err)
	} else {
		for _, e := range ks.byHash {
			if st := e.state; st != nil {
				if v, ok := used[st.id]; ok {
					st.flushed = v
				}
			}
		}
	}
	if len(addrs) > 0 || len(fails) > 0 {
		err := store.Tx(ctx, g.vaultDB, func(tx *sqlx.Tx) error {
			for _, a := range addrs {
				isNew, err := store.AddClientKeyAddress(ctx, tx, store.ClientKeyAddress{KeyID: a.st.id, Addr: a.addr, FirstSeen: a.at})
				if err != nil {
					return err
				}
				if !isNew {
					continue
				}
				if err := audit.Append(ctx, tx, g.auditKey, now, audit.KeyActor(a.st.name), audit.ActionClientKeyNewAddr,
					fmt.Sprintf("client key %q used from a new address %s", a.st.name, a.addr)); err != nil {
					return err
				}
			}
			for _, w := range fails {
				if err := audit.Append(ctx, tx, g.auditKey, now, audit.AddrActor(w.addr), audit.ActionAuthFailed, w.detail()); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			errs = append(errs, err)
			g.fails.putBack(fails)
			for _, a := range addrs {
				a.st.mu.Lock()
				a.st.pending = append(a.st.pending, a.pendingAddr)
				a.st.mu.Unlock()
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("flush client key use: %w", err)
	}
	return nil
}
