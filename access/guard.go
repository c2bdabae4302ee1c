package access

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/claudeflare/claudeflare/audit"
	"github.com/claudeflare/claudeflare/config"
	"github.com/claudeflare/claudeflare/internal/apierr"
	"github.com/claudeflare/claudeflare/internal/target"
	"github.com/claudeflare/claudeflare/store"
	"github.com/claudeflare/claudeflare/vault"
)

// DefaultPollInterval is how often the guard re-reads the client keys
// (the whole, small table; the key set is rebuilt only when its digest
// changed) and writes last-use times and audit rows.
const DefaultPollInterval = 2 * time.Second

// maxSeenAddrs bounds the addresses remembered per key.
const maxSeenAddrs = 4096

// Options configure a Guard.
type Options struct {
	Config  *config.Config
	VaultDB *store.DB // client keys, accounts, the audit log
	// AuditKey keys the audit rows the guard writes: audit.Prepare's Key
	// (the vault's audit key), so the daemon needs the master key.
	AuditKey []byte
	LogDB    *store.DB // the request log, for /api/stats and /api/requests; nil answers 503 there
	Logger   *slog.Logger
	// Now is the clock (nil = time.Now); the per-client limits follow it.
	Now func() time.Time
	// PollInterval is how often keys are re-read (0 = DefaultPollInterval).
	PollInterval time.Duration
	// Accounts are what the account routes that touch credentials need
	// (login, check); without them those routes answer 503.
	Accounts AccountTools
	// Sessions counts the proxy's live affinity sessions per account
	// (proxy.Server.SessionsByAccount), for /api/status; nil = unknown.
	Sessions func() map[string]int
}

// Guard is the access layer in front of the proxy's handler. Create it
// with New, wrap the proxy's handler with Wrap, and Start it.
type Guard struct {
	log     *slog.Logger
	now     func() time.Time
	vaultDB *store.DB
	logDB   *store.DB
	// auditKey keys the audit rows the guard writes.
	auditKey []byte
	poll     time.Duration
	tools    AccountTools

	policy atomic.Pointer[policy]
	keys   atomic.Pointer[keySet]
	limits *limiter
	budget *budgetTracker
	fails  failLog
	api    http.Handler

	reloadMu sync.Mutex // one key reload at a time
	version  [32]byte   // clientKeysDigest of the rows last loaded
	loaded   bool
	states   map[int64]*keyState
	// tampered: the rows that failed authentication, by id, with the
	// digest of each as reported (warned and audited once per content).
	tampered map[int64][32]byte

	flushMu sync.Mutex // one flush at a time

	bgMu    sync.Mutex
	stopBg  context.CancelFunc
	bg      sync.WaitGroup
	started bool

	// /api/status (api_status.go): the live sessions per account, and
	// where an account counts as full (a restart setting).
	sessions func() map[string]int
	maxUtil  float64
}

// keySet is the client keys as the hot path sees them: immutable, swapped
// whole on reload.
type keySet struct {
	byHash map[[32]byte]*keyEntry
	// byName holds the live, authentic keys by name (for budgets).
	byName map[string]*keyEntry
	// relay counts the live, authentic relay keys.
	relay int
	// live counts the rows that say they are live, authenticated or not:
	// a row that fails its MAC authenticates nobody, but it keeps the
	// proxy requiring keys, so that tampering with the only key never
	// opens a keyless proxy.
	live int
}

type keyEntry struct {
	hash    [32]byte
	name    string
	role    Role
	revoked bool
	state   *keyState
	budgets []Budget
	relay   bool
	models  []string
}

// keyState is what the hot path records about a key for the flusher.
type keyState struct {
	id       int64
	name     string
	lastUsed atomic.Int64 // unix ms
	flushed  int64        // last lastUsed written; flusher only
	seen     sync.Map     // address -> struct{}
	nSeen    atomic.Int64
	mu       sync.Mutex
	pending  []pendingAddr // new addresses not yet written
}

