package proxy

import (
	"bufio"
	"context"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/claudeflare/claudeflare/internal/fakeapi"
	"github.com/claudeflare/claudeflare/store"
)

func TestConcurrentExpiredTokenOneRefresh(t *testing.T) {
	h := newHarness(t)
	h.addOAuth("work", 0, true) // no access token: the first use refreshes
	h.reload()
	h.api.SetTokenDelay(50 * time.Millisecond)
	const n = 50
	var wg sync.WaitGroup
	statuses := make([]int, n)
	for i := range n {
		wg.Go(func() { statuses[i] = h.post(msgBody).status })
	}
	wg.Wait()
	for i, st := range statuses {
		if st != 200 {
			t.Fatalf("request %d: %d", i, st)
		}
	}
	if got := h.api.RefreshCount("work"); got != 1 {
		t.Fatalf("%d refreshes for %d concurrent requests", got, n)
	}
	if got := h.api.TokenRequests(); got != 1 {
		t.Fatalf("%d token requests", got)
	}
}

func TestRestartKeepsRotatedToken(t *testing.T) {
	h := newHarness(t)
	h.addOAuth("work", 0, true)
	h.reload()
	if rep := h.post(msgBody); rep.status != 200 {
		t.Fatal(rep.status)
	}
	h.restart()
	// The new server uses the stored access token...
	if rep := h.post(msgBody); rep.status != 200 {
		t.Fatal(rep.status)
	}
	if n := h.api.RefreshCount("work"); n != 1 {
		t.Fatalf("%d refreshes", n)
	}
	// ...and when it expires, refreshes with the rotated refresh token
	// (the first one is dead: using it would give invalid_grant).
	h.clock.Add(fakeapi.DefaultExpiresIn)
	if rep := h.post(msgBody); rep.status != 200 {
		t.Fatalf("%d %s", rep.status, rep.body)
	}
	if n := h.api.RefreshCount("work"); n != 2 {
		t.Fatalf("%d refreshes", n)
	}
	if a := h.account("work"); a.Status != store.StatusOK || a.TokenVersion != 3 {
		t.Fatalf("account %+v", a)
	}
}

func TestRefreshRaceWithAnotherProcess(t *testing.T) {
	// Another process (a CLI command) rotates the refresh token after the
	// daemon read it: the daemon's refresh gets invalid_grant, sees that
	// the vault moved, and uses the other process's tokens instead of
	// marking the account as needing login.
	h := newHarness(t)
	id := h.addOAuth("work", 0, true)
	h.reload()
	ctx := context.Background()
	old, err := h.vault.Secrets(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := h.srv.tokens.oauth.Refresh(ctx, old.RefreshToken)
	if err != nil {
		t.Fatal(err)
	}
	next := old
	next.AccessToken, next.RefreshToken, next.ExpiresAt = tok.AccessToken, tok.RefreshToken, tok.ExpiresAt
	if _, err := h.vault.SwapTokens(ctx, id, old.Version, next); err != nil {
		t.Fatal(err)
	}
	c, err := h.srv.tokens.refresh(ctx, h.srv.pool.byID[id], old, true)
	if err != nil {
		t.Fatal(err)
	}
	if c.secret != tok.AccessToken || h.account("work").Status != store.StatusOK {
		t.Fatal("daemon lost the account to a concurrent refresh")
	}
	if rep := h.post(msgBody); rep.status != 200 {
		t.Fatal(rep.status)
	}
}

func TestClientCancel(t *testing.T) {
	h := newHarness(t)
	h.addOAuth("work", 0, false)
	h.reload()
	h.api.Inject(fakeapi.Fault{Kind: fakeapi.FaultSlowFirstByte, Delay: 30 * time.Second})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan reply)
	go func() { done <- h.do(ctx, http.MethodPost, "/v1/messages", msgBody, nil) }()
	waitFor(t, "the upstream request", func() bool { return len(h.apiRequests()) == 1 })
	cancel()
	if rep := <-done; rep.err == nil {
		t.Fatal("request not cancelled")
	}
	var row store.Request
	waitFor(t, "the 499 row", func() bool {
		rows := h.rows()
		if len(rows) == 1 {
			row = rows[0]
		}
		return len(rows) == 1
	})
	if row.Status != store.StatusClientClosed || row.EndState != EndClientCancelled {
		t.Fatalf("row %+v", row)
	}
	// The upstream request was cancelled too.
	waitFor(t, "upstream cancel", func() bool { return h.apiRequests()[0].Status == 0 })
}

