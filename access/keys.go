package access

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/claudeflare/claudeflare/audit"
	"github.com/claudeflare/claudeflare/store"
	"github.com/claudeflare/claudeflare/vault"
)

// KeyPrefix starts every client API key, so that a leaked one is
// recognisable (and secret scanners can match it).
const KeyPrefix = "cf_"

// keyRandomBytes is the entropy of a key: 256 bits.
const keyRandomBytes = 32

// keyLen is the length of a whole key: the prefix and 43 base64url
// characters.
var keyLen = len(KeyPrefix) + base64.RawURLEncoding.EncodedLen(keyRandomBytes)

// displayPrefixLen is how much of a key is stored for display: the prefix
// and 8 characters (48 bits), enough to tell keys apart, far too little
// to guess the rest.
const displayPrefixLen = len(KeyPrefix) + 8

// maxCredentialLen bounds a presented credential; longer ones are refused
// unhashed.
const maxCredentialLen = 512

// ErrInvalidName is returned for a client key name that is not allowed.
var ErrInvalidName = errors.New("invalid client key name")

// KeyInfo is a client key as listed: never the key itself.
type KeyInfo struct {
	Name       string
	Prefix     string // the first characters, for display
	Role       Role
	CreatedAt  time.Time
	LastUsedAt time.Time // zero when never used
	RevokedAt  time.Time // zero while live
	// Tampered: the row does not carry a valid MAC (ClientKeyMAC): it was
	// added or changed outside claudeflare, and the daemon refuses it.
	Tampered bool
	// Budgets are the key's budgets (none when nil).
	Budgets []Budget
	// Relay: the key's requests go upstream with the client's own
	// credentials, never a pool account's (keysettings.go).
	Relay bool
	// Models is the key's model allowlist; nil = any model.
	Models []string
}

// ActionClientKeyUpdated is the audit action of a client key's settings
// changed (its budgets: `apikey update`).
const ActionClientKeyUpdated = "client_key.updated"

// rowKey is the HMAC key of client key rows, derived from the vault's
// audit key (vault.RowKey): whoever can make audit rows can make them.
func rowKey(auditKey []byte) []byte { return vault.RowKey(auditKey, vault.PurposeClientKeys) }

// authenticRow reports whether a client key row carries a valid MAC under
// the row key derived from auditKey.
func authenticRow(auditKey []byte, r store.ClientKey) bool {
	return vault.ClientKeyMACValid(rowKey(auditKey), r)
}

// NewKey returns a fresh random client key: KeyPrefix and 32 random bytes
// in base64url.
func NewKey() (string, error) {
	var b [keyRandomBytes]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("generate client key: %w", err)
	}
	return KeyPrefix + base64.RawURLEncoding.EncodeToString(b[:]), nil
}

// HashKey is what is stored of a key: its SHA-256. A key has 256 bits of
// entropy, so a fast unsalted hash is enough, and it is independent of
// the vault's keys (rotating the master key leaves client keys valid).
func HashKey(key string) [32]byte { return sha256.Sum256([]byte(key)) }

// DisplayPrefix is the part of a key kept for display.
func DisplayPrefix(key string) string {
	if len(key) > displayPrefixLen {
		return key[:displayPrefixLen]
	}
	return key
}

// ValidateKeyName checks a client key name: 1 to 64 letters, digits, '.',
// '_', '-' or '@', not starting with '-' and not only dots (".", "..").
// Control characters and spaces are refused with every other character.
func ValidateKeyName(name string) error {
	if name == "" || len(name) > 64 {
		return fmt.Errorf("%w %q: use 1 to 64 characters", ErrInvalidName, name)
	}
	for _, r := range name {
		ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("._-@", r)
		if !ok {
			return fmt.Errorf("%w %q: use letters, digits, '.', '_', '-' or '@'", ErrInvalidName, name)
		}
	}
	if strings.HasPrefix(name, "-") {
		return fmt.Errorf("%w %q: must not start with '-'", ErrInvalidName, name)
	}
	if strings.Trim(name, ".") == "" {
		return fmt.Errorf("%w %q: must not be only dots", ErrInvalidName, name)
	}
	return nil
}

// CreateKey makes a new client key with the given name and role, stores
// its hash and records it in the audit log, in one transaction. The key
// is returned once and never stored.
func CreateKey(ctx context.Context, db *store.DB, auditKey []byte, name string, role Role, actor string, now time.Time) (string, KeyInfo, error) {
	return CreateKeyWithBudgets(ctx, db, auditKey, name, role, nil, actor, now)
}

