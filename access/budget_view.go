package access

import (
	"context"

	"github.com/claudeflare/claudeflare/requestlog"
	"github.com/claudeflare/claudeflare/store"
)

// LiveKeysUnverified returns the live (not revoked) client keys of
// vault.db as ListKeys lists them, but without checking their rows' MACs,
// so it needs no master key: for views of metadata that read no secret,
// such as `stats --by client` showing each key's budgets. Never base a
// decision on it: a row changed outside claudeflare is not detected
// (Tampered is always false; ListKeys, the daemon and doctor catch it).
func LiveKeysUnverified(ctx context.Context, db *store.DB) ([]KeyInfo, error) {
	rows, err := store.ListClientKeys(ctx, db)
	if err != nil {
		return nil, err
	}
	var out []KeyInfo
	for _, r := range rows {
		if k := keyInfo(r); k.RevokedAt.IsZero() {
			out = append(out, k)
		}
	}
	return out, nil
}

// clientGroupLine is a group of GET /api/stats?by=client: the group and
// the key's budgets with their use, as GET /api/keys shows them.
type clientGroupLine struct {
	requestlog.GroupLine
	Budgets []BudgetUse `json:"budgets"`
}

// clientGroups joins each client group with its key's budgets (keys as
// Guard.Budgets returns them); [] for a key without budgets and for a
// client that is no live key.
func clientGroups(groups []requestlog.GroupLine, keys []KeyBudgets) []clientGroupLine {
	byName := make(map[string][]BudgetUse, len(keys))
	for _, k := range keys {
		byName[k.Name] = k.Budgets
	}
	out := make([]clientGroupLine, len(groups))
	for i, l := range groups {
		out[i] = clientGroupLine{GroupLine: l, Budgets: []BudgetUse{}}
		if l.Key == nil {
			continue
		}
		out[i].Budgets = append(out[i].Budgets, byName[*l.Key]...)
	}
	return out
}
