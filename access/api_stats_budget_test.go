package access_test

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/claudeflare/claudeflare/access"
	"github.com/claudeflare/claudeflare/store"
)

// GET /api/stats?by=client gives each client group the key's budgets and
// their use in the current period, as GET /api/keys does; [] for a key
// without budgets and for a client that is no key; other groupings have
// no budgets.
func TestAPIStatsByClientShowsBudgets(t *testing.T) {
	h := newHarness(t, nil)
	h.budgetKey("dev", "1000tokens/day", "5usd/month")
	h.key("plain", access.RoleAPI)
	viewer := h.key("grafana", access.RoleViewer)
	usd, cheap := 1.25, 0.1
	rows := []store.Request{served("dev", h.clk.Now(), 200, 50, &usd), served("plain", h.clk.Now(), 10, 0, &cheap), served("stranger", h.clk.Now(), 1, 0, nil)}
	if err := store.InsertRequests(context.Background(), h.ldb, rows, nil); err != nil {
		t.Fatal(err)
	}
	for _, r := range rows {
		h.g.RecordUsage(r)
	}

	r := h.do("GET", "/api/stats?by=client", "x-api-key", viewer)
	h.expect(r, http.StatusOK, "")
	var st struct {
		Groups []struct {
			Key     *string             `json:"key"`
			Budgets *[]access.BudgetUse `json:"budgets"`
		} `json:"groups"`
		Total map[string]any `json:"total"`
	}
	if err := json.Unmarshal([]byte(r.body), &st); err != nil {
		t.Fatal(err)
	}
	got := map[string][]access.BudgetUse{}
	for _, g := range st.Groups {
		if g.Key == nil || g.Budgets == nil {
			t.Fatalf("group without key or budgets: %s", r.body)
		}
		got[*g.Key] = *g.Budgets
	}
	b := got["dev"]
	if len(got) != 3 || len(b) != 2 || b[0].Unit != "tokens" || b[0].Used != 250 || b[0].Exceeded ||
		!b[0].ResetsAt.Equal(time.Date(2026, 3, 2, 0, 0, 0, 0, time.UTC)) || b[1].Unit != "usd" || b[1].Used != 1.25 ||
		len(got["plain"]) != 0 || len(got["stranger"]) != 0 {
		t.Fatalf("by client: %s", r.body)
	}
	if _, ok := st.Total["budgets"]; ok {
		t.Errorf("the total has budgets: %s", r.body)
	}
	r = h.do("GET", "/api/stats?by=model", "x-api-key", viewer)
	h.expect(r, http.StatusOK, "")
	var byModel struct{ Groups []map[string]any }
	if err := json.Unmarshal([]byte(r.body), &byModel); err != nil || len(byModel.Groups) == 0 || byModel.Groups[0]["budgets"] != nil {
		t.Errorf("by model: %s", r.body)
	}
}
