package vault

// Authenticated rows outside the key metadata.
//
// Some rows of vault.db decide who may use the proxy: the client keys
// (hash, role, revocation). Whoever can write vault.db could otherwise
// insert a key of their own, give a key another role, or make a revoked
// key live again. So each such row carries an HMAC whose key is derived
// (HKDF-SHA256, one purpose string per kind of row) from the vault's
// audit key: random, wrapped to the master key and covered by the master
// record's MAC, so only a holder of the master key has it, and carried
// across `key rotate`, so the rows stay valid when the master key changes.
//
// Rows made by an earlier release have no MAC. They get one in the same
// transaction that gives the vault its audit key, which happens once: the
// first open by a holder of the master key (a vault that has an audit key
// cannot be made to pass for an earlier release's; see isLegacy). The
// rows found then are trusted as found, and named (Options.Notify).
//
// What these MACs do not stop: a row (or the whole file) put back as it
// was earlier (a revoked key made live again with the row and MAC it had
// before), and rows deleted (deleting every client key opens a loopback
// proxy to clients without a key).

import (
	"context"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/jmoiron/sqlx"

	"github.com/claudeflare/claudeflare/store"
)

// PurposeClientKeys names the row key of the client_keys table.
const PurposeClientKeys = "client_keys"

// purposeRowMAC prefixes the HKDF info of every row key.
const purposeRowMAC = "claudeflare row mac v1: "

// ErrNoAuditKey is returned by RowMACKey for a vault that has no audit
// key yet (made by an earlier release and not opened by a holder of the
// master key since): no row of it can carry a valid MAC.
var ErrNoAuditKey = errors.New("the vault has no audit key yet (made by an earlier release; any command that opens the vault with the master key adds it)")

// RowKey derives the HMAC key of the rows of purpose from the vault's
// audit key (Vault.AuditKey).
func RowKey(auditKey []byte, purpose string) []byte {
	k, err := hkdf.Key(sha256.New, auditKey, nil, purposeRowMAC+purpose, 32)
	if err != nil {
		panic(err) // 32 bytes of SHA-256 output never fails
	}
	return k
}

// RowMACKey returns the HMAC key of the rows of purpose (RowKey of the
// audit key). Unlike AuditKey it never makes the audit key: a vault
// without one gives ErrNoAuditKey, so it is safe on a read-only vault.
func (v *Vault) RowMACKey(ctx context.Context, purpose string) ([]byte, error) {
	rec, err := readMasterRecord(ctx, v.db.R)
	if err != nil {
		return nil, err
	}
	if rec.AuditKey == nil && rec.AuditKeyNext == nil {
		return nil, ErrNoAuditKey
	}
	ak, err := v.AuditKey(ctx)
	if err != nil {
		return nil, err
	}
	return RowKey(ak, purpose), nil
}

// ClientKeyMAC is the MAC of a client key row under key (RowKey of the
// audit key for PurposeClientKeys): over its id, name, display prefix,
// hash, role, creation and revocation times, its budgets' exact text
// when it has any, its relay mark when set and its model allowlist's
// exact text when it has one (a row without budgets, not relay and
// without an allowlist keeps the MAC of the releases before them). Its
// last use is not covered.
func ClientKeyMAC(key []byte, k store.ClientKey) []byte {
	h := hmac.New(sha256.New, key)
	var n [8]byte
	parts := [][]byte{
		[]byte("client_key"), []byte(strconv.FormatInt(k.ID, 10)), []byte(k.Name), []byte(k.Prefix), k.Hash,
		[]byte(k.Role), []byte(strconv.FormatInt(k.CreatedAt, 10)), []byte(strconv.FormatInt(k.RevokedAt, 10)),
	}
	if k.Budgets != nil {
		// Length-prefixed like the rest: the marker cannot be confused
		// with another column's text.
		parts = append(parts, []byte("budgets"), []byte(*k.Budgets))
	}
	if k.Relay {
		parts = append(parts, []byte("relay"))
	}
	if k.Models != nil {
		parts = append(parts, []byte("models"), []byte(*k.Models))
	}
	for _, p := range parts {
		binary.BigEndian.PutUint64(n[:], uint64(len(p)))
		h.Write(n[:])
		h.Write(p)
	}
	return h.Sum(nil)
}

// ClientKeyMACValid reports whether k carries a valid MAC under key.
func ClientKeyMACValid(key []byte, k store.ClientKey) bool {
	return len(key) > 0 && k.MAC != nil && hmac.Equal(k.MAC, ClientKeyMAC(key, k))
}

// sealLegacyClientKeys gives every client key row without a MAC (made by
// an earlier release) one under the audit key auditKey, inside tx (the
// transaction that stores the audit key), and returns them as
// "name (role)" for the user to check.
func sealLegacyClientKeys(ctx context.Context, tx *sqlx.Tx, auditKey []byte) ([]string, error) {
	rows, err := store.ListClientKeysTx(ctx, tx)
	if err != nil {
		return nil, err
	}
	key := RowKey(auditKey, PurposeClientKeys)
	var sealed []string
	for _, r := range rows {
		if r.MAC != nil {
			continue // not made by us: it stays unauthenticated
		}
		if err := store.SetClientKeyMAC(ctx, tx, r.ID, ClientKeyMAC(key, r)); err != nil {
			return nil, err
		}
		s := fmt.Sprintf("%q (%s)", r.Name, strconv.Quote(r.Role))
		if r.RevokedAt != 0 {
			s = fmt.Sprintf("%q (%s, revoked)", r.Name, strconv.Quote(r.Role))
		}
		sealed = append(sealed, s)
	}
	return sealed, nil
}

// notifyClientKeysSealed says which client keys of an earlier release
// were just authenticated.
func (v *Vault) notifyClientKeysSealed(sealed []string) {
	if len(sealed) == 0 {
		return
	}
	msg := fmt.Sprintf("%d client %s made by an earlier release %s now authenticated with the vault's key: %s\n"+
		"If one is not yours, someone who could write vault.db added it: claudeflare apikey revoke NAME",
		len(sealed), map[bool]string{true: "key", false: "keys"}[len(sealed) == 1],
		map[bool]string{true: "is", false: "are"}[len(sealed) == 1], strings.Join(sealed, ", "))
	if v.notify != nil {
		v.notify(msg)
		return
	}
	v.log.Warn("client keys made by an earlier release are now authenticated with the vault's key", "client_keys", strings.Join(sealed, ", "))
}
