package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/claudeflare/claudeflare/internal/fakeapi"
	"github.com/claudeflare/claudeflare/internal/testutil"
	"github.com/claudeflare/claudeflare/store"
)

// tokenTap sits between the daemon and the fake's token endpoint and
// remembers each refresh (the token it spent, the tokens it got), so that
// a refresh token lost to a SIGKILL can be told apart from a real loss:
// DESIGN.md allows a loss only in the instant between the endpoint's
// answer and one short commit. That instant is told by state, not by a
// guessed duration (on a loaded machine the commit can take far longer
// than any fixed grace).
type tokenTap struct {
	srv      *httptest.Server
	upstream string

	mu    sync.Mutex
	calls []tokenCall
	conns int // connections from the daemon not closed yet
}

type tokenCall struct {
	sent, answered time.Time // answered is zero while in flight
	oldRefresh     string    // the refresh token the daemon spent
	newRefresh     string
	newAccess      string
}

func newTokenTap(t testing.TB) *tokenTap {
	tt := &tokenTap{}
	tt.srv = httptest.NewUnstartedServer(http.HandlerFunc(tt.serve))
	tt.srv.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		tt.mu.Lock()
		defer tt.mu.Unlock()
		switch st {
		case http.StateNew:
			tt.conns++
		case http.StateClosed, http.StateHijacked:
			tt.conns--
		}
	}
	tt.srv.Start()
	t.Cleanup(tt.srv.Close)
	return tt
}

func (tt *tokenTap) url() string { return tt.srv.URL + fakeapi.TokenPath }

// quiet reports whether every connection to the tap has closed: after a
// kill, every refresh the dead daemon sent has then been recorded (a
// handler can start well after the kill on a loaded machine).
func (tt *tokenTap) quiet() bool {
	tt.mu.Lock()
	defer tt.mu.Unlock()
	return tt.conns == 0
}

// describe lists the refreshes that spent or issued one of the tokens,
// for a failure message (tokens shortened).
func (tt *tokenTap) describe(kill time.Time, toks ...string) string {
	short := func(s string) string { return s[max(0, len(s)-6):] }
	tt.mu.Lock()
	defer tt.mu.Unlock()
	var b strings.Builder
	for _, c := range tt.calls {
		if !slices.Contains(toks, c.oldRefresh) && !slices.Contains(toks, c.newRefresh) {
			continue
		}
		ans := "in flight"
		if !c.answered.IsZero() {
			ans = fmt.Sprintf("answered %s before the kill", kill.Sub(c.answered).Round(time.Millisecond))
		}
		fmt.Fprintf(&b, "  refresh sent %s before the kill spent …%s got …%s, %s\n",
			kill.Sub(c.sent).Round(time.Millisecond), short(c.oldRefresh), short(c.newRefresh), ans)
	}
	return b.String()
}

func (tt *tokenTap) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	var grant struct {
		RefreshToken string `json:"refresh_token"`
	}
	json.Unmarshal(body, &grant)
	tt.mu.Lock()
	i := len(tt.calls)
	tt.calls = append(tt.calls, tokenCall{sent: time.Now(), oldRefresh: grant.RefreshToken})
	tt.mu.Unlock()
	req, _ := http.NewRequestWithContext(r.Context(), r.Method, tt.upstream, bytes.NewReader(body))
	req.Header = r.Header.Clone()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var tok struct {
		RefreshToken string `json:"refresh_token"`
		AccessToken  string `json:"access_token"`
	}
	json.Unmarshal(b, &tok)
	// Recorded before the daemon can read the answer, so that no
	// refresh the daemon acted on is missing here.
	tt.mu.Lock()
	tt.calls[i].answered = time.Now()
	tt.calls[i].newRefresh = tok.RefreshToken
	tt.calls[i].newAccess = tok.AccessToken
	tt.mu.Unlock()
	for k, vs := range resp.Header {
		w.Header()[k] = vs
	}
	w.WriteHeader(resp.StatusCode)
	w.Write(b)
}

// lostInWindow reports whether the vault holding stored instead of the
// fake's current refresh token cur is the loss DESIGN.md allows: the
// daemon was killed between the endpoint's answer and the commit of its
// very last refresh. That holds when the refresh that issued cur (or one
// still in flight at the kill) spent exactly the stored token, nothing
// spent the stored token again after it (the daemon did not live on
// without the new one), and the new access token was never used
// upstream (the daemon saves before it uses). used reports whether an
// access token reached the fake.
func (tt *tokenTap) lostInWindow(stored, cur string, used func(access string) bool) bool {
	tt.mu.Lock()
	defer tt.mu.Unlock()
	var spent []tokenCall
	for _, c := range tt.calls {
		if c.oldRefresh == stored {
			spent = append(spent, c)
		}
	}
	if len(spent) != 1 {
		return false // never spent: not this window; spent twice: the daemon went on without the new token
	}
	c := spent[0]
	if c.answered.IsZero() {
		return true // in flight at the kill
	}
	return c.newRefresh == cur && !used(c.newAccess)
}

