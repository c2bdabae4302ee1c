package retention_test

import (
	"context"
	"testing"
	"time"

	"github.com/claudeflare/claudeflare/internal/logtest"
	"github.com/claudeflare/claudeflare/retention"
)

// TestCleanupEverythingSparesNewRows: `cleanup --type all --force` without
// --older-than deletes what exists when it starts; requests the daemon
// logs while it runs (here: right after it has counted) stay.
func TestCleanupEverythingSparesNewRows(t *testing.T) {
	db := openLog(t)
	fill(t, db, 300)
	late := logtest.Options{N: 40, Start: t0.Add(time.Hour), Step: time.Second, Seal: plainSeal, IDPrefix: "late-"}
	wrote := false
	res, err := retention.Cleanup(context.Background(), db, retention.Options{Type: retention.All, Everything: true, BatchSize: 64, Pause: -1,
		Progress: func(p retention.Progress) {
			if wrote {
				return
			}
			wrote = true
			if err := logtest.Fill(context.Background(), db, late); err != nil {
				t.Error(err)
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	if !wrote {
		t.Fatal("cleanup reported no progress: the rows were never written during it")
	}
	if res.Requests != 300 {
		t.Errorf("deleted %d requests, want the 300 there were when it started", res.Requests)
	}
	if r, p := counts(t, db); r != 40 || p != 40 {
		t.Fatalf("%d requests and %d payloads left, want the 40 logged during the cleanup", r, p)
	}
	if n := countWhere(t, db, `SELECT count(*) FROM requests WHERE id LIKE 'late-%'`); n != 40 {
		t.Fatalf("%d of the 40 requests logged during the cleanup left", n)
	}
}
