package proxy

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/claudeflare/claudeflare/internal/apierr"
	"github.com/claudeflare/claudeflare/store"
)

// Message batches and files live on the account that created them: no
// other account can see them. The id an account's 2xx answer to a create
// (POST /v1/messages/batches, POST /v1/files) names is recorded in the
// vault database (owned_ids), and a later call whose path names the id
// goes to that account only, with no failover: if the owner is not
// usable, the proxy says so (503, or 429 when it is rate limited).
//
// The table is read from the database once, on the first call that needs
// it, so the /v1/messages path never touches SQLite; a create writes its
// row before its answer goes to the client, so that an id the client
// knows is never lost to a crash.

// ownedMaxAge is how long an id keeps routing to its account; older rows
// are pruned (Anthropic keeps batch results 29 days).
const ownedMaxAge = 30 * 24 * time.Hour

// ownedPruneEvery is how often a create also prunes old ids.
const ownedPruneEvery = 24 * time.Hour

// ownedIDMax bounds an id's length; ownedAnswerMax bounds how much of a
// create's answer is read to find its id.
const (
	ownedIDMax     = 128
	ownedAnswerMax = 64 << 10
)

// The routes whose ids are owned, and the creates that make them.
const (
	batchesRoute = "/v1/messages/batches"
	filesRoute   = "/v1/files"
)

// ownedSubpaths are the calls under an id, per route ("" = the id itself).
var ownedSubpaths = map[string][]string{
	batchesRoute: {"", "results", "cancel"},
	filesRoute:   {"", "content"},
}

// ownedRef returns the id a canonical path names: batchesRoute/{id},
// batchesRoute/{id}/results, batchesRoute/{id}/cancel, filesRoute/{id},
// filesRoute/{id}/content. Any other path, or an id with a character
// outside [A-Za-z0-9_-], names none.
func ownedRef(path string) (id string, ok bool) {
	for base, subs := range ownedSubpaths {
		rest, found := strings.CutPrefix(path, base+"/")
		if !found {
			continue
		}
		id, sub, hasSub := strings.Cut(rest, "/")
		if !validOwnedID(id) {
			return "", false
		}
		for _, s := range subs {
			if (s == "") == !hasSub && sub == s {
				return id, true
			}
		}
		return "", false
	}
	return "", false
}

// createsOwned reports whether a request creates an owned id.
func createsOwned(method, path string) bool {
	return method == http.MethodPost && (path == batchesRoute || path == filesRoute)
}

// validOwnedID reports whether id is 1 to ownedIDMax of [A-Za-z0-9_-]:
// what Anthropic's ids are made of, and nothing a path or a log could
// misread.
func validOwnedID(id string) bool {
	if id == "" || len(id) > ownedIDMax {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// ownedEntry is the account an id was created through, and when.
type ownedEntry struct {
	account int64
	created time.Time
}

// ownedTable is the in-memory copy of owned_ids, loaded on first use.
type ownedTable struct {
	once   sync.Once
	mu     sync.Mutex
	ids    map[string]ownedEntry
	pruned time.Time // the last prune of rows past ownedMaxAge
}

// load reads the table (pruning rows past ownedMaxAge) once.
func (t *ownedTable) load(s *Server) {
	t.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		now := s.now()
		cutoff := now.Add(-ownedMaxAge)
		if _, err := store.PruneOwnedIDs(ctx, s.vaultDB, cutoff); err != nil {
			s.log.Warn("prune owned ids", "err", err)
		}
		rows, err := store.ListOwnedIDs(ctx, s.vaultDB, cutoff)
		if err != nil {
			s.log.Warn("load owned ids: batches and files made before now route as any request", "err", err)
		}
		t.mu.Lock()
		defer t.mu.Unlock()
		t.pruned = now
		if t.ids == nil {
			t.ids = make(map[string]ownedEntry, len(rows))
		}
		for _, r := range rows {
			t.ids[r.ID] = ownedEntry{account: r.AccountID, created: store.FromMS(r.CreatedAt)}
		}
	})
}

// owner returns the account id was created through, if known and young
// enough.
func (t *ownedTable) owner(s *Server, id string, now time.Time) (int64, bool) {
	t.load(s)
	t.mu.Lock()
	defer t.mu.Unlock()
	e, ok := t.ids[id]
	if !ok || now.Sub(e.created) > ownedMaxAge {
		return 0, false
	}
	return e.account, true
}