type pendingAddr struct {
	addr string
	at   int64
}

// New builds a Guard and loads the client keys.
func New(ctx context.Context, opts Options) (*Guard, error) {
	if opts.Config == nil || opts.VaultDB == nil {
		return nil, errors.New("create access guard: config and vault database are required")
	}
	if err := audit.CheckKey(opts.AuditKey); err != nil {
		return nil, fmt.Errorf("create access guard: %w", err)
	}
	g := &Guard{
		log:      opts.Logger,
		now:      opts.Now,
		vaultDB:  opts.VaultDB,
		auditKey: opts.AuditKey,
		logDB:    opts.LogDB,
		poll:     opts.PollInterval,
		tools:    opts.Accounts,
		limits:   newLimiter(),
		budget:   newBudgetTracker(time.Time{}),
		states:   map[int64]*keyState{},
		tampered: map[int64][32]byte{},
	}
	if g.log == nil {
		g.log = slog.New(slog.DiscardHandler)
	}
	if g.now == nil {
		g.now = time.Now
	}
	if g.poll <= 0 {
		g.poll = DefaultPollInterval
	}
	g.budget.since = g.now()
	g.fails.m = map[failKey]*failCount{}
	p, err := newPolicy(opts.Config)
	if err != nil {
		return nil, fmt.Errorf("create access guard: %w", err)
	}
	g.policy.Store(p)
	g.keys.Store(&keySet{byHash: map[[32]byte]*keyEntry{}, byName: map[string]*keyEntry{}})
	if err := g.Reload(ctx); err != nil {
		return nil, fmt.Errorf("create access guard: %w", err)
	}
	g.api = g.apiRoutes()
	g.sessions, g.maxUtil = opts.Sessions, statusMaxUtil(opts.Config)
	return g, nil
}

// SetConfig applies a new configuration's allow_ips, allowed origins,
// limits and metrics.public.
func (g *Guard) SetConfig(cfg *config.Config) error {
	p, err := newPolicy(cfg)
	if err != nil {
		return fmt.Errorf("apply access config: %w", err)
	}
	g.policy.Store(p)
	return nil
}

// ConfigReloaded is what the daemon calls after SIGHUP: it applies cfg,
// re-reads the client keys and records the reload in the audit log.
func (g *Guard) ConfigReloaded(ctx context.Context, cfg *config.Config) error {
	if err := g.SetConfig(cfg); err != nil {
		return err
	}
	if err := g.Reload(ctx); err != nil {
		return err
	}
	g.warnAnyOrigin()
	detail := "configuration reloaded"
	if cfg.File != "" {
		detail += " from " + cfg.File
	}
	return audit.WriteAt(ctx, g.vaultDB, g.auditKey, g.now(), audit.ActorDaemon, audit.ActionConfigReloaded, detail)
}

// warnAnyOrigin says so when allowed_origins = "*" is set while no client
// key exists: the guard does not honour it then.
func (g *Guard) warnAnyOrigin() {
	if g.policy.Load().anyOrigin && !g.KeysRequired() {
		g.log.Warn(`allowed_origins = "*" is ignored while no client API keys exist: browser pages could otherwise use this keyless proxy`,
			"hint", "create a key with `claudeflare apikey create NAME`, or list the origins allowed")
	}
}

