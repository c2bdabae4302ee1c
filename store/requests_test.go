package store

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
)

// The routing columns (issue 15) come back as written, and a row that
// left them unset reads as nothing tried, not as unknown.
func TestRequestDetailsRoundTrip(t *testing.T) {
	db, err := OpenLog(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx := context.Background()
	now := ToMS(time.Now())
	stu := `{"web_search_requests":2}`
	full := Request{ID: "full", TS: now, Method: "POST", Path: "/v1/messages", Model: "claude-x", Status: 200,
		CacheCreationInputTokens: 30, CacheCreation5mInputTokens: 10, CacheCreation1hInputTokens: 20,
		ServerToolUse: &stu, UpstreamRequestID: "req_011abc", Session: "0123456789ab",
		AccountsTried: Names{"first", "second", "first"}}
	bare := Request{ID: "bare", TS: now + 1, Method: "GET", Path: "/v1/models", Status: 503}
	if err := InsertRequests(ctx, db, []Request{full, bare}, nil); err != nil {
		t.Fatal(err)
	}
	got := readAll(t, db)
	if len(got) != 2 {
		t.Fatalf("%d rows", len(got))
	}
	g := got[0]
	g.Seq = 0
	if !reflect.DeepEqual(g, full) {
		t.Errorf("round trip:\n got %+v\nwant %+v", g, full)
	}
	if b := got[1]; b.AccountsTried == nil || len(b.AccountsTried) != 0 || b.ServerToolUse != nil ||
		b.Session != "" || b.UpstreamRequestID != "" {
		t.Errorf("bare row: tried %#v, server_tool_use %v, session %q, upstream id %q",
			b.AccountsTried, b.ServerToolUse, b.Session, b.UpstreamRequestID)
	}
}

// A log written by a binary that knew only the first migration upgrades
// on open; its rows read the new columns as 0, "" and nil (unknown).
func TestOldLogUpgrades(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, LogFile)
	init, err := migrations.ReadFile("migrations/log/0001_init.sql")
	if err != nil {
		t.Fatal(err)
	}
	old, err := sqlx.Open("sqlite3", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := old.Exec(string(init)); err != nil {
		t.Fatal(err)
	}
	if _, err := old.Exec(`INSERT INTO requests (id, ts, method, path, model, account, status, input_tokens)
		VALUES ('old', 1700000000000, 'POST', '/v1/messages', 'claude-old', 'acct', 200, 7)`); err != nil {
		t.Fatal(err)
	}
	if _, err := old.Exec(`PRAGMA user_version = 1`); err != nil {
		t.Fatal(err)
	}
	old.Close()
	os.Chmod(path, 0o600)

	db, err := OpenLog(dir)
	if err != nil {
		t.Fatalf("open old log: %v", err)
	}
	defer db.Close()
	if v, _ := db.UserVersion(context.Background()); v != SchemaVersion("log") || v < 2 {
		t.Fatalf("user_version %d, want %d", v, SchemaVersion("log"))
	}
	got := readAll(t, db)
	if len(got) != 1 {
		t.Fatalf("%d rows", len(got))
	}
	r := got[0]
	if r.Model != "claude-old" || r.InputTokens != 7 || r.AccountsTried != nil || r.ServerToolUse != nil ||
		r.Session != "" || r.UpstreamRequestID != "" || r.CacheCreation5mInputTokens != 0 {
		t.Errorf("old row read as %+v", r)
	}
	// New rows go in next to it.
	if err := InsertRequests(context.Background(), db, []Request{{ID: "new", TS: 1700000000001, Method: "GET", Path: "/v1/models",
		AccountsTried: Names{"acct"}}}, nil); err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, db); len(got) != 2 || !reflect.DeepEqual(got[1].AccountsTried, Names{"acct"}) {
		t.Errorf("after insert: %+v", got)
	}
}

func readAll(t *testing.T, db *DB) []Request {
	t.Helper()
	rs, err := db.QueryRequests(context.Background(), RequestFilter{})
	if err != nil {
		t.Fatal(err)
	}
	defer rs.Close()
	var out []Request
	for rs.Next() {
		var r Request
		if err := rs.Scan(&r); err != nil {
			t.Fatal(err)
		}
		out = append(out, r)
	}
	if err := rs.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}
