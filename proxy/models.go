package proxy

// Models: GET /v1/models (the union of what the pool's accounts offer,
// plus the configured aliases), model aliases ([models] aliases: the
// body's "model" rewritten before forwarding) and the model allow lists
// (per client key role, [models.allow], and per client key).

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/claudeflare/claudeflare/cloud"
	"github.com/claudeflare/claudeflare/config"
	"github.com/claudeflare/claudeflare/internal/apierr"
	"github.com/claudeflare/claudeflare/store"
)

// modelsTTL is how long the pool's model list is served before it is
// asked again (in the background: a stale list is served meanwhile).
const modelsTTL = 5 * time.Minute

// modelsFailedTTL is how soon a list that no account answered is asked
// again.
const modelsFailedTTL = 30 * time.Second

// modelsFetchTimeout bounds asking the accounts.
const modelsFetchTimeout = 15 * time.Second

// modelsPageMax bounds the pages read from one account's /v1/models.
const modelsPageMax = 10

// ModelInfo is one model of GET /v1/models, in Anthropic's shape.
type ModelInfo struct {
	Type        string `json:"type"`
	ID          string `json:"id"`
	DisplayName string `json:"display_name"`
	CreatedAt   string `json:"created_at"`
}

// modelList is Anthropic's list shape.
type modelList struct {
	Data    []ModelInfo `json:"data"`
	HasMore bool        `json:"has_more"`
	FirstID *string     `json:"first_id"`
	LastID  *string     `json:"last_id"`
}

// modelPolicy is [models]: aliases and role allow lists.
type modelPolicy struct {
	aliases map[string]string
	allow   map[string][]string
}

func newModelPolicy(m config.Models) *modelPolicy {
	return &modelPolicy{aliases: maps.Clone(map[string]string(m.Aliases)), allow: maps.Clone(map[string][]string(m.Allow))}
}

// modelsState is the Server's part in models.
type modelsState struct {
	policy atomic.Pointer[modelPolicy]
	// scope is the client key's role and model allowlist of a request
	// (Options.ClientModels).
	scope func(r *http.Request) (role string, models []string)

	mu       sync.Mutex
	list     []ModelInfo // the pool's models, newest first
	expires  time.Time   // when list is asked again
	failed   bool        // the last ask had no answer (list kept if any)
	fetching chan struct{}
}

// modelMatches reports whether model id matches pattern p: equal, or a
// prefix when p ends in "*".
func modelMatches(p, id string) bool {
	if pre, ok := strings.CutSuffix(p, "*"); ok {
		return strings.HasPrefix(id, pre)
	}
	return p == id
}

// modelAllowed reports whether one of ids passes list (empty = all).
func modelAllowed(list []string, ids ...string) bool {
	if len(list) == 0 {
		return true
	}
	for _, p := range list {
		for _, id := range ids {
			if id != "" && modelMatches(p, id) {
				return true
			}
		}
	}
	return false
}

// modelField is the top-level "model" string of a JSON body and the byte
// span of its value (quotes included), or "" when there is none. Like a
// client, it expects "model" early: a large body is not scanned to its
// end past it.
func modelField(body []byte) (model string, start, end int) {
	t := bytes.TrimLeft(body, " \t\r\n")
	if len(t) == 0 || t[0] != '{' {
		return "", 0, 0
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	if _, err := dec.Token(); err != nil { // {
		return "", 0, 0
	}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return "", 0, 0
		}
		key, _ := tok.(string)
		var raw json.RawMessage
		if dec.Decode(&raw) != nil {
			return "", 0, 0
		}
		if key != "model" {
			continue
		}
		end := int(dec.InputOffset())
		start := end - len(raw)
		if start < 0 || end > len(body) || !bytes.Equal(body[start:end], raw) {
			return "", 0, 0
		}
		if json.Unmarshal(raw, &model) != nil {
			return "", 0, 0
		}
		return model, start, end
	}
	return "", 0, 0
}