// Reload re-reads the client keys if the table changed since the last
// read. The poll calls it every PollInterval. Only rows that carry a valid
// MAC (vault.ClientKeyMAC, keyed from the audit key) are loaded as keys;
// any other row was added or changed outside claudeflare: it is logged
// at warn level and recorded in the audit log, once per row content, and
// never authenticates anyone.
func (g *Guard) Reload(ctx context.Context) error {
	g.reloadMu.Lock()
	defer g.reloadMu.Unlock()
	// The whole table is read each time (it is small): a changed role,
	// name or revocation must reach the guard like a new row.
	rows, err := store.ListClientKeys(ctx, g.vaultDB)
	if err != nil {
		return err
	}
	v := clientKeysDigest(rows)
	if g.loaded && v == g.version {
		return nil
	}
	addrs, err := store.ListClientKeyAddresses(ctx, g.vaultDB)
	if err != nil {
		return err
	}
	ks := &keySet{byHash: make(map[[32]byte]*keyEntry, len(rows)), byName: make(map[string]*keyEntry, len(rows))}
	states := make(map[int64]*keyState, len(rows))
	rk := rowKey(g.auditKey)
	tampered := map[int64][32]byte{}
	var report []store.ClientKey
	for _, r := range rows {
		set, setErr := decodeSettings(r)
		if !vault.ClientKeyMACValid(rk, r) || setErr != nil {
			if r.RevokedAt == 0 {
				ks.live++
			}
			d := clientKeysDigest([]store.ClientKey{r})
			tampered[r.ID] = d
			if prev, ok := g.tampered[r.ID]; !ok || prev != d {
				report = append(report, r)
			}
			continue
		}
		if len(r.Hash) != 32 {
			continue
		}
		e := &keyEntry{name: r.Name, role: Role(r.Role), revoked: r.RevokedAt != 0, budgets: set.Budgets, relay: set.Relay, models: set.Models}
		copy(e.hash[:], r.Hash)
		if !e.revoked {
			st := g.states[r.ID]
			if st == nil {
				st = &keyState{id: r.ID, name: r.Name, flushed: r.LastUsedAt}
				st.lastUsed.Store(r.LastUsedAt)
			}
			states[r.ID] = st
			e.state = st
			ks.live++
			ks.byName[e.name] = e
			if e.relay {
				ks.relay++
			}
		}
		ks.byHash[e.hash] = e
	}
	for _, a := range addrs {
		if st := states[a.KeyID]; st != nil {
			if _, loaded := st.seen.LoadOrStore(a.Addr, struct{}{}); !loaded {
				st.nSeen.Add(1)
			}
		}
	}
	// Budgets start from the request log's use before the guard ran,
	// before the new set is in use.
	g.seedBudgets(ctx, ks, !g.loaded)
	if g.loaded {
		g.log.Info("client keys changed", "live_keys", ks.live)
	}
	g.states, g.version, g.loaded, g.tampered = states, v, true, tampered
	g.keys.Store(ks)
	// Reported once the set without them is in use: the warning says
	// "not loaded", and its audit write must not keep the row's old
	// state serving meanwhile.
	for _, r := range report {
		g.reportTampered(ctx, r)
	}
	return nil
}

// clientKeysDigest is a fingerprint of every column of rows but the last
// use (which the guard itself writes).
func clientKeysDigest(rows []store.ClientKey) [32]byte {
	h := sha256.New()
	var n [8]byte
	for _, r := range rows {
		for _, p := range [][]byte{
			[]byte(strconv.FormatInt(r.ID, 10)), []byte(r.Name), []byte(r.Prefix), r.Hash, []byte(r.Role),
			[]byte(strconv.FormatInt(r.CreatedAt, 10)), []byte(strconv.FormatInt(r.RevokedAt, 10)), r.MAC,
			budgetsDigestPart(r.Budgets), []byte(strconv.FormatBool(r.Relay)), budgetsDigestPart(r.Models),
		} {
			binary.BigEndian.PutUint64(n[:], uint64(len(p)))
			h.Write(n[:])
			h.Write(p)
		}
	}
	var d [32]byte
	h.Sum(d[:0])
	return d
}

// budgetsDigestPart is a nullable text column (budgets, models) for
// clientKeysDigest: NULL and "" differ.
func budgetsDigestPart(b *string) []byte {
	if b == nil {
		return []byte{0}
	}
	return append([]byte{1}, *b...)
}

