package vault

// Data keys: made, wrapped to the master key, loaded and unwrapped, and
// kept in step with the keys other processes add (a rotation, an upgrade).

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"time"

	"filippo.io/age"
	"github.com/jmoiron/sqlx"
	"golang.org/x/crypto/chacha20poly1305"

	"github.com/claudeflare/claudeflare/store"
)

type dataKeyRow struct {
	Recipient  string `db:"recipient"`
	Wrapped    []byte `db:"wrapped"`
	PayloadKey []byte `db:"payload_key"`
	CreatedAt  int64  `db:"created_at"`
	text       []byte // the data identity, never stored in the clear
	pk         []byte // the payload key, never stored in the clear
}

// newDataKeyRow makes a data identity wrapped to the master recipients
// to and a payload key sealed to the data recipient. The data identity is
// post-quantum when the master is.
func newDataKeyRow(to []age.Recipient, now time.Time) (dataKeyRow, error) {
	pq := false
	for _, r := range to {
		if _, ok := r.(*age.HybridRecipient); ok {
			pq = true
		}
	}
	text, recipient, err := newIdentityText(pq)
	if err != nil {
		return dataKeyRow{}, err
	}
	wrapped, err := encrypt([]byte(text), to...)
	if err != nil {
		return dataKeyRow{}, fmt.Errorf("wrap data key: %w", err)
	}
	rcpt, err := parseRecipient(recipient)
	if err != nil {
		return dataKeyRow{}, err
	}
	pk := make([]byte, chacha20poly1305.KeySize)
	if _, err := rand.Read(pk); err != nil {
		return dataKeyRow{}, err
	}
	sealedPK, err := encrypt(pk, rcpt)
	if err != nil {
		return dataKeyRow{}, fmt.Errorf("seal payload key: %w", err)
	}
	return dataKeyRow{Recipient: recipient, Wrapped: wrapped, PayloadKey: sealedPK, CreatedAt: store.ToMS(now), text: []byte(text), pk: pk}, nil
}

// insertDataKey stores a new current data key, bound to rows, with its
// MAC under root.
func insertDataKey(ctx context.Context, tx *sqlx.Tx, dk dataKeyRow, root []byte) (int64, error) {
	id, err := store.InsertDataKey(ctx, tx, dk.Recipient, dk.Wrapped, dk.PayloadKey, dk.CreatedAt)
	if err != nil {
		return 0, fmt.Errorf("write data key: %w", err)
	}
	mac := metaMAC(root, dataKeyParts(id, dk.Recipient, dk.Wrapped, dk.PayloadKey, nil, true)...)
	if err := store.SetDataKeyMAC(ctx, tx, id, mac); err != nil {
		return 0, fmt.Errorf("write data key: %w", err)
	}
	return id, nil
}

// dataKeyRecord is a data_keys row as read back.
type dataKeyRecord = store.DataKey

// openDataKey unwraps a data key with any of ids: from its wrap to the
// master, or during a master rotation from its wrap to the incoming one.
func openDataKey(r dataKeyRecord, ids []age.Identity) (*dataKey, error) {
	wrapped := r.Wrapped
	plain, err := decrypt(r.Wrapped, ids...)
	if errors.Is(err, ErrWrongKey) && r.WrappedNext != nil {
		wrapped = r.WrappedNext
		plain, err = decrypt(r.WrappedNext, ids...)
	}
	if err != nil {
		return nil, err
	}
	parsed, err := age.ParseIdentities(bytes.NewReader(plain))
	if err != nil || len(parsed) != 1 {
		return nil, errors.New("data key is malformed")
	}
	rcpt, err := parseRecipient(r.Recipient)
	if err != nil {
		return nil, err
	}
	pk, err := decrypt(r.PayloadKey, parsed[0])
	if err != nil {
		return nil, fmt.Errorf("open payload key: %w", err)
	}
	aead, err := newPayloadAEAD(pk)
	if err != nil {
		return nil, err
	}
	return &dataKey{id: r.ID, identity: parsed[0], recipient: rcpt, aead: aead, text: plain, wrapped: wrapped, bound: r.Bound, bindKey: bindKey(plain)}, nil
}

// loadKeys unwraps every data key with the master key.
func (v *Vault) loadKeys(ctx context.Context) error {
	rows, err := store.ListDataKeys(ctx, v.db.W)
	if err != nil {
		return err
	}
	m := v.master()
	keys := map[int64]*dataKey{}
	var current int64
	for _, r := range rows {
		dk, err := openDataKey(r, m.identities)
		if err != nil {
			return err
		}
		keys[r.ID] = dk
		if r.Retired == nil {
			current = r.ID
		}
	}
	if current == 0 {
		return errors.New("vault has no current data key")
	}
	auth, err := v.authenticate(ctx, m, rows)
	if err != nil {
		return err
	}
	v.mu.Lock()
	v.keys, v.current = keys, current
	v.legacy, v.breakGlass = auth == authLegacy, auth == authBreakGlass
	v.mu.Unlock()
	return nil
}

