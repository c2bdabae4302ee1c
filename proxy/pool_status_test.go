package proxy

import (
	"testing"

	"github.com/claudeflare/claudeflare/config"
	"github.com/claudeflare/claudeflare/store"
)

// A poll whose rows were read before this process changed an account's
// status (a re-check clearing a quarantine the poll had not seen yet)
// must not put the old status back: the next poll takes the row as
// written. (Seen as a TestRecheckQuarantine failure under load.)
func TestReloadKeepsNewerLocalStatus(t *testing.T) {
	cfg := config.Default()
	p := newPool(&cfg, LimitPolicy{})
	row := func(status string, updated int64) []store.Account {
		return []store.Account{{ID: 1, Name: "a", Kind: store.KindOAuth, Status: status, UpdatedAt: updated}}
	}
	p.reload(row(store.StatusOK, 1), p.readGen())
	a := p.byID[1]

	// The proxy quarantines a; no poll reads the row it wrote.
	p.setStatusOnce(a, store.StatusQuarantined, "organization disabled")
	p.statusWritten(a)

	// A poll starts and reads the quarantined row; meanwhile a re-check
	// clears the quarantine (memory, then the row).
	gen := p.readGen()
	stale := row(store.StatusQuarantined, 2)
	p.setStatusOnce(a, store.StatusOK, "")
	p.statusWritten(a)
	p.reload(stale, gen)
	if a.Status != store.StatusOK {
		t.Fatalf("a poll of rows read before the re-check put the account back to %q", a.Status)
	}
	// The next poll reads the row as written.
	p.reload(row(store.StatusOK, 3), p.readGen())
	if a.Status != store.StatusOK {
		t.Fatalf("status %q", a.Status)
	}
	// A change made elsewhere after that is taken.
	p.reload(row(store.StatusNeedsLogin, 4), p.readGen())
	if a.Status != store.StatusNeedsLogin {
		t.Fatalf("a newer row was not taken: %q", a.Status)
	}

}

// The same when the poll reads its generation after the status changed
// in memory and applies its rows before the write ends: the row it read
// is older than the status being written. (TestRecheckQuarantine under
// load, again: the generation alone let it through.)
func TestReloadWaitsForAStatusBeingWritten(t *testing.T) {
	cfg := config.Default()
	p := newPool(&cfg, LimitPolicy{})
	row := func(status string, updated int64) []store.Account {
		return []store.Account{{ID: 1, Name: "a", Kind: store.KindOAuth, Status: status, UpdatedAt: updated}}
	}
	p.reload(row(store.StatusOK, 1), p.readGen())
	a := p.byID[1]
	p.setStatusOnce(a, store.StatusQuarantined, "organization disabled")
	p.statusWritten(a)

	// A re-check clears the quarantine in memory; before it writes the
	// row, a poll takes its generation, reads the quarantined row and
	// applies it.
	p.setStatusOnce(a, store.StatusOK, "")
	p.reload(row(store.StatusQuarantined, 2), p.readGen())
	if a.Status != store.StatusOK {
		t.Fatalf("a poll applied while the re-check was writing put the account back to %q", a.Status)
	}
	p.statusWritten(a)
	p.reload(row(store.StatusOK, 3), p.readGen())
	if a.Status != store.StatusOK {
		t.Fatalf("status %q", a.Status)
	}
	p.reload(row(store.StatusNeedsLogin, 4), p.readGen())
	if a.Status != store.StatusNeedsLogin {
		t.Fatalf("a newer row was not taken: %q", a.Status)
	}
}