// applyModelPolicy checks the request's model against the role's and the
// client key's allow lists and resolves an alias: the body's "model"
// value (bytes start:end) is replaced by the alias's model id, every
// other byte kept, and x.model becomes that id (the log records it). A
// refused model is answered here (403, permission_error); it reports
// whether the request goes on.
func (x *exchange) applyModelPolicy(start, end int) bool {
	ms := &x.s.models
	pol := ms.policy.Load()
	if pol == nil {
		return true
	}
	var role string
	var keyList []string
	if ms.scope != nil {
		role, keyList = ms.scope(x.r)
	}
	roleList := pol.allow[role]
	if role == "" {
		roleList = nil
	}
	listed := len(keyList) > 0 || len(roleList) > 0
	if listed && x.r.Method == http.MethodPost && x.route == batchesRoute {
		return x.checkBatchModels(pol, role, roleList, keyList)
	}
	if len(x.body) == 0 {
		return true
	}
	asked := x.model
	real, alias := pol.aliases[asked]
	if (alias || listed) && modelKeys(x.body) > 1 {
		// The upstream may read another "model" than the first, which
		// the lists and the alias were applied to.
		x.reply(apierr.Reply{Status: http.StatusBadRequest, Type: apierr.InvalidRequest, Retry: apierr.RetryNo,
			Message: `claudeflare: the request body names "model" more than once`})
		return false
	}
	if asked == "" && !(listed && x.r.Method == http.MethodPost && modelRoutes[x.route]) {
		return true
	}
	// A listed key's messages body whose "model" cannot be read (not a
	// string, or past a value encoding/json refuses, such as NaN) is
	// refused as model "": the upstream may read one all the same.
	ids := []string{asked}
	if alias {
		ids = append(ids, real)
	}
	if !x.modelPasses(role, roleList, keyList, asked, ids...) {
		return false
	}
	if alias {
		if !x.rewriteModel(start, end, real) {
			return false
		}
		x.model = real
	}
	return true
}

// rewriteModel puts the rewritten body (bytes start:end replaced by id's
// JSON string) in a pooled buffer of its own, reserved in the body budget
// in place of the one read, which goes back to its pool (nothing else
// holds it yet); false, answered 503, when the budget is full.
func (x *exchange) rewriteModel(start, end int, id string) bool {
	q, _ := json.Marshal(id)
	box := getBuf(len(x.body) - (end - start) + len(q))
	var old int64
	if x.buf != nil {
		old = int64(cap(*x.buf.box))
	}
	grow := int64(cap(*box)) - old
	if !x.s.bodies.reserve(grow) {
		putBuf(box)
		x.bodyBudgetFull()
		return false
	}
	x.held += grow
	*box = append(append(append((*box)[:0], x.body[:start]...), q...), x.body[end:]...)
	x.body = *box
	x.buf.release()
	x.buf = newBodyBuf(box)
	return true
}

// modelRoutes are the routes whose JSON body must name the model.
var modelRoutes = map[string]bool{messagesRoute: true, messagesRoute + "/count_tokens": true}

// modelPasses checks the model asked (ids: it and its alias's id)
// against the role's and the key's lists, refusing it when it fails one.
func (x *exchange) modelPasses(role string, roleList, keyList []string, asked string, ids ...string) bool {
	if !modelAllowed(roleList, ids...) {
		x.refuseModel(asked, fmt.Sprintf("client key role %s ([models.allow] %s)", role, role), roleList)
		return false
	}
	if !modelAllowed(keyList, ids...) {
		x.refuseModel(asked, fmt.Sprintf("client key %q", x.row.Client), keyList)
		return false
	}
	return true
}

// checkBatchModels applies the lists to each request of a message batch
// (requests[].params.model) of a key that has lists. A batch too big to
// hold (streamed upstream unread) cannot be checked and is refused, and
// so is one that cannot be read.
func (x *exchange) checkBatchModels(pol *modelPolicy, role string, roleList, keyList []string) bool {
	if x.upload != nil {
		x.reply(apierr.Reply{Status: http.StatusForbidden, Type: apierr.Permission, Retry: apierr.RetryNo,
			Message: fmt.Sprintf("claudeflare: client key %q may use only some models, so its message batches must fit server.max_body_bytes to be checked", x.row.Client)})
		return false
	}
	// Keys are matched exactly (encoding/json's struct fields match any
	// case: a "REQUESTS" or "Params" the upstream ignores must not stand
	// in for the ones it reads), and a body that cannot be read is refused.
	unread := func() bool {
		x.reply(apierr.Reply{Status: http.StatusBadRequest, Type: apierr.InvalidRequest, Retry: apierr.RetryNo,
			Message: `claudeflare: a message batch must name "requests" once, a list of objects each naming "params" at most once, to have its models checked`})
		return false
	}
	reqs, ok := topValues(x.body, "requests")
	if !ok || len(reqs) > 1 {
		return unread()
	}
	var items []json.RawMessage
	if len(reqs) == 1 && json.Unmarshal(reqs[0], &items) != nil {
		return unread()
	}
	for _, it := range items {
		params, ok := topValues(it, "params")
		if !ok || len(params) > 1 {
			return unread()
		}
		var p json.RawMessage
		if len(params) == 1 {
			p = params[0]
		}
		if modelKeys(p) > 1 {
			x.reply(apierr.Reply{Status: http.StatusBadRequest, Type: apierr.InvalidRequest, Retry: apierr.RetryNo,
				Message: `claudeflare: a batch request's params name "model" more than once`})
			return false
		}
		m, _, _ := modelField(p)
		ids := []string{m}
		if real, ok := pol.aliases[m]; ok {
			ids = append(ids, real)
		}
		if !x.modelPasses(role, roleList, keyList, m, ids...) {
			return false
		}
	}
	return true
}

