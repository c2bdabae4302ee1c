package proxy

import (
	"math"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/claudeflare/claudeflare/config"
	"github.com/claudeflare/claudeflare/internal/fakeapi"
	"github.com/claudeflare/claudeflare/store"
)

// seen collects the rows OnRecord is called with.
type seen struct {
	mu   sync.Mutex
	rows []store.Request
}

func (s *seen) add(r store.Request) {
	s.mu.Lock()
	s.rows = append(s.rows, r)
	s.mu.Unlock()
}

func (s *seen) last(t *testing.T) store.Request {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.rows) == 0 {
		t.Fatal("OnRecord saw no row")
	}
	return s.rows[len(s.rows)-1]
}

func withOnRecord(s *seen) harnessOpt {
	return func(h *harness) { h.beforeServe = func(srv *Server) { srv.OnRecord(s.add) } }
}

// A recorded row of a priced model has its cost_usd, at the 5m and 1h
// cache write prices of the split, in the log and in what OnRecord sees.
func TestRecordedRowHasCost(t *testing.T) {
	var got seen
	h := newHarness(t, withOnRecord(&got))
	h.addAPIKey("k", 1)
	h.reload()
	h.api.SetUsage(fakeapi.Usage{InputTokens: 1000, OutputTokens: 2000, CacheReadInputTokens: 10000,
		CacheCreationInputTokens: 3000, CacheCreation: &fakeapi.CacheCreation{Ephemeral5mInputTokens: 1000, Ephemeral1hInputTokens: 2000}})
	// claude-sonnet-4-5: $3 in, $15 out, $0.30 reads, $3.75 5m writes, $6 1h writes.
	want := (1000*3 + 2000*15 + 10000*0.30 + 1000*3.75 + 2000*6.0) / 1e6
	for _, body := range []string{msgBody, streamBody} {
		if r := h.post(body); r.status != http.StatusOK {
			t.Fatalf("status %d: %s", r.status, r.body)
		}
		row := h.lastRow()
		if row.CostUSD == nil || math.Abs(*row.CostUSD-want) > 1e-12 {
			t.Fatalf("logged cost_usd = %v, want %v (row %+v)", ptr(row.CostUSD), want, row)
		}
		if c := got.last(t).CostUSD; c == nil || *c != *row.CostUSD {
			t.Errorf("OnRecord saw cost_usd %v, the log has %v", ptr(c), *row.CostUSD)
		}
	}

	// Without the split, every cache write is priced as a 5m write.
	h.api.SetUsage(fakeapi.Usage{InputTokens: 10, OutputTokens: 20, CacheCreationInputTokens: 3000})
	h.post(msgBody)
	if row, want := h.lastRow(), (10*3+20*15+3000*3.75)/1e6; row.CostUSD == nil || math.Abs(*row.CostUSD-want) > 1e-12 {
		t.Errorf("unsplit writes: cost_usd = %v, want %v", ptr(row.CostUSD), want)
	}
}

// A model without a price: cost_usd is NULL and the daemon warns once,
// however many of its requests come.
func TestUnpricedModelWarnsOnce(t *testing.T) {
	var got seen
	h := newHarness(t, withOnRecord(&got))
	h.addAPIKey("k", 1)
	h.reload()
	body := strings.Replace(msgBody, "claude-sonnet-4-5", "claude-unknown-9", 1)
	for i := 0; i < 3; i++ {
		if r := h.post(body); r.status != http.StatusOK {
			t.Fatalf("status %d: %s", r.status, r.body)
		}
	}
	for _, row := range h.rows() {
		if row.Model != "claude-unknown-9" || row.CostUSD != nil {
			t.Errorf("row %s: model %q cost_usd %v, want NULL", row.ID, row.Model, ptr(row.CostUSD))
		}
	}
	if c := got.last(t).CostUSD; c != nil {
		t.Errorf("OnRecord saw cost_usd %v", *c)
	}
	logs := h.logs.String()
	if n := strings.Count(logs, "model has no price"); n != 1 || !strings.Contains(logs, "model=claude-unknown-9") {
		t.Errorf("%d warnings, want one naming the model:\n%s", n, logs)
	}
	// A priced model still costs, and warns nothing.
	h.post(msgBody)
	if row := h.lastRow(); row.CostUSD == nil || *row.CostUSD <= 0 {
		t.Errorf("sonnet after an unknown model: cost_usd %v", ptr(row.CostUSD))
	}
	if n := strings.Count(h.logs.String(), "model has no price"); n != 1 {
		t.Errorf("%d warnings after a priced model", n)
	}
	// A model that is not a model id (here a credential) is never logged:
	// one warning stands for all of them.
	for _, m := range []string{"sk-ant-api03-COSTLEAK0123456789abcdefghij", "two words"} {
		h.post(strings.Replace(msgBody, "claude-sonnet-4-5", m, 1))
	}
	logs = h.logs.String()
	if strings.Contains(logs, "COSTLEAK") || strings.Count(logs, "model has no price") != 2 || !strings.Contains(logs, `model="(not a model id)"`) {
		t.Errorf("junk models in the warnings:\n%s", logs)
	}
}

// A [pricing] change reaches the running proxy with SetLive (SIGHUP):
// the next row is priced at the new price, and a model priced by the
// config no longer warns.
func TestPricingIsLive(t *testing.T) {
	h := newHarness(t)
	h.addAPIKey("k", 1)
	h.reload()
	h.api.SetUsage(fakeapi.Usage{InputTokens: 1_000_000})
	body := strings.Replace(msgBody, "claude-sonnet-4-5", "my-model-20260101", 1)
	h.post(body)
	if row := h.lastRow(); row.CostUSD != nil {
		t.Fatalf("unpriced model cost %v", *row.CostUSD)
	}
	cfg := *h.cfg
	one, zero := 1.5, 0.0
	cfg.Pricing = config.Pricing{"my-model": {Input: &one, Output: &zero, CacheWrite5m: &zero, CacheWrite1h: &zero, CacheRead: &zero}}
	h.srv.SetLive(&cfg)
	h.post(body)
	if row := h.lastRow(); row.CostUSD == nil || *row.CostUSD != 1.5 {
		t.Errorf("after SetLive: cost_usd %v, want 1.5", ptr(row.CostUSD))
	}
}

func ptr(f *float64) any {
	if f == nil {
		return nil
	}
	return *f
}
