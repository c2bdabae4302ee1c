package vault

// Data key rotation (see the overview in rotate.go): a new data key,
// every account secret re-sealed to it, and retired keys pruned once
// nothing refers to them.

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"filippo.io/age"
	"github.com/jmoiron/sqlx"
	"golang.org/x/crypto/chacha20poly1305"

	"github.com/claudeflare/claudeflare/store"
)

// rotateData makes a new data key and re-seals every account secret to it.
func (v *Vault) rotateData(ctx context.Context, res *RotateResult) error {
	to, err := v.wrapSet(ctx)
	if err != nil {
		return err
	}
	row, err := newDataKeyRow(to, v.now())
	if err != nil {
		return err
	}
	dk, err := dataKeyFromRow(row)
	if err != nil {
		return err
	}
	m := v.master()
	root, err := m.primaryRoot()
	if err != nil {
		return err
	}
	roots, err := m.roots()
	if err != nil {
		return err
	}
	err = store.Tx(ctx, v.db, func(tx *sqlx.Tx) error {
		rec, err := readMasterRecord(ctx, tx)
		if err != nil {
			return err
		}
		if rec.NextKind != nil {
			return errors.New("a master key rotation is in progress")
		}
		if err := verifyMaster(rec, roots); err != nil {
			return err
		}
		cur, err := store.CurrentDataKeys(ctx, tx)
		if err != nil {
			return err
		}
		retired := store.ToMS(v.now())
		for _, r := range cur {
			if err := verifyDataKey(r, roots); err != nil {
				return err
			}
			mac := metaMAC(root, dataKeyParts(r.ID, r.Recipient, r.Wrapped, r.PayloadKey, &retired, r.Bound)...)
			if err := store.RetireDataKey(ctx, tx, r.ID, retired, mac); err != nil {
				return fmt.Errorf("retire data key: %w", err)
			}
		}
		id, err := insertDataKey(ctx, tx, row, root)
		dk.id = id
		return err
	})
	if err != nil {
		return fmt.Errorf("rotate data key: %w", err)
	}
	v.mu.Lock()
	keys := make(map[int64]*dataKey, len(v.keys)+1)
	for id, k := range v.keys {
		keys[id] = k
	}
	keys[dk.id] = dk
	v.keys, v.current = keys, dk.id
	v.mu.Unlock()
	if err := hook(stepDataKey); err != nil {
		return err
	}
	n, left, err := v.resealAll(ctx, true)
	res.Resealed, res.StillRetired = n, left
	if err != nil {
		return err
	}
	return hook(stepResealed)
}

// dataKeyFromRow turns a freshly made data key into its unwrapped form.
func dataKeyFromRow(row dataKeyRow) (*dataKey, error) {
	ids, err := age.ParseIdentities(strings.NewReader(string(row.text)))
	if err != nil || len(ids) != 1 {
		return nil, errors.New("new data key is malformed")
	}
	rcpt, err := parseRecipient(row.Recipient)
	if err != nil {
		return nil, err
	}
	aead, err := newPayloadAEAD(row.pk)
	if err != nil {
		return nil, err
	}
	return &dataKey{identity: ids[0], recipient: rcpt, aead: aead, text: row.text, wrapped: row.Wrapped, bound: true, bindKey: bindKey(row.text)}, nil
}

func newPayloadAEAD(pk []byte) (payloadAEAD, error) {
	a, err := chacha20poly1305.NewX(pk)
	if err != nil {
		return payloadAEAD{}, fmt.Errorf("open payload key: %w", err)
	}
	return payloadAEAD{a}, nil
}

// wrapSet returns the recipients that new data keys are wrapped to: the
// master recipients on record (extra recipients included), or the
// passphrase.
func (v *Vault) wrapSet(ctx context.Context) ([]age.Recipient, error) {
	rec, err := readMasterRecord(ctx, v.db.W)
	if err != nil {
		return nil, err
	}
	if err := v.checkMaster(rec); err != nil {
		return nil, err
	}
	kind := rec.Kind
	var recipients []string
	if rec.Recipients != "" {
		recipients = strings.Split(rec.Recipients, "\n")
	}
	if kind == MasterPassphrase {
		m := v.master()
		if m.kind() != MasterPassphrase {
			return nil, errors.New("the vault is protected by a passphrase; open it with the passphrase to make a new data key")
		}
		return m.wrapTo()
	}
	rs, err := age.ParseRecipients(strings.NewReader(strings.Join(recipients, "\n")))
	if err != nil {
		return nil, errors.New("master record: malformed recipients")
	}
	return rs, nil
}