// currentKey returns the data key that new secrets are sealed with.
func (v *Vault) currentKey() *dataKey {
	v.mu.RLock()
	defer v.mu.RUnlock()
	return v.keys[v.current]
}

// maybeSync starts a background syncKeys when the last check is older
// than checkEvery. It never waits.
func (v *Vault) maybeSync() {
	if time.Now().UnixNano()-v.checked.Load() < int64(v.checkEvery) {
		return
	}
	if !v.syncing.CompareAndSwap(false, true) {
		return
	}
	go func() {
		defer v.syncing.Store(false)
		if _, err := v.syncKeys(context.Background()); err != nil {
			v.log.Warn("check for a new data key", "err", err)
		}
	}()
}

// syncKeys brings the vault's view of its data keys up to date with the
// database: it learns which key is current and unwraps keys it has not
// seen (made by `key rotate --data` in another process). It returns the
// current key id in the database. When the current key cannot be
// unwrapped, the vault keeps sealing with the newest key it holds: nothing
// is lost, and the next rotation re-seals what was written meanwhile.
func (v *Vault) syncKeys(ctx context.Context) (int64, error) {
	v.syncMu.Lock()
	defer v.syncMu.Unlock()
	v.checked.Store(time.Now().UnixNano())
	rows, err := store.DataKeyStates(ctx, v.db.R)
	if err != nil {
		return 0, err
	}
	var dbCurrent int64
	var unknown []int64
	v.mu.RLock()
	for _, r := range rows {
		if r.Current {
			dbCurrent = r.ID
		}
		if v.keys[r.ID] == nil {
			unknown = append(unknown, r.ID)
		}
	}
	v.mu.RUnlock()
	if len(unknown) > 0 {
		err = v.loadUnknownKeys(ctx, unknown)
	}
	v.mu.Lock()
	if dbCurrent != 0 && v.keys[dbCurrent] != nil {
		v.current = dbCurrent
	}
	v.mu.Unlock()
	return dbCurrent, err
}

// loadUnknownKeys unwraps the data keys ids. When the master key in memory
// does not open them and it came from an identity file, the file is read
// again: a master rotation may have replaced it. Runs under syncMu.
func (v *Vault) loadUnknownKeys(ctx context.Context, ids []int64) error {
	tag := fmt.Sprint(ids)
	if tag == v.failIDs && time.Since(v.failAt) < keyRetryAfter {
		return nil // reported when it failed; try again later
	}
	rows, err := store.DataKeysByID(ctx, v.db.R, ids)
	if err != nil {
		return err
	}
	m := v.master()
	reloaded := false
	var found []*dataKey
	var failed error
	for _, r := range rows {
		dk, err := v.openNewDataKey(r, m)
		if errors.Is(err, ErrWrongKey) && !reloaded && m.path != "" {
			reloaded = true
			if m2, lerr := v.ks.load(false, false); lerr == nil {
				if dk2, err2 := v.openNewDataKey(r, m2); err2 == nil {
					m, dk, err = m2, dk2, nil
					v.mu.Lock()
					v.m = m2
					v.mu.Unlock()
				}
			}
		}
		if err != nil {
			if failed == nil {
				failed = fmt.Errorf("open data key %d: %w (hint: restart with the current master key)", r.ID, err)
			}
			continue
		}
		found = append(found, dk)
	}
	if failed != nil {
		v.failIDs, v.failAt = tag, time.Now()
	} else {
		v.failIDs = ""
	}
	v.mu.Lock()
	keys := make(map[int64]*dataKey, len(v.keys)+len(found))
	for id, dk := range v.keys {
		keys[id] = dk
	}
	for _, dk := range found {
		keys[dk.id] = dk
	}
	v.keys = keys
	v.mu.Unlock()
	return failed
}

// openNewDataKey opens a data key that appeared after Open, checking its
// MAC with m: a key inserted by someone without the master key is refused.
func (v *Vault) openNewDataKey(r dataKeyRecord, m *master) (*dataKey, error) {
	dk, err := openDataKey(r, m.identities)
	if err != nil {
		return nil, err
	}
	v.mu.RLock()
	legacy, glass := v.legacy, v.breakGlass
	v.mu.RUnlock()
	if legacy && r.MAC == nil && r.MACNext == nil && !r.Bound || glass {
		return dk, nil
	}
	roots, err := m.roots()
	if err != nil {
		return nil, err
	}
	if err := verifyDataKey(r, roots); err != nil {
		return nil, err
	}
	return dk, nil
}

// key returns the data key id, looking for it in the database if it is
// not known yet.
func (v *Vault) key(ctx context.Context, id int64) (*dataKey, error) {
	v.mu.RLock()
	dk := v.keys[id]
	v.mu.RUnlock()
	if dk != nil {
		return dk, nil
	}
	if _, err := v.syncKeys(ctx); err != nil {
		return nil, err
	}
	v.mu.RLock()
	dk = v.keys[id]
	v.mu.RUnlock()
	if dk == nil {
		return nil, fmt.Errorf("data key %d is unknown", id)
	}
	return dk, nil
}
