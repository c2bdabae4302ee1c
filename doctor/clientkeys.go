package doctor

import (
	"context"
	"errors"
	"strconv"

	"github.com/claudeflare/claudeflare/store"
	"github.com/claudeflare/claudeflare/vault"
)

// clientKeys checks that every client key row carries a valid MAC
// (vault.ClientKeyMAC, keyed from the vault's audit key): one that does
// not was added or changed outside claudeflare (the daemon refuses it).
// Each such row is an Error. v is the vault opened with the master key.
func (d *doctor) clientKeys(ctx context.Context, v *vault.Vault, db *store.DB) {
	rows, err := store.ListClientKeys(ctx, db)
	if err != nil {
		d.add("client_keys", Error, "stop the daemon and restore a backup: `claudeflare restore --force FILE`", "%v", err)
		return
	}
	if len(rows) == 0 {
		d.add("client_keys", OK, "", "no client keys: the proxy serves loopback clients without a key")
		return
	}
	key, err := v.RowMACKey(ctx, vault.PurposeClientKeys)
	switch {
	case errors.Is(err, vault.ErrNoAuditKey):
		d.add("client_keys", Warn, "run any claudeflare command that opens the vault (e.g. `claudeflare apikey list`) to add them, and check the keys it names",
			"%s made by an earlier release, not authenticated yet", plural(len(rows), "client key"))
		return
	case err != nil:
		d.add("client_keys", Warn, "run doctor with the master key", "cannot check the client keys' MACs: %v", err)
		return
	}
	bad := 0
	for _, r := range rows {
		if vault.ClientKeyMACValid(key, r) {
			continue
		}
		bad++
		state, hint := "live", "the daemon refuses it; revoke it with `claudeflare apikey revoke "+strconv.Quote(r.Name)+"`, and check who can write the data dir"
		if r.RevokedAt != 0 {
			state, hint = "revoked", "it authenticates nobody; restore vault.db from a backup you trust, and check who can write the data dir"
		}
		d.add("client_key", Error, hint,
			"client key %s (role %s, %s) failed authentication: added or changed outside claudeflare", strconv.Quote(r.Name), strconv.Quote(r.Role), state)
	}
	if bad == 0 {
		d.add("client_keys", OK, "", "%s, each with a valid MAC", plural(len(rows), "client key"))
		return
	}
	d.add("client_keys", Error, "see above", "%d of %s failed authentication", bad, plural(len(rows), "client key"))
}