// resealAll re-seals every account secret that is not under the current
// data key. Passes repeat while a concurrent writer (a daemon that does not
// know the new key yet) keeps adding some; what is left is reported.
func (v *Vault) resealAll(ctx context.Context, hooks bool) (resealed, left int, err error) {
	first := true
	for pass := 0; pass < 5; pass++ {
		cur := v.currentKey().id
		ids, err := store.AccountsNotUnder(ctx, v.db.W, cur)
		if err != nil {
			return resealed, 0, err
		}
		if len(ids) == 0 {
			return resealed, 0, nil
		}
		left = len(ids)
		for _, id := range ids {
			changed, err := v.resealAccount(ctx, id)
			if err != nil {
				return resealed, left, err
			}
			if changed {
				resealed++
				if hooks && first {
					first = false
					if err := hook(stepResealedOne); err != nil {
						return resealed, left, err
					}
				}
			}
		}
	}
	cur := v.currentKey().id
	if left, err = store.CountAccountsNotUnder(ctx, v.db.W, cur); err != nil {
		return resealed, 0, err
	}
	return resealed, left, nil
}

// resealAccount re-seals one account's secret to the current data key:
// the same plaintext bytes, a compare-and-swap on the token version that
// keeps the version, so that a daemon holding it can still swap. It
// retries when the account moved in between, and reports whether it
// wrote.
func (v *Vault) resealAccount(ctx context.Context, accountID int64) (bool, error) {
	for range 50 {
		ss, err := store.GetSecret(ctx, v.db, accountID)
		if errors.Is(err, store.ErrNoAccount) {
			return false, nil // removed meanwhile
		}
		if err != nil {
			return false, fmt.Errorf("read account secret: %w", err)
		}
		cur := v.currentKey()
		if ss.KeyID == cur.id {
			return false, nil
		}
		old, err := v.key(ctx, ss.KeyID)
		if err != nil {
			return false, fmt.Errorf("re-seal account secret: %w", err)
		}
		plain, err := decrypt(ss.Sealed, old.identity)
		if err != nil {
			return false, fmt.Errorf("re-seal account secret: %w", err)
		}
		// The same secret, bound to its account under the new key (one
		// sealed by the previous release is bound now).
		s, err := unbindSecrets(old, accountID, plain)
		if err != nil {
			return false, fmt.Errorf("re-seal account secret: %w", err)
		}
		if plain, err = bindSecrets(cur, accountID, s); err != nil {
			return false, fmt.Errorf("re-seal account secret: %w", err)
		}
		sealed, err := encrypt(plain, cur.recipient)
		if err != nil {
			return false, fmt.Errorf("re-seal account secret: %w", err)
		}
		wrote, err := store.ResealSecret(ctx, v.db, accountID, ss.Version, ss.KeyID, cur.id, sealed)
		if err != nil {
			return false, err
		}
		if wrote {
			return true, nil
		}
		// Tokens refreshed in between: read them again.
	}
	return false, fmt.Errorf("re-seal account %d: it kept changing", accountID)
}

// PruneDataKeys destroys retired data keys that nothing refers to: no
// account secret is sealed under them, no payload in logDB, and they were
// retired more than RetiredKeyGrace before now. It needs no master key,
// so cleanup can run it. The rows are zeroed before they are deleted.
func PruneDataKeys(ctx context.Context, vaultDB, logDB *store.DB, now time.Time) ([]int64, error) {
	used, err := store.PayloadKeyIDs(ctx, logDB)
	if err != nil {
		return nil, fmt.Errorf("read payload keys: %w", err)
	}
	cutoff := store.ToMS(now.Add(-RetiredKeyGrace))
	var deleted []int64
	err = store.Tx(ctx, vaultDB, func(tx *sqlx.Tx) error {
		deleted = nil
		ids, err := store.PrunableDataKeys(ctx, tx, cutoff)
		if err != nil {
			return err
		}
		for _, id := range ids {
			if slices.Contains(used, id) {
				continue
			}
			if err := store.DestroyDataKey(ctx, tx, id); err != nil {
				return err
			}
			deleted = append(deleted, id)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("prune data keys: %w", err)
	}
	return deleted, nil
}
