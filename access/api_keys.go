package access

import (
	"net/http"
)

// apiKeys answers GET /api/keys: the live client keys with their budgets
// and each budget's use in the current period, as the running guard
// counts them. Any valid key may ask: a key of role api sees only
// itself; viewer and admin keys see every live key (names, roles and
// budgets, never a key or its prefix). Without client keys (a loopback
// proxy) the list is empty.
//
//	{"keys":[{"name":"alice","role":"api","budgets":[{"amount":50,"unit":"usd","period":"month",
//	  "used":12.5,"period_start":"2026-12-01T00:00:00Z","resets_at":"2027-01-01T00:00:00Z","exceeded":false}]}]}
func (g *Guard) apiKeys(w http.ResponseWriter, r *http.Request) {
	all := g.Budgets()
	c, _ := ClientFrom(r.Context())
	keys := all
	if c.Key != "" && !c.Role.Can(PermDashboardView) {
		keys = []KeyBudgets{}
		for _, k := range all {
			if k.Name == c.Key {
				keys = append(keys, k)
			}
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"keys": keys})
}