// reportTampered logs and audits a client key row that failed
// authentication. Its name is shown escaped: whoever wrote the row chose it.
func (g *Guard) reportTampered(ctx context.Context, r store.ClientKey) {
	state := "live"
	if r.RevokedAt != 0 {
		state = "revoked"
	}
	g.log.Warn("a client key row failed authentication and is not loaded: it was added or changed outside claudeflare",
		"key_id", r.ID, "name", strconv.Quote(r.Name), "role", strconv.Quote(r.Role), "state", state,
		"hint", "run `claudeflare apikey list` and `claudeflare doctor`; revoke it with `claudeflare apikey revoke NAME`")
	detail := fmt.Sprintf("client key row %d (%q, role %q, %s) failed authentication and was not loaded: added or changed outside claudeflare",
		r.ID, r.Name, r.Role, state)
	if err := audit.WriteAt(context.WithoutCancel(ctx), g.vaultDB, g.auditKey, g.now(), audit.ActorDaemon, audit.ActionClientKeyTampered, detail); err != nil {
		g.log.Error("write audit log", "err", err)
	}
}

// KeysRequired reports whether any live client key exists, so requests
// need one.
func (g *Guard) KeysRequired() bool { return g.keys.Load().live > 0 }

// RelayKeys reports whether any live relay key exists: requests with one
// are served with the client's own credentials, even with no usable
// account (the proxy's /health says so).
func (g *Guard) RelayKeys() bool { return g.keys.Load().relay > 0 }

// lookup finds the key a credential names. The map is keyed by the
// SHA-256 of the credential, so its timing says nothing about the key;
// the final comparison is constant time.
func (ks *keySet) lookup(cred string) (*keyEntry, string) {
	if cred == "" {
		return nil, reasonNoKey
	}
	h := HashKey(cred)
	e := ks.byHash[h]
	if e == nil || subtle.ConstantTimeCompare(e.hash[:], h[:]) != 1 {
		return nil, reasonInvalidKey
	}
	if e.revoked {
		return nil, reasonRevokedKey
	}
	return e, ""
}

// Why an authentication failed.
const (
	reasonNoKey      = "no key"
	reasonInvalidKey = "invalid key"
	reasonRevokedKey = "revoked key"
)

// Client is who is making a request, as the guard established it.
type Client struct {
	Key  string // the client key's name; "" when no keys exist
	Role Role   // the key's role; "" when no keys exist
	Addr string // the remote IP address
	// Models is the client key's model allowlist (patterns, a trailing
	// "*" matches a prefix); nil or empty = every model.
	Models []string
	// Relay: the key is a relay key (apikey create --relay), so the
	// request goes upstream with the client's own Authorization /
	// x-api-key, never a pool account's.
	Relay bool
}

type clientCtxKey struct{}

// ClientFrom returns the client of a request that passed the guard.
func ClientFrom(ctx context.Context) (Client, bool) {
	c, ok := ctx.Value(clientCtxKey{}).(Client)
	return c, ok
}

// route is what a request needs.
type route struct {
	public  bool       // no key needed
	perm    Permission // "" = any valid key
	limited bool       // counts against requests per minute
	stream  bool       // holds a concurrent-stream slot
	api     bool       // served by the admin API
}

// classify decides what a request needs from its canonical path (see
// target.Path): the one string the muxes route and the proxy
// forwards, so what is authorized is what is served.
func classify(r *http.Request, pth string, p *policy) route {
	switch {
	case pth == "/health":
		return route{public: true}
	case pth == "/" && (r.Method == http.MethodGet || r.Method == http.MethodHead):
		return route{public: true}
	case pth == "/metrics":
		return route{public: p.metricsPublic, perm: PermMetricsView}
	case strings.HasPrefix(pth, "/v1/"):
		return route{perm: PermAPIRequest, limited: true, stream: true}
	case pth == "/api" || strings.HasPrefix(pth, "/api/"):
		return route{perm: apiPermission(pth), limited: true, api: true}
	case pth == "/ui" || strings.HasPrefix(pth, "/ui/"):
		// The dashboard's static files hold no data (see package ui):
		// served by the admin mux without a key; its /api fetches need one.
		return route{public: true, api: true}
	}
	return route{}
}

