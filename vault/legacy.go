package vault

// Upgrading a vault made by an earlier release: its metadata gets its
// MACs, its secrets are bound to their rows, and a new data key replaces
// the ones made while nothing authenticated them.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/jmoiron/sqlx"

	"github.com/claudeflare/claudeflare/store"
)

// isLegacy reports whether the vault predates the MACs: no row carries
// one, and there is no audit key (which only this release makes: a vault
// that has one cannot have its MACs stripped to pass for an older one).
func isLegacy(rec masterRecord, rows []dataKeyRecord) bool {
	if rec.MAC != nil || rec.NextMAC != nil || rec.AuditKey != nil || rec.AuditKeyNext != nil {
		return false
	}
	for _, r := range rows {
		if r.MAC != nil || r.MACNext != nil || r.Bound {
			return false
		}
	}
	return true
}

// sealLegacy adds the MACs to a vault made before they existed, with the
// master key that has just opened every data key, and says so. Only the
// master's own recipients are sealed into the master record: any other (a
// break-glass key added with key rotate --add-recipient, or a stranger's)
// is dropped from it and named, to be given again to key rotate if it is
// the user's. Nothing is sealed by a key that is not the master's (a
// break-glass key, listed after it), nor in the middle of a rotation made
// by the previous release (sealed once it is finished).
func (v *Vault) sealLegacy(ctx context.Context) (sealed bool, kept, dropped []string, err error) {
	m := v.master()
	root, err := m.primaryRoot()
	if err != nil {
		return false, nil, nil, err
	}
	err = store.Tx(ctx, v.db, func(tx *sqlx.Tx) error {
		sealed, kept, dropped = false, nil, nil
		rec, err := readMasterRecord(ctx, tx)
		if err != nil {
			return err
		}
		rows, err := store.ListDataKeys(ctx, tx)
		if err != nil {
			return err
		}
		if !isLegacy(rec, rows) || rec.NextKind != nil || rec.Kind != m.kind() {
			return nil // sealed meanwhile, a rotation to finish first, or not the master's kind
		}
		if m.kind() == MasterIdentity {
			mine := map[string]bool{}
			for _, r := range m.recipientStrings() {
				mine[r] = true
			}
			for i, r := range strings.Split(rec.Recipients, "\n") {
				switch {
				case mine[r]:
					kept = append(kept, r)
				case i == 0:
					return nil // the master is someone else: this is a break-glass key
				default:
					dropped = append(dropped, r)
				}
			}
			if len(kept) == 0 {
				return nil
			}
		}
		v.mu.RLock()
		defer v.mu.RUnlock()
		// Seal only the data keys this master key has opened: the same
		// wrap, or (after a rotation finished meanwhile) one that opens
		// to the same data key.
		for _, r := range rows {
			dk := v.keys[r.ID]
			same := false
			if dk != nil {
				rs, ok := dk.recipient.(fmt.Stringer)
				same = ok && r.Recipient == rs.String()
			}
			if same && !bytes.Equal(dk.wrapped, r.Wrapped) {
				plain, err := decrypt(r.Wrapped, m.identities...)
				same = err == nil && bytes.Equal(plain, dk.text)
			}
			if !same {
				return errors.New("the data keys changed while the vault was opened; open it again")
			}
		}
		// Every account secret is bound to its row now, under the key it
		// is sealed with; from here on every data key is a bound one.
		if err := v.bindLegacySecrets(ctx, tx); err != nil {
			return err
		}
		for _, r := range rows {
			mac := metaMAC(root, dataKeyParts(r.ID, r.Recipient, r.Wrapped, r.PayloadKey, r.Retired, true)...)
			if err := store.SealDataKey(ctx, tx, r.ID, mac); err != nil {
				return fmt.Errorf("seal data key: %w", err)
			}
		}
		recipients := strings.Join(kept, "\n")
		mac := metaMAC(root, masterParts(rec.Kind, recipients, rec.AuditKey)...)
		if err := store.SealMaster(ctx, tx, recipients, mac); err != nil {
			return fmt.Errorf("seal master record: %w", err)
		}
		sealed = true
		return nil
	})
	if err != nil {
		return false, nil, nil, fmt.Errorf("seal vault metadata: %w", err)
	}
	if !sealed {
		return false, nil, nil, nil
	}
	v.mu.Lock()
	keys := make(map[int64]*dataKey, len(v.keys))
	for id, dk := range v.keys {
		c := *dk
		c.bound = true
		keys[id] = &c
	}
	v.keys = keys
	v.mu.Unlock()
	return true, kept, dropped, nil
}