// crashConfig: round-robin so that every account is used (and refreshed),
// access tokens due for refresh a second after they are issued, a short
// recorder flush interval.
const crashFlush = 200 * time.Millisecond

const crashConfig = `
lb_strategy = "round-robin"
retry_delay_ms = 20
log_level = "info"

[tokens]
refresh_margin = "2s"

[log]
flush_interval = "200ms"

[ratelimit]
overloaded_cooldown = "1s"
`

// TestCrash kills the daemon with SIGKILL at random moments while 32
// clients send JSON and SSE requests and access tokens are refreshed
// about once a second per account. After each kill: both databases pass
// integrity_check, no refresh token was lost (the vault holds the fake's
// current, live refresh token of every account), every request whose
// response completed more than one flush interval before the kill is in
// the log, and after the restart, with every access token revoked, every
// account serves (so the daemon refreshed with the token it kept).
//
// Default: 3 rounds. CLAUDEFLARE_E2E_ROUNDS=25 for the full run.
func TestCrash(t *testing.T) {
	rounds := envInt("CLAUDEFLARE_E2E_ROUNDS", 3)
	tap := newTokenTap(t)
	w := newWorld(t, crashConfig, tap.url())
	tap.upstream = w.fake.TokenURL()
	w.fake.SetExpiresIn(3 * time.Second)
	w.fake.SetStreamShape(20, 64)
	w.fake.SetEventDelay(5 * time.Millisecond)
	oauthNames := []string{"alpha", "beta", "gamma"}
	for _, n := range oauthNames {
		w.addOAuth(n)
	}
	w.addAPIKey("keyed")
	all := append(append([]string(nil), oauthNames...), "keyed")

	var (
		totalDone, totalChecked, lateMissing, windowLosses int
		maxMissingAge                                      time.Duration
	)
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 8))
	for round := 0; round <= rounds; round++ {
		// Revoke every access token, so that serving proves the daemon
		// can refresh with the refresh token it kept.
		for _, n := range oauthNames {
			w.fake.ExpireAccessTokens(n)
		}
		before := w.fake.TotalRefreshes()
		d := w.start()
		checkServes(t, w, d, all, round)
		if got := w.fake.TotalRefreshes() - before; got < len(oauthNames) {
			t.Fatalf("round %d: %d refreshes after the restart, want one per OAuth account at least", round, got)
		}
		if round == rounds {
			d.stop(t)
			break
		}

		// Load, then a kill at a random moment.
		var mu sync.Mutex
		completed := map[string]time.Time{}
		var tl tally
		ctx, cancel := context.WithCancel(context.Background())
		c := newClient(30*time.Second, 32)
		wg := load(ctx, c, d.url, 32, 2, func(r result) {
			tl.add(r)
			if r.id != "" && (r.kind == kComplete || r.kind == kAPIError || r.kind == kStreamError) {
				mu.Lock()
				completed[r.id] = r.done
				mu.Unlock()
			}
		})
		loadStart := time.Now()
		lag := watchLag(ctx)
		time.Sleep(time.Duration(300+rng.IntN(2700)) * time.Millisecond)
		kill := time.Now()
		d.kill(t)
		cancel()
		wg.Wait()
		// The promise is one flush interval, later only when the
		// machine is starved of CPU (README): the allowance grows by
		// the scheduling lag this process measured during the load.
		allowed := crashFlush*raceSlowdown + lag()
		c.CloseIdleConnections()

		// Both databases whole.
		for _, f := range []string{store.VaultFile, store.LogFile} {
			if err := integrity(filepath.Join(w.data, f)); err != nil {
				t.Fatalf("round %d: %v", round, err)
			}
		}

		// Every response completed a flush interval before the kill is logged.
		ids, err := loggedIDs(filepath.Join(w.data, store.LogFile))
		if err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		var missingLate []string
		for id, done := range completed {
			age := kill.Sub(done)
			if age > allowed {
				totalChecked++
			}
			if ids[id] {
				continue
			}
			if age > allowed {
				missingLate = append(missingLate, fmt.Sprintf("%s (%s before the kill)", id, age.Round(time.Millisecond)))
			}
			maxMissingAge = max(maxMissingAge, age)
		}
		totalDone += len(completed)
		mu.Unlock()
		sort.Strings(missingLate)
		lateMissing += len(missingLate)
		if len(missingLate) > 0 {
			t.Errorf("round %d: %d responses completed more than %s before the kill are not in the log: %v",
				round, len(missingLate), allowed, missingLate[:min(len(missingLate), 5)])
		}

		// No refresh token lost. Every refresh the daemon sent is in
		// the tap's record once its connections have closed.
		testutil.WaitFor(t, "the killed daemon's token endpoint connections to close", tap.quiet)
		stored, status := w.storedRefreshTokens()
		for _, n := range oauthNames {
			cur := w.fake.CurrentRefreshToken(n)
			if stored[n] == cur && w.fake.RefreshLive(cur) && status[n] == store.StatusOK {
				continue
			}
			if tap.lostInWindow(stored[n], cur, w.accessUsed) && status[n] == store.StatusOK {
				// The one loss DESIGN.md allows: killed between the
				// endpoint's answer and the commit. Log in again.
				windowLosses++
				t.Logf("round %d: %s: refresh token lost to a kill during its refresh (allowed window); logging in again", round, n)
				w.MustRun("", "accounts", "remove", n, "--force")
				w.addOAuth(n)
				continue
			}
			t.Fatalf("round %d: refresh token of %s lost: stored live=%v, status %s, stored is current=%v\n%s%s",
				round, n, w.fake.RefreshLive(stored[n]), status[n], stored[n] == cur, tap.describe(kill, stored[n], cur), tail(d.logs(), 3000))
		}
		t.Logf("round %d: killed after %s of load: %s; %d responses completed, %d logged",
			round, kill.Sub(loadStart).Round(time.Millisecond), &tl, len(completed), len(ids))
		if tl.n[kBad] > 0 || tl.n[kHang] > 0 {
			t.Errorf("round %d: bad answers before the kill: %v", round, tl.examples)
		}
	}
	t.Logf("%d rounds: %d responses completed before kills, %d subject to the promise, %d of those missing; "+
		"%d refresh tokens lost inside the allowed window (of %d refreshes); unlogged responses had completed at most %s before the kill",
		rounds, totalDone, totalChecked, lateMissing, windowLosses, w.fake.TotalRefreshes(), maxMissingAge.Round(time.Millisecond))
}

