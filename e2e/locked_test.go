//go:build soak

package e2e

import (
	"database/sql"
	"path/filepath"
	"testing"
	"time"

	"github.com/claudeflare/claudeflare/store"
)

// Run with the soak suite: go test -tags soak -run TestLogLocked -v ./e2e
// (it holds a lock past the 10s busy timeout).

// TestLogLocked: another process holds the log's write lock for longer
// than the busy timeout (a `sqlite3 log.db` shell in a transaction, a
// backup tool). Serving is not slowed; what the recorder cannot write is
// reported; writing resumes after the lock goes.
func TestLogLocked(t *testing.T) {
	w := storageWorld(t)
	d := w.start()
	_, before := steady(t, d, 20, "before")
	db, err := sql.Open("sqlite3", "file:"+filepath.Join(w.data, store.LogFile)+"?_txlock=exclusive")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	tx, err := db.Begin()
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	var ids []string
	var during time.Duration
	for time.Since(start) < 12*time.Second {
		got, slow := steady(t, d, 20, "locked")
		ids = append(ids, got...)
		during = max(during, slow)
	}
	tx.Rollback()
	// Wait until the recorder has caught up: every request served during
	// the lock is in the log or reported lost.
	missingOf := func() int {
		logged, err := loggedIDs(filepath.Join(w.data, store.LogFile))
		if err != nil {
			t.Fatal(err)
		}
		missing := 0
		for _, id := range ids {
			if !logged[id] {
				missing++
			}
		}
		return missing
	}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		lost, _ := lossReport(t, d)
		if int64(missingOf()) <= lost || time.Now().After(deadline) {
			break
		}
	}
	after, _ := steady(t, d, 20, "after")
	lost, report := lossReport(t, d)
	failed := d.health(t).recorderCount("failed_records")
	d.stop(t)
	missing := missingOf()
	logged, err := loggedIDs(filepath.Join(w.data, store.LogFile))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("log locked 12s: %d requests served, slowest %s (before %s); %d not logged; reported %d (%s)",
		len(ids), during.Round(time.Millisecond), before.Round(time.Millisecond), missing, lost, report)
	if int64(missing) > lost {
		t.Errorf("%d requests not logged, %d reported", missing, lost)
	}
	// The batch that met the lock is tried once more after the busy
	// timeout, so a 12s lock loses queue overflow only, no written batch.
	if failed != 0 {
		t.Errorf("%d records failed to write; the batch caught by the lock should have been retried", failed)
	}
	for _, id := range after {
		if !logged[id] {
			t.Errorf("request %s sent after the lock went is not logged", id)
			break
		}
	}
}