// put records id as created through account at now, in memory and in
// the vault database.
func (t *ownedTable) put(s *Server, id string, account int64, now time.Time) error {
	t.load(s)
	t.mu.Lock()
	t.ids[id] = ownedEntry{account: account, created: now}
	prune := now.Sub(t.pruned) > ownedPruneEvery
	if prune {
		// A daemon that runs for months drops old ids as it makes new ones.
		t.pruned = now
		for k, e := range t.ids {
			if now.Sub(e.created) > ownedMaxAge {
				delete(t.ids, k)
			}
		}
	}
	t.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if prune {
		if _, err := store.PruneOwnedIDs(ctx, s.vaultDB, now.Add(-ownedMaxAge)); err != nil {
			s.log.Warn("prune owned ids", "err", err)
		}
	}
	return store.PutOwnedID(ctx, s.vaultDB, id, account, now)
}

// forget drops id (the upstream deleted it).
func (t *ownedTable) forget(s *Server, id string) error {
	t.load(s)
	t.mu.Lock()
	delete(t.ids, id)
	t.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return store.DeleteOwnedID(ctx, s.vaultDB, id)
}

// ownerSelection is the selection for a request pinned to the account
// with id acct: that account alone when usable, else why not.
func (p *pool) ownerSelection(acct int64, now time.Time, fam, what string) selection {
	p.mu.Lock()
	defer p.mu.Unlock()
	a := p.byID[acct]
	if a == nil {
		return selection{Reasons: []string{"the account " + what + " was created through is no longer in the pool"}}
	}
	ok, limited, reason, until := a.usableFor(now, fam)
	if ok {
		return selection{Candidates: []*account{a}}
	}
	sel := selection{Reasons: []string{a.Name + ": " + reason}}
	if limited {
		sel.Limited, sel.EarliestOK, sel.Soonest = true, until, a.limit.clone()
	}
	return sel
}

// selectFor returns the accounts to try: for a call naming an owned id,
// its owner alone (pinned); else the selector's choice.
func (x *exchange) selectFor() (sel selection, pinned bool) {
	s := x.s
	if id, ok := ownedRef(x.route); ok {
		if acct, known := s.owned.owner(s, id, x.start); known {
			x.ownedID = id
			return s.pool.ownerSelection(acct, x.start, x.family, id), true
		}
	}
	return s.pool.pickFor(x.start, x.rt), false
}

// refuseOwned answers a call naming an owned id whose account cannot be
// tried: 429 when it is only rate limited, else 503, naming why.
func (x *exchange) refuseOwned(sel selection) {
	why := strings.Join(sel.Reasons, "; ")
	if !sel.Limited {
		x.reply(apierr.Reply{Status: http.StatusServiceUnavailable, Type: apierr.API, Retry: apierr.RetryNo,
			Message: fmt.Sprintf("%s lives on one claudeflare account, which is not usable: %s", x.ownedID, why)})
		return
	}
	d := time.Duration(max(int(math.Ceil(sel.EarliestOK.Sub(x.s.now()).Seconds())), 1)) * time.Second
	retry := apierr.RetryUnset
	if d > 5*time.Minute {
		retry = apierr.RetryNo
	}
	setUnifiedHeaders(x.w.Header(), sel.Soonest)
	x.reply(apierr.Reply{Status: http.StatusTooManyRequests, Type: apierr.RateLimit, RetryAfter: d, Retry: retry,
		Message: fmt.Sprintf("%s lives on one claudeflare account, which is rate limited; it is available again in %s (%s): %s",
			x.ownedID, d, sel.EarliestOK.UTC().Format(time.RFC3339), why)})
}

// noteOwned records the id a create answered with (resp's body is read up
// to ownedAnswerMax and put back in front), or forgets the id a DELETE
// removed. A failure to record is logged: the answer still goes out.
func (x *exchange) noteOwned(a *account, resp *http.Response) {
	if resp.StatusCode/100 != 2 {
		return
	}
	s := x.s
	if x.ownedID != "" && x.r.Method == http.MethodDelete &&
		(x.route == filesRoute+"/"+x.ownedID || x.route == batchesRoute+"/"+x.ownedID) {
		if err := s.owned.forget(s, x.ownedID); err != nil {
			s.log.Warn("forget owned id", "request_id", x.id, "err", err)
		}
		return
	}
	if !createsOwned(x.r.Method, x.route) {
		return
	}
	head, err := io.ReadAll(io.LimitReader(resp.Body, ownedAnswerMax))
	resp.Body = struct {
		io.Reader
		io.Closer
	}{io.MultiReader(bytes.NewReader(head), &errReader{err}, resp.Body), resp.Body}
	var made struct {
		ID string `json:"id"`
	}
	if json.Unmarshal(head, &made) != nil || !validOwnedID(made.ID) {
		s.log.Warn("a create's answer names no id: later calls for it route as any request", "request_id", x.id, "account", a.Name)
		return
	}
	if err := s.owned.put(s, made.ID, a.ID, s.now()); err != nil {
		s.log.Warn("record owned id", "request_id", x.id, "account", a.Name, "err", err)
	}
}