// CreateKeyWithBudgets is CreateKey for a key with budgets (ParseBudgets):
// its row's MAC covers them.
func CreateKeyWithBudgets(ctx context.Context, db *store.DB, auditKey []byte, name string, role Role, budgets []Budget, actor string, now time.Time) (string, KeyInfo, error) {
	return CreateKeyWith(ctx, db, auditKey, name, role, KeySettings{Budgets: budgets}, actor, now)
}

// CreateKeyWith is CreateKey for a key with settings (budgets, relay,
// model allowlist): its row's MAC covers them.
func CreateKeyWith(ctx context.Context, db *store.DB, auditKey []byte, name string, role Role, set KeySettings, actor string, now time.Time) (string, KeyInfo, error) {
	if err := ValidateKeyName(name); err != nil {
		return "", KeyInfo{}, err
	}
	if _, err := ParseRole(string(role)); err != nil {
		return "", KeyInfo{}, err
	}
	budgets := set.Budgets
	enc, err := encodeBudgets(budgets)
	if err != nil {
		return "", KeyInfo{}, err
	}
	encModels, err := encodeModels(set.Models)
	if err != nil {
		return "", KeyInfo{}, err
	}
	key, err := NewKey()
	if err != nil {
		return "", KeyInfo{}, err
	}
	h := HashKey(key)
	info := KeyInfo{Name: name, Prefix: DisplayPrefix(key), Role: role, CreatedAt: store.FromMS(store.ToMS(now)), Budgets: budgets,
		Relay: set.Relay, Models: set.Models}
	if err := audit.CheckKey(auditKey); err != nil {
		return "", KeyInfo{}, fmt.Errorf("create client key: %w", err)
	}
	err = store.Tx(ctx, db, func(tx *sqlx.Tx) error {
		row := store.ClientKey{Name: name, Prefix: info.Prefix, Hash: h[:], Role: string(role), CreatedAt: store.ToMS(now), Budgets: enc,
			Relay: set.Relay, Models: encModels}
		id, err := store.InsertClientKey(ctx, tx, row)
		if err != nil {
			return err
		}
		row.ID = id
		if err := store.SetClientKeyMAC(ctx, tx, id, vault.ClientKeyMAC(rowKey(auditKey), row)); err != nil {
			return err
		}
		detail := fmt.Sprintf("client key %q (%s...) created with role %s", name, info.Prefix, role)
		if d := settingsDetail(set); d != "" {
			detail += " and " + d
		}
		return audit.Append(ctx, tx, auditKey, now, actor, audit.ActionClientKeyCreated, detail)
	})
	if err != nil {
		return "", KeyInfo{}, fmt.Errorf("create client key: %w", err)
	}
	return key, info, nil
}

// RevokeKey revokes the live client key with the given name and records
// it in the audit log; a running daemon refuses the key within its poll
// interval. An unknown name gives store.ErrNoClientKey. A row that failed
// authentication (Tampered) is revoked too, and its row authenticated as
// revoked, so that it is no longer reported; the audit row says so.
func RevokeKey(ctx context.Context, db *store.DB, auditKey []byte, name, actor string, now time.Time) (KeyInfo, error) {
	if err := audit.CheckKey(auditKey); err != nil {
		return KeyInfo{}, fmt.Errorf("revoke client key: %w", err)
	}
	var k store.ClientKey
	err := store.Tx(ctx, db, func(tx *sqlx.Tx) error {
		var err error
		if k, err = store.RevokeClientKey(ctx, tx, name, now); err != nil {
			return err
		}
		detail := fmt.Sprintf("client key %q (%s...) revoked", name, k.Prefix)
		if !authenticRow(auditKey, k) {
			detail += "; its row had failed authentication (added or changed outside claudeflare)"
		}
		revoked := k
		revoked.RevokedAt = store.RevokedAt(now)
		if err := store.SetClientKeyMAC(ctx, tx, k.ID, vault.ClientKeyMAC(rowKey(auditKey), revoked)); err != nil {
			return err
		}
		return audit.Append(ctx, tx, auditKey, now, actor, audit.ActionClientKeyRevoked, detail)
	})
	if err != nil {
		return KeyInfo{}, fmt.Errorf("revoke client key: %w", err)
	}
	info := keyInfo(k)
	info.RevokedAt = store.FromMS(store.ToMS(now))
	return info, nil
}