// upgrade brings a vault made by an earlier release up to date, once, by a
// holder of the master key: sealLegacy adds the MACs (and binds the
// secrets); then, unless newKey is false, a new data key is made and every
// secret re-sealed to it, since a data key someone else added to the old,
// unauthenticated vault would otherwise be sealed as if it were ours. It
// says what it did, naming the recipients it sealed and those it dropped.
// locked says the caller holds the rotation lock.
func (v *Vault) upgrade(ctx context.Context, locked, newKey bool) error {
	sealed, kept, dropped, err := v.sealLegacy(ctx)
	if err != nil {
		return err
	}
	if !sealed {
		// Another process may have sealed it meanwhile: check its MACs.
		rows, err := store.ListDataKeys(ctx, v.db.W)
		if err != nil {
			return err
		}
		auth, err := v.authenticate(ctx, v.master(), rows)
		if err != nil {
			return err
		}
		v.mu.Lock()
		v.legacy, v.breakGlass = auth == authLegacy, auth == authBreakGlass
		v.mu.Unlock()
		return nil
	}
	v.mu.Lock()
	v.legacy = false
	v.mu.Unlock()
	keyNote := ""
	if newKey {
		unlock := func() {}
		if !locked {
			unlock, err = lockRotation(filepath.Dir(v.db.Path))
		}
		if err == nil {
			var res RotateResult
			err = v.rotateData(ctx, &res)
			unlock()
			if err == nil {
				keyNote = fmt.Sprintf("A new data key was made and %d account secrets re-sealed to it.", res.Resealed)
			}
		}
		if err != nil {
			keyNote = fmt.Sprintf("A new data key could not be made now (%v): run claudeflare key rotate --data.", err)
		}
	}
	rs := "none (passphrase)"
	if len(kept) > 0 {
		rs = strings.Join(kept, ", ")
	}
	msg := fmt.Sprintf("the vault's metadata (made by an earlier release) is now authenticated with the master key.\n"+
		"Master recipients sealed: %s", rs)
	if len(dropped) > 0 {
		msg += fmt.Sprintf("\nDropped from the master recipients, as they are not this master key: %s\n"+
			"New data keys and backups are no longer encrypted to them. If one is yours (a break-glass key), give it again: "+
			"claudeflare key rotate --add-recipient RECIPIENT; if not, someone who could write vault.db added it: run claudeflare key rotate --data.",
			strings.Join(dropped, ", "))
	}
	if keyNote != "" {
		msg += "\n" + keyNote
	}
	if v.notify != nil {
		v.notify(msg)
	} else {
		v.log.Warn("vault metadata from an earlier release is now authenticated with the master key",
			"recipients_sealed", rs, "recipients_dropped", strings.Join(dropped, ", "), "data_key", keyNote)
	}
	return nil
}

// bindLegacySecrets re-seals, in tx, every account secret made by the
// previous release (no account id inside) bound to its row, under the data
// key it is sealed with. A secret that does not open is left as it is (it
// fails when used, as it did). Runs under v.mu (read).
func (v *Vault) bindLegacySecrets(ctx context.Context, tx *sqlx.Tx) error {
	rows, err := store.ListAccountSecrets(ctx, tx)
	if err != nil {
		return err
	}
	for _, r := range rows {
		dk := v.keys[r.KeyID]
		if dk == nil {
			continue
		}
		plain, err := decrypt(r.Sealed, dk.identity)
		if err != nil {
			v.log.Warn("an account secret does not open; left as it is", "account_id", r.ID, "err", err)
			continue
		}
		legacy := *dk
		legacy.bound = false
		s, err := unbindSecrets(&legacy, r.ID, plain)
		if err != nil {
			v.log.Warn("an account secret is not this account's; left as it is", "account_id", r.ID, "err", err)
			continue
		}
		if plain, err = bindSecrets(dk, r.ID, s); err != nil {
			return err
		}
		sealed, err := encrypt(plain, dk.recipient)
		if err != nil {
			return fmt.Errorf("bind account secret: %w", err)
		}
		if err := store.SetAccountSecret(ctx, tx, r.ID, sealed); err != nil {
			return fmt.Errorf("bind account secret: %w", err)
		}
	}
	return nil
}