func apiPermission(p string) Permission {
	switch {
	case p == "/api/status":
		return PermDashboardView
	case p == "/api/accounts" || p == "/api/stats" || p == "/api/series":
		return PermDashboardView
	case p == "/api/requests":
		return PermLogsView
	case strings.HasPrefix(p, "/api/requests/") && strings.HasSuffix(p, "/payload"):
		return PermPayloadsView
	case strings.HasPrefix(p, "/api/accounts/"):
		return PermAccountsManage
	}
	return ""
}

// Wrap puts the guard in front of next (the proxy's handler): in order,
// server.allow_ips, CORS (preflight and origin check), client
// authentication and permission, the per-client limits; /api/* is served
// by the guard's admin API, everything else by next.
func (g *Guard) Wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		g.serve(w, r, next)
	})
}

func (g *Guard) serve(w http.ResponseWriter, r *http.Request, next http.Handler) {
	pol := g.policy.Load()
	addr := remoteAddr(r)
	// One canonical path per request, decided here and handed on: a
	// target that is not already canonical is refused, never cleaned.
	pth, err := target.Path(r)
	if err != nil {
		g.log.Debug("request target refused", "addr", addrString(addr), "method", r.Method, "reason", err.Error())
		reject(w, http.StatusBadRequest, apierr.InvalidRequest, err.Error())
		return
	}
	rt := classify(r, pth, pol)
	if r.ContentLength != 0 && pol.bodyTimeout > 0 {
		// A body gets server.body_read_timeout to arrive whoever reads
		// it: the proxy (which sets it again), or net/http draining the
		// body of a request refused here. Without it a client could
		// hold a refused request open by trickling its body.
		http.NewResponseController(w).SetReadDeadline(time.Now().Add(pol.bodyTimeout))
	}
	h := w.Header()
	if !strings.HasPrefix(pth, "/v1/") {
		apierr.SecurityHeaders(h)
	}
	if rt.api {
		h.Set("Cache-Control", "no-store")
	}

	if !pol.addrAllowed(addr) {
		g.log.Debug("client address refused", "addr", addrString(addr), "path", r.URL.Path)
		reject(w, http.StatusForbidden, apierr.Permission, "claudeflare: your address is not allowed to use this proxy (server.allow_ips)")
		return
	}

	ks := g.keys.Load()
	if g.checkOrigin(w, r, pol, ks.live > 0, addr) {
		return
	}

	client := Client{Addr: addrString(addr)}
	limitID := "addr:" + client.Addr
	if ks.live == 0 {
		// No keys: loopback clients only, and only by an IP or a loopback
		// name, which a DNS-rebinding page cannot send.
		if !rt.public && !addr.IsLoopback() {
			reject(w, http.StatusForbidden, apierr.Permission, "claudeflare: no client API keys exist, so only loopback clients are served; create one with `claudeflare apikey create NAME`")
			return
		}
		if !rt.public && !ipHost(r.Host) {
			reject(w, http.StatusForbidden, apierr.Permission, "claudeflare: use an IP address or localhost in the URL (no client API keys exist)")
			return
		}
	} else if !rt.public {
		cred, inOwnHeader := credential(r.Header)
		e, reason := ks.lookup(cred)
		if e != nil && e.relay && !inOwnHeader {
			// A relay key in Authorization or x-api-key would leave the
			// client's own credential no header to travel in.
			g.failedAuth(addr, "relay key outside x-claudeflare-key", r)
			reject(w, http.StatusUnauthorized, apierr.Authentication, "claudeflare: a relay key goes in the x-claudeflare-key header (ANTHROPIC_CUSTOM_HEADERS for Claude Code); send your own credentials in Authorization or x-api-key")
			return
		}
		if e == nil {
			// One answer for a missing, unknown or revoked key: it does
			// not tell a prober which keys once existed (the audit log
			// records the reason).
			g.failedAuth(addr, reason, r)
			reject(w, http.StatusUnauthorized, apierr.Authentication, "claudeflare: a valid client API key is required (x-api-key, Authorization: Bearer or x-claudeflare-key)")
			return
		}
		if rt.perm != "" && !e.role.Can(rt.perm) {
			g.log.Debug("permission denied", "key", e.name, "role", string(e.role), "permission", string(rt.perm), "path", r.URL.Path)
			reject(w, http.StatusForbidden, apierr.Permission,
				fmt.Sprintf("claudeflare: client key %q (role %s) does not have permission %s", e.name, e.role, rt.perm))
			return
		}
		client.Key, client.Role, client.Relay, client.Models = e.name, e.role, e.relay, e.models
		limitID = "key:" + strconv.FormatInt(e.state.id, 10)
		g.noteUse(e.state, client.Addr)
		if rt.stream {
			if rej := g.overBudget(e, g.now()); rej != nil {
				g.log.Debug("client key over budget", "key", e.name, "retry_after", rej.retryAfter.String())
				h.Set("X-Claudeflare-Limit", "budget")
				apierr.Write(w, apierr.Reply{Status: http.StatusTooManyRequests, Type: apierr.RateLimit, Message: rej.message, Retry: apierr.RetryNo, RetryAfter: rej.retryAfter})
				return
			}
		}
	}

	if rt.limited {
		release, rej := g.limits.acquire(limitID, pol.rpm, pol.streams, rt.stream, g.now())
		if rej != nil {
			g.log.Debug("client limit", "key", client.Key, "addr", client.Addr, "retry_after", rej.retryAfter.String())
			h.Set("X-Claudeflare-Limit", "client")
			apierr.Write(w, apierr.Reply{Status: http.StatusTooManyRequests, Type: apierr.RateLimit, Message: rej.message, Retry: apierr.RetryYes, RetryAfter: rej.retryAfter})
			return
		}
		defer release()
	}

	r = r.WithContext(target.WithAuthorized(context.WithValue(r.Context(), clientCtxKey{}, client), pth))
	if rt.api {
		g.api.ServeHTTP(w, r)
		return
	}
	next.ServeHTTP(w, r)
}