// ErrTamperedKey is returned for a change to a client key whose row
// failed authentication: it was changed outside claudeflare, and a change
// would authenticate it again as it now is.
var ErrTamperedKey = errors.New("the client key's row failed authentication (added or changed outside claudeflare)")

// UpdateKeyBudgets replaces the budgets of the live client key with the
// given name (nil: none) and records it in the audit log; a running
// daemon applies them within its poll interval. An unknown name gives
// store.ErrNoClientKey; a row that failed authentication, ErrTamperedKey
// (revoke it instead).
func UpdateKeyBudgets(ctx context.Context, db *store.DB, auditKey []byte, name string, budgets []Budget, actor string, now time.Time) (KeyInfo, error) {
	return UpdateKey(ctx, db, auditKey, name, KeyUpdate{Budgets: &budgets}, actor, now)
}

// ListKeys returns every client key, revoked ones included, oldest first,
// each checked against its MAC with the row key derived from auditKey
// (the vault's audit key): a row that fails is marked Tampered.
func ListKeys(ctx context.Context, db *store.DB, auditKey []byte) ([]KeyInfo, error) {
	if err := audit.CheckKey(auditKey); err != nil {
		return nil, errors.New("list client keys: no audit key (open the vault with the master key)")
	}
	rows, err := store.ListClientKeys(ctx, db)
	if err != nil {
		return nil, err
	}
	out := make([]KeyInfo, len(rows))
	for i, r := range rows {
		out[i] = keyInfo(r)
		_, setErr := decodeSettings(r)
		out[i].Tampered = !authenticRow(auditKey, r) || setErr != nil
	}
	return out, nil
}

// keyInfo is the row as listed; budgets or models that do not read are
// left out (such a row fails authentication too).
func keyInfo(r store.ClientKey) KeyInfo {
	budgets, _ := decodeBudgets(r.Budgets)
	models, _ := decodeModels(r.Models)
	return KeyInfo{
		Name: r.Name, Prefix: r.Prefix, Role: Role(r.Role),
		CreatedAt: store.FromMS(r.CreatedAt), LastUsedAt: store.FromMS(r.LastUsedAt), RevokedAt: store.FromMS(r.RevokedAt),
		Budgets: budgets, Relay: r.Relay, Models: models,
	}
}

// Credential returns the client key a request presents: the
// x-claudeflare-key header when there is one (then it alone counts),
// else the x-api-key header, or the token of an "Authorization: Bearer"
// header. When both of those are present, the one that looks like a
// client key (KeyPrefix) wins, so a client may send its own Anthropic
// credential alongside. The result is "" when there is none, or when it
// is not a single token of printable ASCII of at most 512 bytes.
func Credential(h http.Header) string {
	c, _ := credential(h)
	return c
}

// credential is Credential, and whether it came from x-claudeflare-key
// (a relay key must: the other two headers carry the client's own
// credentials).
func credential(h http.Header) (string, bool) {
	if v, ok := h["X-Claudeflare-Key"]; ok {
		if len(v) != 1 {
			return "", true
		}
		return token(strings.Trim(v[0], " \t")), true
	}
	return clientCredential(h), false
}

func clientCredential(h http.Header) string {
	var first string
	for _, c := range [2]string{apiKeyHeader(h), bearer(h)} {
		if c == "" {
			continue
		}
		if strings.HasPrefix(c, KeyPrefix) {
			return c
		}
		if first == "" {
			first = c
		}
	}
	return first
}

func apiKeyHeader(h http.Header) string {
	v := h.Values("X-Api-Key")
	if len(v) != 1 {
		return ""
	}
	return token(strings.Trim(v[0], " \t"))
}

func bearer(h http.Header) string {
	v := h.Values("Authorization")
	if len(v) != 1 {
		return ""
	}
	scheme, rest, ok := strings.Cut(strings.Trim(v[0], " \t"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return ""
	}
	return token(strings.TrimLeft(rest, " "))
}

// token returns s if it is a plausible credential: 1 to 512 bytes of
// printable ASCII without spaces.
func token(s string) string {
	if s == "" || len(s) > maxCredentialLen {
		return ""
	}
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] >= 0x7f {
			return ""
		}
	}
	return s
}
