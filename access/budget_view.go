package access

import (
	"context"

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
