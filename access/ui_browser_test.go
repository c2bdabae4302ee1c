package access_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/claudeflare/claudeflare/access"
	"github.com/claudeflare/claudeflare/internal/fakeapi"
	"github.com/claudeflare/claudeflare/internal/testutil"
	"github.com/claudeflare/claudeflare/store"
	"github.com/claudeflare/claudeflare/ui"
	"github.com/claudeflare/claudeflare/vault"
)

// screenshotEnv names a file the dashboard test writes a PNG of the page
// to (relative paths from the repository root), e.g.
// CLAUDEFLARE_UI_SCREENSHOT=docs/dashboard.png.
const screenshotEnv = "CLAUDEFLARE_UI_SCREENSHOT"

// browserLog collects what must never happen on the dashboard: uncaught
// exceptions, console errors, CSP violations (from the browser log and
// from the page's securitypolicyviolation events). Failed fetches are the
// network's: kept apart, as a 401 before the key is typed is expected.
type browserLog struct {
	mu      sync.Mutex
	errors  []string
	network []string
}

func (b *browserLog) add(ev any) {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch e := ev.(type) {
	case *runtime.EventExceptionThrown:
		b.errors = append(b.errors, "exception: "+(&chromedp.ExceptionError{ExceptionDetails: e.ExceptionDetails}).Error())
	case *runtime.EventConsoleAPICalled:
		if e.Type == runtime.ConsoleAPICalledTypeError || e.Type == runtime.ConsoleAPICalledTypeAssert {
			var parts []string
			for _, a := range e.Args {
				if a.Value != nil {
					parts = append(parts, string(a.Value))
				} else {
					parts = append(parts, a.Description)
				}
			}
			b.errors = append(b.errors, "console."+string(e.Type)+": "+strings.Join(parts, " "))
		}
	case *cdplog.EventEntryAdded:
		en := e.Entry
		switch {
		case en.Source == cdplog.EntrySourceNetwork:
			b.network = append(b.network, en.Text+" "+en.URL)
		case en.Level == cdplog.EntryLevelError || en.Source == cdplog.EntrySourceSecurity ||
			strings.Contains(en.Text, "Content Security Policy"):
			b.errors = append(b.errors, fmt.Sprintf("log %s/%s: %s %s", en.Source, en.Level, en.Text, en.URL))
		}
	}
}

func (b *browserLog) take() (errs, network []string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	errs, network = b.errors, b.network
	b.errors, b.network = nil, nil
	return errs, network
}

// violationProbe records CSP violations in the page itself: DevTools adds
// it to every document before the page's own script (CSP does not apply
// to it), and the test reads window.__cspViolations.
const violationProbe = `window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__cspViolations.push(e.violatedDirective + " " + e.blockedURI + " " + e.sourceFile + ":" + e.lineNumber);
});`

// startBrowser starts Debian's chromium headless with a fresh profile.
func startBrowser(t *testing.T) (context.Context, *browserLog) {
	t.Helper()
	exe := ""
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			exe = p
			break
		}
	}
	if exe == "" {
		testutil.Missing(t, "chromium not installed: the dashboard test drives it (apt-get install chromium)")
	}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(exe),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.Flag("headless", true),
		chromedp.Flag("no-sandbox", true),
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("disable-default-apps", true),
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.WindowSize(1280, 900),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	bl := &browserLog{}
	// The first Run starts the browser: no timeout on it (that would stop
	// the browser), each step below gets its own.
	if err := chromedp.Do(ctx, chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		_, err := cdp.Call(ctx, tg, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{Source: violationProbe})
		return err
	})); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	if err := chromedp.Listen(ctx, bl.add); err != nil {
		t.Fatal(err)
	}
	return ctx, bl
}