func TestClientCancelMidStream(t *testing.T) {
	h := newHarness(t)
	h.addOAuth("work", 0, false)
	h.reload()
	h.api.SetStreamShape(1000, 16)
	h.api.SetEventDelay(5 * time.Millisecond)
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, h.url+"/v1/messages", strings.NewReader(streamBody))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(resp.Body)
	if line, _ := br.ReadString('\n'); line != "event: message_start\n" {
		t.Fatalf("first line %q", line)
	}
	cancel()
	resp.Body.Close()
	var row store.Request
	waitFor(t, "the row", func() bool {
		rows := h.rows()
		if len(rows) == 1 {
			row = rows[0]
		}
		return len(rows) == 1
	})
	if row.Status != store.StatusClientClosed || row.EndState != EndClientCancelled || row.InputTokens != 25 {
		t.Fatalf("row %+v", row)
	}
}

func TestShutdownMidStreamFinishesStream(t *testing.T) {
	h := newHarness(t)
	h.addOAuth("work", 0, false)
	h.reload()
	h.api.SetStreamShape(20, 16)
	h.api.SetEventDelay(10 * time.Millisecond)
	resp, err := http.Post(h.url+"/v1/messages", "application/json", strings.NewReader(streamBody))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	if line, _ := br.ReadString('\n'); line != "event: message_start\n" {
		t.Fatalf("first line %q", line)
	}
	// SIGTERM: the daemon stops accepting, the stream goes on.
	h.cancel()
	rest, err := io.ReadAll(br)
	if err != nil {
		t.Fatalf("stream cut by shutdown: %v", err)
	}
	if !strings.HasSuffix(string(rest), "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n") {
		t.Fatalf("stream did not finish: %q", rest)
	}
	if err := <-h.served; err != nil {
		t.Fatal(err)
	}
	h.cancel = nil
	// The recorder was flushed on the way out.
	var rows []store.Request
	if err := h.ldb.R.Select(&rows, `SELECT `+store.RequestColumns+` FROM requests`); err != nil {
		t.Fatal(err)
	}
	if len(rows) != 1 || rows[0].EndState != EndComplete || rows[0].OutputTokens != 12 {
		t.Fatalf("rows %+v", rows)
	}
	// New connections are refused.
	if _, err := http.Get(h.url + "/"); err == nil {
		t.Fatal("still accepting after shutdown")
	}
}

func TestAccountAddedWhileRunning(t *testing.T) {
	h := newHarness(t)
	if rep := h.post(msgBody); rep.status != 503 {
		t.Fatal(rep.status)
	}
	// As `claudeflare accounts add` would, from another process: only the
	// vault changes; no signal, no Reload call.
	h.addOAuth("late", 0, false)
	waitFor(t, "the poll", func() bool { return poolSize(h.srv) == 1 })
	rep := h.post(msgBody)
	if rep.status != 200 || h.lastRow().Account != "late" {
		t.Fatalf("%d %s", rep.status, rep.body)
	}
	// Pause and remove take effect the same way.
	if err := store.SetPaused(context.Background(), h.vdb, "late", true, h.clock.Now()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the pause", func() bool { return h.post(msgBody).status == 503 })
	if err := store.DeleteAccount(context.Background(), h.vdb, "late"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the removal", func() bool { return poolSize(h.srv) == 0 })
}

func TestTokensNeverLogged(t *testing.T) {
	h := newHarness(t)
	h.addOAuth("a", 0, true)
	h.addOAuth("b", 1, false)
	h.addAPIKey("k", 2)
	h.reload()
	// Refreshes, a 401 cured by a refresh, an invalid_grant, failovers,
	// streams and errors: everything that logs.
	h.post(msgBody)
	h.api.ExpireAccessTokens("a")
	h.post(streamBody)
	h.api.RevokeAccount("a")
	h.post(msgBody)
	h.api.Inject(fakeapi.Fault{Account: "b", Kind: fakeapi.FaultStatus, Status: 429, Headers: map[string]string{"retry-after": "5"}})
	h.post(streamBody)
	h.api.Inject(fakeapi.Fault{Kind: fakeapi.FaultResetBeforeHeaders, Count: 3})
	h.post(msgBody)
	h.rows()
	h.stop()

	var disk strings.Builder
	files := 0
	err := filepath.WalkDir(h.dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		files++
		disk.Write(b)
		return nil
	})
	if err != nil {
		t.Fatalf("search the data dir for tokens: %v", err)
	}
	if files < 3 {
		t.Fatalf("only %d files in the data dir: the search would prove nothing", files)
	}
	logs := h.logs.String()
	if !strings.Contains(logs, "refreshed") {
		t.Fatalf("scenario did not log a refresh:\n%s", logs)
	}
	toks := h.api.AllTokens()
	if len(toks) < 5 {
		t.Fatalf("only %d tokens issued", len(toks))
	}
	for _, tok := range toks {
		if strings.Contains(logs, tok) || strings.Contains(logs, tok[len(tok)-20:]) {
			t.Fatalf("a token appears in the log")
		}
		if strings.Contains(disk.String(), tok) {
			t.Fatalf("a token appears in plaintext on disk")
		}
	}
}