// checkServes waits until every account has answered a request through
// the daemon with a 200 (round-robin spreads them).
func checkServes(t *testing.T, w *world, d *daemon, names []string, round int) {
	t.Helper()
	w.fake.ResetRequests()
	c := newClient(30*time.Second, 1)
	defer c.CloseIdleConnections()
	deadline := time.Now().Add(20 * time.Second)
	for {
		r := send(context.Background(), c, d.url, false)
		if r.kind != kComplete && r.kind != kAPIError {
			t.Fatalf("round %d: after restart: %s %d %s", round, r.kind, r.status, r.detail)
		}
		seen := map[string]bool{}
		for _, rec := range w.fake.Requests() {
			if rec.Path == fakeapi.MessagesPath && rec.Status == 200 {
				seen[rec.Account] = true
			}
		}
		var missing []string
		for _, n := range names {
			if !seen[n] {
				missing = append(missing, n)
			}
		}
		if len(missing) == 0 {
			return
		}
		if time.Now().After(deadline) {
			h := d.health(t)
			t.Fatalf("round %d: after restart, accounts %v never served; health: %s\n%s", round, missing, h.raw, tail(d.logs(), 3000))
		}
	}
}

// accessUsed reports whether the fake saw a request authorized by access
// token tok (among the requests it keeps).
func (w *world) accessUsed(tok string) bool {
	if tok == "" {
		return false
	}
	for _, rec := range w.fake.Requests() {
		if rec.Header.Get("Authorization") == "Bearer "+tok {
			return true
		}
	}
	return false
}

// watchLag measures how starved of CPU the machine is while ctx runs: the
// worst delay of a 10 ms ticker past its due time. The returned function
// waits for ctx to end and gives that delay.
func watchLag(ctx context.Context) func() time.Duration {
	const every = 10 * time.Millisecond
	done := make(chan time.Duration, 1)
	go func() {
		var worst time.Duration
		tk := time.NewTicker(every)
		defer tk.Stop()
		last := time.Now()
		for {
			select {
			case <-ctx.Done():
				done <- worst
				return
			case now := <-tk.C:
				worst = max(worst, time.Since(last)-every)
				last = now
			}
		}
	}()
	return func() time.Duration { return <-done }
}