// run runs actions with a deadline that allows for a loaded machine.
func run(t *testing.T, ctx context.Context, what string, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	c, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	if err := chromedp.Do(c, steps...); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func eval[T any](t *testing.T, ctx context.Context, expr string) T {
	t.Helper()
	c, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	v, err := chromedp.Run(c, chromedp.Evaluate[T](expr))
	if err != nil {
		t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

// waitJS waits until the expression is truthy in the page.
func waitJS(t *testing.T, ctx context.Context, what, expr string) {
	t.Helper()
	c, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	if _, err := chromedp.Run(c, chromedp.Poll[bool](expr, chromedp.WithPollingInterval(50*time.Millisecond))); err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
}

// noScriptErrors fails on anything browserLog or the page's probe caught.
func noScriptErrors(t *testing.T, ctx context.Context, bl *browserLog, networkOK func(string) bool) {
	t.Helper()
	errs, network := bl.take()
	for _, n := range network {
		if !networkOK(n) {
			errs = append(errs, "network: "+n)
		}
	}
	errs = append(errs, eval[[]string](t, ctx, `window.__cspViolations || ["probe missing"]`)...)
	for _, e := range errs {
		t.Errorf("browser: %s", e)
	}
}

// accountView is one account card as the page shows it.
type accountView struct {
	Name    string `json:"name"`
	State   string `json:"state"`
	Pct5h   string `json:"pct5h"`
	Pct7d   string `json:"pct7d"`
	Reset5h string `json:"reset5h"`
	Reset7d string `json:"reset7d"`
	Meter5h string `json:"meter5h"`
}

const readAccounts = `Array.from(document.querySelectorAll("#accounts [data-account]")).map((c) => ({
  name: c.dataset.account,
  state: c.querySelector(".badge").textContent,
  pct5h: c.querySelector('[data-window="5h"] .pct').textContent,
  pct7d: c.querySelector('[data-window="7d"] .pct').textContent,
  reset5h: c.querySelector('[data-window="5h"] .reset').textContent,
  reset7d: c.querySelector('[data-window="7d"] .reset').textContent,
  meter5h: c.querySelector('[data-window="5h"] [role=meter]').getAttribute("aria-valuenow") || "",
}))`

// TestDashboardInBrowser opens /ui/ in headless chromium against the real
// daemon (fake upstream, real SQLite) with three accounts of known 5h/7d
// utilization and requests in the log, and reads what the page shows: every
// account with its utilization and a ticking reset, the charts (cost
// among them), the recent requests, an admin's payload, and no script
// error or CSP violation. Then, once client keys exist, the page asks for
// a key and shows nothing until a viewer key is typed in.
func TestDashboardInBrowser(t *testing.T) {
	bctx, bl := startBrowser(t)
	d := newDaemonStack(t, nil)
	ctx := context.Background()
	// The daemon's clock ends at the real time, as the browser's reads,
	// so resets are as far ahead for both; it starts 16 hours before, for
	// traffic spread over the charts.
	const spread = 16
	d.clk.Add(time.Since(d.clk.Now()) - spread*time.Hour)
	for i, name := range []string{"team", "spare"} {
		if _, err := d.v.AddAccount(ctx, vault.NewAccount{Name: name, Kind: store.KindOAuth, Mode: "max", Priority: 2 + i, Tier: 1},
			vault.Secrets{RefreshToken: d.api.NewOAuthAccount(name)}); err != nil {
			t.Fatal(err)
		}
	}
	now := time.Now()
	type want struct {
		u5, u7         float64
		reset5, reset7 time.Duration
	}
	wants := map[string]want{
		"work": {0.42, 0.18, 2 * time.Hour, 3 * 24 * time.Hour},
		"pool": {0.07, 0.55, 4 * time.Hour, 5 * 24 * time.Hour},
		"team": {0.91, 0.66, 30 * time.Minute, 26 * time.Hour},
		// spare's 5h window is spent: its first request is refused and it
		// is limited until the reset.
		"spare": {1, 0.40, 45 * time.Minute, 6 * 24 * time.Hour},
	}
	unified := func(name, status string) {
		w := wants[name]
		d.api.SetUnified(name, map[string]string{
			fakeapi.UnifiedPrefix + "status":         status,
			fakeapi.UnifiedPrefix + "5h-status":      status,
			fakeapi.UnifiedPrefix + "5h-utilization": strconv.FormatFloat(w.u5, 'f', 2, 64),
			fakeapi.UnifiedPrefix + "5h-reset":       strconv.FormatInt(now.Add(w.reset5).Unix(), 10),
			fakeapi.UnifiedPrefix + "7d-status":      "allowed",
			fakeapi.UnifiedPrefix + "7d-utilization": strconv.FormatFloat(w.u7, 'f', 2, 64),
			fakeapi.UnifiedPrefix + "7d-reset":       strconv.FormatInt(now.Add(w.reset7).Unix(), 10),
			fakeapi.UnifiedPrefix + "reset":          strconv.FormatInt(now.Add(w.reset5).Unix(), 10),
		})
	}
	for name := range wants {
		unified(name, "allowed")
	}
	// Traffic over the last hours: three models, some refused by upstream.
	models := []string{"claude-sonnet-4-5", "claude-haiku-4-5", "claude-opus-4-1"}
	spreadN := 0
	for h := 0; h < spread; h++ {
		for i := 0; i < 1+(h*7)%4; i++ {
			if (h+i)%7 == 3 {
				d.api.Inject(fakeapi.Fault{Kind: fakeapi.FaultStatus, Status: 400, Path: fakeapi.MessagesPath})
			}
			body := `{"model":"` + models[(h+i)%3] + `","max_tokens":` + strconv.Itoa(64+h*40) + `,"messages":[{"role":"user","content":"` + strings.Repeat("hello ", 20*(i+1)) + `"}]}`
			if r := d.do("POST", "/v1/messages", body); r.status != 200 && r.status != 400 {
				t.Fatalf("status %d: %s", r.status, r.body)
			}
			spreadN++
		}
		d.clk.Add(time.Hour)
	}
	d.clk.Add(time.Since(d.clk.Now()))
	// Requests on each account: the others paused while one serves.
	names := []string{"work", "pool", "team", "spare"}
	setPaused := func(name string, paused bool) {
		if err := store.SetPaused(ctx, d.vdb, name, paused, time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	waitPaused := func(name string, paused bool) {
		waitFor(t, fmt.Sprintf("%s paused=%v", name, paused), func() bool {
			for _, a := range d.d.Proxy().Accounts() {
				if a.Name == name {
					return a.Paused == paused
				}
			}
			return false
		})
	}
	for _, serve := range names {
		for _, n := range names {
			setPaused(n, n != serve)
		}
		for _, n := range names {
			waitPaused(n, n != serve)
		}
		if serve == "spare" {
			unified("spare", "rejected")
			d.api.Inject(fakeapi.Fault{Account: "spare", Kind: fakeapi.FaultStatus, Status: 429, Path: fakeapi.MessagesPath, Type: "rate_limit_error", Message: "This request would exceed your account's rate limit. Please try again later."})
			expectStatus(t, d.message(false), 429, "rate_limit_error")
			continue
		}
		for i := 0; i < 2; i++ {
			expectStatus(t, d.message(i == 1), 200, "")
		}
	}
	for _, n := range names {
		setPaused(n, false)
	}
	for _, n := range names {
		waitPaused(n, false)
	}
	waitFor(t, "every request in the log", func() bool {
		var page struct{ Requests []json.RawMessage }
		r := d.do("GET", "/api/requests?limit=1000", "")
		return r.status == 200 && json.Unmarshal([]byte(r.body), &page) == nil && len(page.Requests) >= 6+spreadN
	})

	// The page and its files: no key needed, strict CSP, nosniff; GET /
	// answers as it always has.
	for _, p := range []string{"/ui/", "/ui/app.js", "/ui/style.css"} {
		r := d.do("GET", p, "")
		if r.status != 200 || r.header.Get("Content-Security-Policy") != ui.CSP || r.header.Get("X-Content-Type-Options") != "nosniff" {
			t.Fatalf("GET %s: %d %v", p, r.status, r.header)
		}
		if strings.Contains(r.body, "<script>") || strings.Contains(r.body, " style=") || strings.Contains(r.body, "http://") && p == "/ui/" {
			t.Fatalf("GET %s: inline script, inline style or an outside URL", p)
		}
	}
	if r := d.do("GET", "/", ""); r.status != 200 || r.body != "claudeflare\n" {
		t.Fatalf("GET /: %d %q", r.status, r.body)
	}
	if r := d.do("POST", "/ui/", ""); r.status != 405 {
		t.Fatalf("POST /ui/: %d", r.status)
	}

	// No client keys: the dashboard is open on loopback.
	run(t, bctx, "open /ui/", chromedp.Navigate(d.url+"/ui/"))
	waitJS(t, bctx, "four accounts with utilization", `document.querySelectorAll("#accounts [data-account]").length === 4 &&
		Array.from(document.querySelectorAll('#accounts .pct')).every((e) => e.textContent !== "–")`)
	views := eval[[]accountView](t, bctx, readAccounts)
	resetRe := regexp.MustCompile(`^resets in (\d+d \d+h|\d+h \d\dm|\d+m \d\ds)$`)
	seen := map[string]bool{}
	for _, v := range views {
		w, ok := wants[v.Name]
		if !ok {
			t.Errorf("unexpected account %q", v.Name)
			continue
		}
		seen[v.Name] = true
		p5, p7 := fmt.Sprintf("%d%%", int(w.u5*100+0.5)), fmt.Sprintf("%d%%", int(w.u7*100+0.5))
		if v.Pct5h != p5 || v.Pct7d != p7 || v.Meter5h != strconv.Itoa(int(w.u5*100+0.5)) {
			t.Errorf("%s: 5h %s (meter %s) 7d %s, want %s %s", v.Name, v.Pct5h, v.Meter5h, v.Pct7d, p5, p7)
		}
		if !resetRe.MatchString(v.Reset5h) || !resetRe.MatchString(v.Reset7d) {
			t.Errorf("%s: resets %q %q", v.Name, v.Reset5h, v.Reset7d)
		}
		if want := map[bool]string{true: "rate limited", false: "ok"}[v.Name == "spare"]; v.State != want {
			t.Errorf("%s: state %q, want %q", v.Name, v.State, want)
		}
	}
	if len(seen) != 4 {
		t.Errorf("accounts shown: %v", views)
	}
	// The reason of spare's state, with its end.
	if r := eval[string](t, bctx, `document.querySelector('[data-account="spare"] .reason').textContent`); !regexp.MustCompile(`^5h limit until .+ \(\d+m \d\ds\)`).MatchString(r) {
		t.Errorf("spare: reason %q", r)
	}
	// team's 5h reset is 30 minutes away: "resets in 29m 59s" ticks.
	first := eval[string](t, bctx, `document.querySelector('[data-account="team"] [data-window="5h"] .reset').textContent`)
	waitJS(t, bctx, "the countdown to tick", `document.querySelector('[data-account="team"] [data-window="5h"] .reset').textContent !== `+strconv.Quote(first))

	// Charts, cost among them, and the recent requests.
	waitJS(t, bctx, "charts", `["chart-requests", "chart-latency", "chart-tokens", "chart-cost"].every((id) => document.querySelector("#" + id + " svg.svgchart"))`)
	waitJS(t, bctx, "request bars", `document.querySelectorAll("#chart-requests rect.bar.req").length > 0`)
	waitJS(t, bctx, "recent requests", `document.querySelectorAll("#requests tbody tr").length >= 6`)
	rows := eval[[]string](t, bctx, `Array.from(document.querySelectorAll("#requests tbody tr td:nth-child(2)")).map((e) => e.textContent)`)
	for _, n := range names {
		if !contains(rows, n) {
			t.Errorf("no request of %s listed: %v", n, rows)
		}
	}
	if r := d.do("GET", "/api/requests?limit=1", ""); strings.Contains(r.body, `"cost_usd":0.`) || strings.Contains(r.body, `"cost_usd":1`) {
		// Priced rows: the cost chart has bars.
		waitJS(t, bctx, "cost bars", `document.querySelectorAll("#chart-cost rect.bar.cost").length > 0`)
	}
	// The filter narrows the list to one account.
	run(t, bctx, "filter by account", chromedp.SetValue(chromedp.CSS("#f-account"), "team"),
		chromedp.Evaluate[chromedp.Void](`document.getElementById("f-account").dispatchEvent(new Event("change"))`))
	teamRows := strings.Count(d.do("GET", "/api/requests?account=team&limit=1000", "").body, `"account":"team"`)
	t.Logf("%d requests on team", teamRows)
	waitJS(t, bctx, "only team's requests", `(() => { const c = Array.from(document.querySelectorAll("#requests tbody tr td:nth-child(2)")).map((e) => e.textContent);
		return c.length === `+strconv.Itoa(teamRows)+` && c.every((n) => n === "team"); })()`)
	// A payload, on demand (loopback without keys is every permission).
	run(t, bctx, "open a payload", chromedp.Evaluate[chromedp.Void](`document.querySelector("#requests tbody button[data-id]").click()`))
	waitJS(t, bctx, "the payload", `!document.getElementById("payload").hidden && document.getElementById("payload-body").textContent.includes('"request"')`)
	if body := eval[string](t, bctx, `document.getElementById("payload-body").textContent`); strings.Contains(body, "sk-ant-") {
		t.Errorf("payload shows a credential: %.300s", body)
	}

	if path := os.Getenv(screenshotEnv); path != "" {
		if !filepath.IsAbs(path) {
			path = filepath.Join("..", path)
		}
		run(t, bctx, "reset filter", chromedp.SetValue(chromedp.CSS("#f-account"), ""),
			chromedp.Evaluate[chromedp.Void](`document.getElementById("f-account").dispatchEvent(new Event("change")); document.getElementById("payload").hidden = true`))
		waitJS(t, bctx, "all requests", `document.querySelectorAll("#requests tbody tr").length >= 6`)
		// The window as tall as the page, so the picture ends with it.
		height := eval[float64](t, bctx, `document.documentElement.style.overflow = "hidden"; window.scrollTo(0, 0);
			document.querySelector("footer").getBoundingClientRect().bottom`)
		run(t, bctx, "fit the window", chromedp.EmulateViewport(1280, int64(height)+1))
		c, cancel := context.WithTimeout(bctx, 90*time.Second)
		png, err := chromedp.Run(c, chromedp.CaptureScreenshot())
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, png, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("screenshot written to %s", path)
	}
	// Every fetch of the page succeeded.
	noScriptErrors(t, bctx, bl, func(string) bool { return false })

	// Client keys exist: the page asks for one and shows no data.
	viewer, _, err := access.CreateKey(ctx, d.vdb, d.akey, "dash", access.RoleViewer, "cli:test", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	apiOnly, _, _ := access.CreateKey(ctx, d.vdb, d.akey, "claude-code", access.RoleAPI, "cli:test", time.Now())
	d.extra = append(d.extra, viewer, apiOnly)
	waitFor(t, "keys to be required", func() bool { return d.do("GET", "/api/accounts", "").status == 401 })
	d.waitKeysSeen(viewer, apiOnly)
	if r := d.do("GET", "/ui/", ""); r.status != 200 {
		t.Fatalf("GET /ui/ without a key once keys exist: %d", r.status)
	}
	run(t, bctx, "reload /ui/", chromedp.Navigate(d.url+"/ui/"))
	waitJS(t, bctx, "the key prompt", `!document.getElementById("login").hidden`)
	if n := eval[int](t, bctx, `document.querySelectorAll("[data-account], #requests tbody tr").length + (document.getElementById("dash").hidden ? 0 : 100)`); n != 0 {
		t.Errorf("data shown without a key (%d)", n)
	}
	// An api-role key is refused with a reason, and still nothing shows.
	submitKey := func(k string) {
		run(t, bctx, "type a key", chromedp.SetValue(chromedp.CSS("#key"), k),
			chromedp.Evaluate[chromedp.Void](`document.getElementById("login-form").requestSubmit()`))
	}
	submitKey(apiOnly)
	waitJS(t, bctx, "the refusal", `document.getElementById("login-why").textContent.includes("may not view")`)
	if eval[bool](t, bctx, `document.getElementById("dash").hidden`) != true {
		t.Error("dashboard shown to an api key")
	}
	submitKey(viewer)
	waitJS(t, bctx, "the dashboard with a viewer key", `!document.getElementById("dash").hidden &&
		document.querySelectorAll("#accounts [data-account]").length === 4 &&
		document.querySelectorAll("#requests tbody tr").length >= 6`)
	if k := eval[string](t, bctx, `sessionStorage.getItem("claudeflare.key") || ""`); k != viewer {
		t.Error("the key is not kept in sessionStorage")
	}
	if c := eval[string](t, bctx, `document.cookie`); c != "" {
		t.Errorf("cookie set: %q", c)
	}
	// A narrow window: one column, nothing wider than the window (the
	// requests table scrolls inside its own box).
	run(t, bctx, "narrow window", chromedp.EmulateViewport(390, 844))
	waitJS(t, bctx, "one column", `document.querySelector("#accounts [data-account]").getBoundingClientRect().width <= 390`)
	if w := eval[int](t, bctx, `document.documentElement.scrollWidth`); w > 390 {
		t.Errorf("the page is %dpx wide in a 390px window", w)
	}
	if path := os.Getenv(screenshotEnv + "_NARROW"); path != "" {
		c, cancel := context.WithTimeout(bctx, 90*time.Second)
		png, err := chromedp.Run(c, chromedp.FullScreenshot(100))
		cancel()
		if err == nil {
			err = os.WriteFile(path, png, 0o644)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	// A viewer may not read payloads: the page says so.
	run(t, bctx, "open a payload as viewer", chromedp.Evaluate[chromedp.Void](`document.querySelector("#requests tbody button[data-id]").click()`))
	waitJS(t, bctx, "the refusal of the payload", `document.getElementById("payload-body").textContent.includes("admin")`)
	// Expected refusals only: the 401s before the key, the api key's 403
	// and the viewer's 403 on the payload.
	noScriptErrors(t, bctx, bl, func(n string) bool {
		return strings.Contains(n, "401") || strings.Contains(n, "403")
	})
}