// modelKeys counts the top-level "model" keys of a JSON object body
// (scanning all of it).
func modelKeys(body []byte) int {
	vals, _ := topValues(body, "model")
	return len(vals)
}

// topValues is the value of each top-level key of a JSON object body
// named exactly key, in order; ok is false when body is not one object
// that reads to its end (the values found up to there are returned).
func topValues(body []byte, key string) (vals []json.RawMessage, ok bool) {
	dec := json.NewDecoder(bytes.NewReader(body))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return nil, false
	}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return vals, false
		}
		var v json.RawMessage
		if dec.Decode(&v) != nil {
			return vals, false
		}
		if k, _ := tok.(string); k == key {
			vals = append(vals, v)
		}
	}
	if _, err := dec.Token(); err != nil { // }
		return vals, false
	}
	_, err := dec.Token()
	return vals, err == io.EOF
}

func (x *exchange) refuseModel(model, who string, list []string) {
	x.reply(apierr.Reply{Status: http.StatusForbidden, Type: apierr.Permission, Retry: apierr.RetryNo,
		Message: fmt.Sprintf("claudeflare: model %q is not allowed for %s; allowed: %s", model, who, strings.Join(list, ", "))})
}

// listModels serves GET /v1/models: the pool's models (cached, asked of
// the accounts at most every modelsTTL) plus the aliases, less what the
// client may not use, in Anthropic's list shape. A relay key's request is
// relayed instead: it lists what the developer's own login offers.
func (s *Server) listModels(w http.ResponseWriter, r *http.Request) {
	if s.relayOf != nil && s.relayOf(r) {
		s.forward(w, r)
		return
	}
	w.Header().Set(apierr.RequestIDHeader, s.ids.Next(s.now()))
	list, err := s.poolModels(r.Context())
	if err != nil && len(list) == 0 {
		apierr.Write(w, apierr.Reply{Status: http.StatusBadGateway, Type: apierr.API, Retry: apierr.RetryYes,
			Message: "claudeflare could not list the pool's models: " + err.Error()})
		return
	}
	pol := s.models.policy.Load()
	if pol == nil {
		pol = &modelPolicy{}
	}
	var role string
	var keyList []string
	if s.models.scope != nil {
		role, keyList = s.models.scope(r)
	}
	byID := make(map[string]ModelInfo, len(list))
	for _, m := range list {
		byID[m.ID] = m
	}
	out := modelList{Data: []ModelInfo{}}
	may := func(ids ...string) bool {
		return (role == "" || modelAllowed(pol.allow[role], ids...)) && modelAllowed(keyList, ids...)
	}
	for _, m := range list {
		if may(m.ID) {
			out.Data = append(out.Data, m)
		}
	}
	for _, a := range slices.Sorted(maps.Keys(pol.aliases)) {
		real := pol.aliases[a]
		if !may(a, real) {
			continue
		}
		m := ModelInfo{Type: "model", ID: a, DisplayName: a + " (" + real + ")", CreatedAt: "1970-01-01T00:00:00Z"}
		if t, ok := byID[real]; ok {
			m.DisplayName, m.CreatedAt = a+" ("+t.DisplayName+")", t.CreatedAt
		}
		out.Data = append(out.Data, m)
	}
	if n := len(out.Data); n > 0 {
		out.FirstID, out.LastID = &out.Data[0].ID, &out.Data[n-1].ID
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(out)
}

// poolModels returns the cached list; a stale one is served while a
// background fetch renews it, and the first call waits for one.
func (s *Server) poolModels(ctx context.Context) ([]ModelInfo, error) {
	ms := &s.models
	ms.mu.Lock()
	now := s.now()
	if ms.list != nil {
		list := ms.list
		if now.After(ms.expires) && ms.fetching == nil {
			ms.fetching = make(chan struct{})
			go s.fetchModels()
		}
		ms.mu.Unlock()
		return list, nil
	}
	if ms.failed && !now.After(ms.expires) {
		ms.mu.Unlock()
		return nil, fmt.Errorf("no account answered (asked again after %s)", ms.expires.Sub(now).Round(time.Second))
	}
	ch := ms.fetching
	if ch == nil {
		ch = make(chan struct{})
		ms.fetching = ch
		go s.fetchModels()
	}
	ms.mu.Unlock()
	select {
	case <-ch:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	ms.mu.Lock()
	defer ms.mu.Unlock()
	if ms.list == nil {
		return nil, fmt.Errorf("no account answered")
	}
	return ms.list, nil
}

// fetchModels asks the accounts and stores the union.
func (s *Server) fetchModels() {
	ctx, cancel := context.WithTimeout(context.Background(), modelsFetchTimeout)
	defer cancel()
	list, answered := s.askModels(ctx)
	ms := &s.models
	ms.mu.Lock()
	defer ms.mu.Unlock()
	ttl := modelsTTL
	if !answered {
		ttl = modelsFailedTTL
	}
	if answered || (ms.list == nil && len(list) > 0) {
		ms.list = list
	}
	ms.expires = s.now().Add(ttl)
	ms.failed = !answered
	close(ms.fetching)
	ms.fetching = nil
}

// askModels is the union of the models of every account that is not
// paused or out of order: an Anthropic account's upstream /v1/models
// with its own credentials, a cloud account's model table. answered is
// false when Anthropic accounts exist and none answered.
func (s *Server) askModels(ctx context.Context) (list []ModelInfo, answered bool) {
	s.pool.mu.Lock()
	accts := make([]*account, 0, len(s.pool.accounts))
	for _, a := range s.pool.accounts {
		if !a.Paused && a.Status == store.StatusOK {
			accts = append(accts, a)
		}
	}
	s.pool.mu.Unlock()
	seen := map[string]ModelInfo{}
	var cloudIDs []string
	anthropic := 0
	for _, a := range accts {
		if cloud.Is(a.Kind) {
			cloudIDs = append(cloudIDs, s.cloudModelIDs(a.Kind)...)
			continue
		}
		anthropic++
		got, err := s.accountModels(ctx, a)
		if err != nil {
			s.log.Debug("listing models", "account", a.Name, "err", err)
			continue
		}
		answered = true
		for _, m := range got {
			if _, ok := seen[m.ID]; !ok && m.ID != "" {
				m.Type = "model"
				seen[m.ID] = m
			}
		}
	}
	for _, id := range cloudIDs {
		if _, ok := seen[id]; !ok {
			seen[id] = ModelInfo{Type: "model", ID: id, DisplayName: id, CreatedAt: "1970-01-01T00:00:00Z"}
		}
	}
	list = slices.AppendSeq(make([]ModelInfo, 0, len(seen)), maps.Values(seen))
	sort.Slice(list, func(i, j int) bool {
		if list[i].CreatedAt != list[j].CreatedAt {
			return list[i].CreatedAt > list[j].CreatedAt // newest first, as Anthropic lists them
		}
		return list[i].ID < list[j].ID
	})
	return list, answered || anthropic == 0
}

// cloudModelIDs are the Anthropic model ids a cloud account of kind
// serves: its model table's (built in, with [cloud] over it).
func (s *Server) cloudModelIDs(kind string) []string {
	m := map[string]string{}
	switch kind {
	case cloud.Bedrock:
		maps.Copy(m, cloud.BuiltinBedrock)
		maps.Copy(m, s.cfg.Cloud.BedrockModels)
	case cloud.Vertex:
		maps.Copy(m, cloud.BuiltinVertex)
		maps.Copy(m, s.cfg.Cloud.VertexModels)
	}
	return slices.Sorted(maps.Keys(m))
}

// accountModels reads a's upstream /v1/models, every page.
func (s *Server) accountModels(ctx context.Context, a *account) ([]ModelInfo, error) {
	secret, err := s.tokens.get(ctx, a, "")
	if err != nil {
		return nil, err
	}
	var out []ModelInfo
	after := ""
	for range modelsPageMax {
		u := strings.TrimRight(s.upstream.String(), "/") + "/v1/models?limit=1000"
		if after != "" {
			u += "&after_id=" + url.QueryEscape(after)
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		if err != nil {
			return nil, err
		}
		req.Header.Set("Anthropic-Version", "2023-06-01")
		setCredentials(req.Header, a.Kind, secret)
		resp, err := s.client.Do(req)
		if err != nil {
			return nil, fmt.Errorf("upstream: %w", err)
		}
		body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
		resp.Body.Close()
		if err != nil {
			return nil, err
		}
		if resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("upstream answered %d", resp.StatusCode)
		}
		var page modelList
		if err := json.Unmarshal(body, &page); err != nil {
			return nil, fmt.Errorf("upstream list: %w", err)
		}
		out = append(out, page.Data...)
		if !page.HasMore || page.LastID == nil || *page.LastID == "" {
			return out, nil
		}
		after = *page.LastID
	}
	return out, nil
}