// checkOrigin applies CORS to a request that names an Origin: a
// preflight is answered here, and an origin neither listed nor the
// proxy's own loopback origin is refused. It reports whether the request
// was answered (and must go no further).
func (g *Guard) checkOrigin(w http.ResponseWriter, r *http.Request, pol *policy, keysExist bool, addr netip.Addr) (answered bool) {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return false
	}
	// "*" is honoured only while client keys exist: without them a
	// page from anywhere could drive a keyless loopback proxy.
	listed := pol.originListed(origin, keysExist)
	if isPreflight(r) {
		if !listed {
			reject(w, http.StatusForbidden, apierr.Permission, "claudeflare: origin not allowed (ALLOWED_ORIGINS)")
			return true
		}
		preflight(w, r, origin)
		return true
	}
	if !listed && !sameLoopbackOrigin(origin, r) {
		g.log.Debug("origin refused", "addr", addrString(addr), "path", r.URL.Path)
		reject(w, http.StatusForbidden, apierr.Permission, "claudeflare: origin not allowed (ALLOWED_ORIGINS)")
		return true
	}
	if listed {
		h := w.Header()
		h.Set("Access-Control-Allow-Origin", origin)
		h.Add("Vary", "Origin")
		h.Set("Access-Control-Expose-Headers", "*")
	}
	return false
}

func addrString(a netip.Addr) string {
	if !a.IsValid() {
		return "unknown"
	}
	return a.String()
}

func isPreflight(r *http.Request) bool {
	return r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != ""
}

