package access

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/claudeflare/claudeflare/store"
)

// maxFailAddrs bounds the addresses counted per minute; beyond it failures
// are counted under "other".
const maxFailAddrs = 1024

type failKey struct {
	addr   string
	minute int64 // unix minutes
}

type failCount struct {
	total   int
	reasons map[string]int
}

// failLog aggregates failed authentications per address and minute.
type failLog struct {
	mu sync.Mutex
	m  map[failKey]*failCount
}

func (f *failLog) add(addr, reason string, now time.Time) {
	k := failKey{addr: addr, minute: now.Unix() / 60}
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.m[k]
	if c == nil {
		if len(f.m) >= maxFailAddrs {
			k.addr = "other"
			c = f.m[k]
		}
		if c == nil {
			c = &failCount{reasons: map[string]int{}}
			f.m[k] = c
		}
	}
	c.total++
	c.reasons[reason]++
}

// take removes and returns the windows that ended before now (all of
// them when all is set), oldest first.
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
	sort.Slice(out, func(i, j int) bool {
		if out[i].minute != out[j].minute {
			return out[i].minute < out[j].minute
		}
		return out[i].addr < out[j].addr
	})
	return out
}

// putBack returns windows whose write failed.
func (f *failLog) putBack(ws []failWindow) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, w := range ws {
		c := f.m[w.failKey]
		if c == nil {
			f.m[w.failKey] = w.failCount
			continue
		}
		c.total += w.total
		for r, n := range w.reasons {
			c.reasons[r] += n
		}
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
	return fmt.Sprintf("%d failed %s from %s between %s and %s UTC (%s)", w.total, noun, w.addr,
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
				if err := appendAudit(ctx, tx, g.auditKey, now, KeyActor(a.st.name), ActionClientKeyNewAddr,
					fmt.Sprintf("client key %q used from a new address %s", a.st.name, a.addr)); err != nil {
					return err
				}
			}
			for _, w := range fails {
				if err := appendAudit(ctx, tx, g.auditKey, now, AddrActor(w.addr), ActionAuthFailed, w.detail()); err != nil {
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

// watchAccounts records accounts that newly need a new login: the proxy
// marks them when their refresh token is refused.
func (g *Guard) watchAccounts(ctx context.Context) error {
	accts, err := store.ListAccounts(ctx, g.vaultDB)
	if err != nil {
		return err
	}
	g.flushMu.Lock()
	defer g.flushMu.Unlock()
	first := g.statuses == nil
	prev := g.statuses
	g.statuses = make(map[string]string, len(accts))
	for _, a := range accts {
		g.statuses[a.Name] = a.Status
		if first || a.Status != store.StatusNeedsLogin || prev[a.Name] == store.StatusNeedsLogin {
			continue
		}
		if _, known := prev[a.Name]; !known {
			// Added since the last look, already needing a login: the
			// command that added it has said so.
			continue
		}
		detail := fmt.Sprintf("account %q needs a new login", a.Name)
		if a.StatusReason != "" {
			detail += ": " + a.StatusReason
		}
		if err := AuditAt(ctx, g.vaultDB, g.auditKey, g.now(), ActorDaemon, ActionAccountNeedsLogin, detail); err != nil {
			g.statuses[a.Name] = prev[a.Name] // try again next time
			return err
		}
	}
	return nil
}