// preflight answers a CORS preflight from a listed origin.
func preflight(w http.ResponseWriter, r *http.Request, origin string) {
	h := w.Header()
	h.Set("Access-Control-Allow-Origin", origin)
	h.Add("Vary", "Origin")
	h.Add("Vary", "Access-Control-Request-Method")
	h.Add("Vary", "Access-Control-Request-Headers")
	h.Set("Access-Control-Allow-Methods", "GET, HEAD, POST, OPTIONS")
	if req := r.Header.Get("Access-Control-Request-Headers"); req != "" && headerList(req) {
		h.Set("Access-Control-Allow-Headers", req)
	}
	h.Set("Access-Control-Max-Age", "600")
	w.WriteHeader(http.StatusNoContent)
}

// headerList reports whether s is a comma-separated list of header names.
func headerList(s string) bool {
	if len(s) > 2048 {
		return false
	}
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			return false
		}
		for i := 0; i < len(f); i++ {
			c := f[i]
			if !(c == '-' || c == '_' || c == '.' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z') {
				return false
			}
		}
	}
	return true
}

// reject answers an error the guard makes itself, where retrying cannot
// help.
func reject(w http.ResponseWriter, status int, typ, msg string) {
	apierr.Write(w, apierr.Reply{Status: status, Type: typ, Message: msg, Retry: apierr.RetryNo})
}

// noteUse records a key's use off the hot path's critical work: an atomic
// store, and a map lookup that only locks for a new address.
func (g *Guard) noteUse(st *keyState, addr string) {
	st.lastUsed.Store(g.now().UnixMilli())
	if _, ok := st.seen.Load(addr); ok {
		return
	}
	if st.nSeen.Load() >= maxSeenAddrs {
		return
	}
	if _, loaded := st.seen.LoadOrStore(addr, struct{}{}); loaded {
		return
	}
	st.nSeen.Add(1)
	st.mu.Lock()
	st.pending = append(st.pending, pendingAddr{addr: addr, at: g.now().UnixMilli()})
	st.mu.Unlock()
}

// failedAuth counts a failed authentication for the audit log, which gets
// one row per address per minute.
func (g *Guard) failedAuth(addr netip.Addr, reason string, r *http.Request) {
	g.log.Debug("client authentication failed", "addr", addrString(addr), "reason", reason, "method", r.Method, "path", r.URL.Path)
	g.fails.add(addrString(addr), reason, g.now())
}

// Start launches the background work: the key poll, and writing
// last-use times and audit rows. Stop ends it. (An account that needs a
// new login is audited by the proxy's account events: audit.AccountEvents.)
func (g *Guard) Start() {
	g.bgMu.Lock()
	defer g.bgMu.Unlock()
	if g.started {
		return
	}
	g.started = true
	g.warnAnyOrigin()
	ctx, cancel := context.WithCancel(context.Background())
	g.stopBg = cancel
	g.bg.Add(1)
	go func() {
		defer g.bg.Done()
		t := time.NewTicker(g.poll)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				g.tick(ctx)
			}
		}
	}()
}

func (g *Guard) tick(ctx context.Context) {
	if err := g.Reload(ctx); err != nil && ctx.Err() == nil {
		g.log.Warn("reload client keys", "err", err)
	}
	if err := g.flush(ctx, false); err != nil && ctx.Err() == nil {
		g.log.Warn("record client key use", "err", err)
	}
}

// Stop ends the background work and writes what is pending, waiting at
// most until ctx ends.
func (g *Guard) Stop(ctx context.Context) error {
	g.bgMu.Lock()
	if g.started {
		g.stopBg()
		g.started = false
	}
	g.bgMu.Unlock()
	done := make(chan struct{})
	go func() { g.bg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
	}
	return g.Flush(ctx)
}

// Flush writes pending last-use times, new addresses and failed
// authentications (the current minute's too) now.
func (g *Guard) Flush(ctx context.Context) error { return g.flush(ctx, true) }
