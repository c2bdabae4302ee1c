// Package vault keeps claudeflare's secrets: the master key, the data keys
// wrapped to it, and every account token sealed to the current data key.
// It is the only package that sees plaintext tokens.
//
// Envelope encryption, as sops does it with age: the master key (an age
// identity file, CLAUDEFLARE_ENCRYPTION_KEY, or an scrypt passphrase) wraps
// a data key (an age identity made at init); secrets are sealed to the data
// recipient; payloads are sealed with a symmetric XChaCha20-Poly1305 key
// that is itself sealed to the data recipient, so the asymmetric work
// happens once per key, not once per request.
package vault

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"filippo.io/age"
	"github.com/jmoiron/sqlx"

	"github.com/claudeflare/claudeflare/store"
)

// ErrNotInitialised is returned by Open on a vault that has no master key yet.
var ErrNotInitialised = errors.New("vault is not initialised (hint: run claudeflare init)")

// ErrConflict is returned by SwapTokens when another writer moved the
// account's secret first.
var ErrConflict = store.ErrVersionConflict

// Vault is an opened vault: its database and unwrapped data keys.
//
// A long-running holder (the daemon) notices a data key made by `key rotate
// --data` in another process without a restart: SealPayload checks for one
// every few seconds in the background, Secrets and SwapTokens check before
// they use a key, and a new key is unwrapped with the master key held in
// memory (or, when that key was rotated in an identity file, with the file
// as it is now).
type Vault struct {
	db         *store.DB
	now        func() time.Time
	ks         KeySource
	log        *slog.Logger
	checkEvery time.Duration

	mu      sync.RWMutex
	m       *master
	current int64              // id of the current data key
	keys    map[int64]*dataKey // unwrapped data keys by id

	syncMu  sync.Mutex // one syncKeys at a time; guards the fields below
	failIDs string     // data keys the master could not unwrap ...
	failAt  time.Time  // ... and when: retried after keyRetryAfter
	checked atomic.Int64
	syncing atomic.Bool

	legacy     bool         // the metadata predates MACs and could not be sealed yet
	breakGlass bool         // opened by an extra recipient: MACs not checked
	recovery   bool         // Options.Recovery
	notify     func(string) // Options.Notify
	auditMu    sync.Mutex
	auditKey   []byte
}

type dataKey struct {
	id        int64
	identity  age.Identity
	recipient age.Recipient
	aead      payloadAEAD
	text      []byte // the identity as text, to re-wrap it to a new master
	wrapped   []byte // its wrap as opened
	bound     bool   // ciphertexts under it must be bound to their rows
	bindKey   []byte // keys the tags that bind account secrets to their rows
}

// Options tune Open.
type Options struct {
	Create bool             // initialise the vault (and default identity) if absent
	PQ     bool             // new identities are hybrid post-quantum
	Now    func() time.Time // clock; nil = time.Now
	Logger *slog.Logger     // for trouble found in the background; nil = discard

	// Notify, if set, is told things the user should read now (the
	// metadata of a vault from an earlier release was just authenticated,
	// with the recipients sealed); nil logs them at warn level instead.
	Notify func(msg string)

	// ReadOnly opens without writing anything: the MACs of a vault made by
	// an earlier release are not added (doctor).
	ReadOnly bool

	// Recovery lets the key of an extra recipient (a break-glass key,
	// which cannot check the vault's MACs) open the vault, to replace the
	// master key (`key rotate`); without it such a key gets ErrBreakGlass.
	Recovery bool
}

// keyCheckInterval is how often SealPayload looks for a new current data
// key; keyRetryAfter is how long a data key that the master could not
// unwrap is left alone. Tests shorten them before Open.
var (
	keyCheckInterval = 5 * time.Second
	keyRetryAfter    = time.Minute
)

// Open opens the vault in db with the master key from ks. With
// opts.Create, an uninitialised vault is initialised first. A wrong key
// gives ErrWrongKey and writes nothing.
func Open(ctx context.Context, db *store.DB, ks KeySource, opts Options) (*Vault, error) {
	ks = ks.Resolve() // the checks below look at the source that wins
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	v := &Vault{db: db, now: now, ks: ks, log: log, checkEvery: keyCheckInterval, keys: map[int64]*dataKey{}, notify: opts.Notify, recovery: opts.Recovery}
	kind, err := store.MasterKind(ctx, db.R)
	if store.IsNotFound(err) {
		if !opts.Create {
			return nil, ErrNotInitialised
		}
		if ks.EncryptionKey == "" && ks.IdentityFile == "" && ks.Passphrase != "" {
			if err := CheckNewPassphrase(ks.Passphrase); err != nil {
				return nil, fmt.Errorf("CLAUDEFLARE_PASSPHRASE: %w", err)
			}
		}
		m, err := ks.load(true, opts.PQ)
		if err != nil {
			return nil, err
		}
		v.m = m
		if err := v.initialise(ctx); err != nil {
			return nil, err
		}
	} else if err != nil {
		return nil, fmt.Errorf("read vault: %w", err)
	} else {
		if kind == MasterPassphrase && ks.EncryptionKey == "" && ks.IdentityFile == "" && ks.Passphrase == "" {
			return nil, ErrNeedPassphrase
		}
		m, err := ks.load(false, false)
		if err != nil {
			return nil, err
		}
		v.m = m
	}
	if err := v.loadKeys(ctx); err != nil {
		if errors.Is(err, ErrWrongKey) {
			return nil, fmt.Errorf("%s: %w", v.m.where, err)
		}
		return nil, err
	}
	if v.legacy && !opts.ReadOnly {
		if err := v.upgrade(ctx, false, true); err != nil {
			return nil, err
		}
	}
	v.checked.Store(time.Now().UnixNano())
	return v, nil
}

// master returns the master key in use.
func (v *Vault) master() *master {
	v.mu.RLock()
	defer v.mu.RUnlock()
	return v.m
}

// initialise writes the master row and a first data key in one
// transaction. A concurrent init by another process is not an error.
func (v *Vault) initialise(ctx context.Context) error {
	to, err := v.m.wrapTo()
	if err != nil {
		return err
	}
	dk, err := newDataKeyRow(to, v.now())
	if err != nil {
		return err
	}
	root, err := v.m.primaryRoot()
	if err != nil {
		return err
	}
	recipients := strings.Join(v.m.recipientStrings(), "\n")
	return store.Tx(ctx, v.db, func(tx *sqlx.Tx) error {
		first, err := store.InsertMaster(ctx, tx, v.m.kind(), recipients, store.ToMS(v.now()), metaMAC(root, masterParts(v.m.kind(), recipients, nil)...))
		if err != nil || !first {
			return err // !first: another process won the race
		}
		_, err = insertDataKey(ctx, tx, dk, root)
		return err
	})
}

func parseRecipient(s string) (age.Recipient, error) {
	rs, err := age.ParseRecipients(strings.NewReader(s))
	if err != nil || len(rs) != 1 {
		return nil, errors.New("parse data recipient: malformed")
	}
	return rs[0], nil
}

// Recipients returns the master recipients stored in the vault (empty for
// a passphrase-protected vault) and the master kind, checked against the
// master record's MAC.
func (v *Vault) Recipients(ctx context.Context) (kind string, recipients []string, err error) {
	row, err := readMasterRecord(ctx, v.db.R)
	if err != nil {
		return "", nil, err
	}
	v.mu.RLock()
	legacy, glass := v.legacy, v.breakGlass
	v.mu.RUnlock()
	if glass {
		return "", nil, errors.New("the master recipients cannot be checked with an extra recipient's key; replace the master key first")
	}
	if !legacy {
		if err := v.checkMaster(row); err != nil {
			return "", nil, err
		}
	}
	if row.Recipients != "" {
		recipients = strings.Split(row.Recipients, "\n")
	}
	return row.Kind, recipients, nil
}

// DB returns the vault database.
func (v *Vault) DB() *store.DB { return v.db }

func encrypt(plain []byte, to ...age.Recipient) ([]byte, error) {
	var buf bytes.Buffer
	w, err := age.Encrypt(&buf, to...)
	if err != nil {
		return nil, err
	}
	if _, err := w.Write(plain); err != nil {
		return nil, err
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func decrypt(sealed []byte, ids ...age.Identity) ([]byte, error) {
	r, err := age.Decrypt(bytes.NewReader(sealed), ids...)
	if err != nil {
		var nm *age.NoIdentityMatchError
		if errors.As(err, &nm) || strings.Contains(err.Error(), "incorrect passphrase") {
			return nil, ErrWrongKey
		}
		return nil, fmt.Errorf("decrypt: %w", err)
	}
	out, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("decrypt: %w", err)
	}
	return out, nil
}

// Secrets are an account's plaintext credentials. Never log them.
type Secrets struct {
	AccessToken  string    `json:"access_token,omitempty"`
	RefreshToken string    `json:"refresh_token,omitempty"`
	APIKey       string    `json:"api_key,omitempty"`
	ExpiresAt    time.Time `json:"expires_at,omitzero"`
	Version      int64     `json:"-"`

	// CloudKey is a cloud account's credential document (store.KindBedrock:
	// the AWS keys JSON; store.KindVertex: the service-account key JSON),
	// compacted; see package cloud.
	CloudKey string `json:"cloud_key,omitempty"`
}

// String never reveals a secret, so that a stray %v cannot leak one.
func (Secrets) String() string { return "vault.Secrets{[REDACTED]}" }

// GoString never reveals a secret.
func (s Secrets) GoString() string { return s.String() }

// sealSecrets seals s for the account accountID under the current data key.
func (v *Vault) sealSecrets(accountID int64, s Secrets) (keyID int64, sealed []byte, err error) {
	dk := v.currentKey()
	plain, err := bindSecrets(dk, accountID, s)
	if err != nil {
		return 0, nil, err
	}
	sealed, err = encrypt(plain, dk.recipient)
	if err != nil {
		return 0, nil, fmt.Errorf("seal secret: %w", err)
	}
	return dk.id, sealed, nil
}

// openSecrets opens the secret read from account accountID's row.
func (v *Vault) openSecrets(ctx context.Context, accountID, keyID int64, sealed []byte) (Secrets, error) {
	dk, err := v.key(ctx, keyID)
	if err != nil {
		return Secrets{}, fmt.Errorf("open secret: %w", err)
	}
	plain, err := decrypt(sealed, dk.identity)
	if err != nil {
		return Secrets{}, fmt.Errorf("open secret: %w", err)
	}
	s, err := unbindSecrets(dk, accountID, plain)
	if err != nil {
		return Secrets{}, fmt.Errorf("open secret: %w", err)
	}
	return s, nil
}

// NewAccount describes an account to add.
type NewAccount struct {
	Name     string
	Kind     string // store.KindOAuth or store.KindAPIKey
	Mode     string // max | console, for OAuth accounts
	Priority int
	Tier     int
	Upstream string // cloud kinds: non-secret settings JSON (store.Account.Upstream)
}

// AddAccount seals s and stores a new account. A taken name gives
// store.ErrAccountExists and stores nothing.
func (v *Vault) AddAccount(ctx context.Context, a NewAccount, s Secrets) (int64, error) {
	if err := ValidateName(a.Name); err != nil {
		return 0, err
	}
	v.syncBeforeSeal(ctx)
	var keyID int64
	id, err := store.InsertAccountSealed(ctx, v.db, store.NewAccount{
		Name: a.Name, Kind: a.Kind, Mode: a.Mode, Priority: a.Priority, Tier: a.Tier,
		KeyID: v.currentKey().id, TokenExpiresAt: store.ToMS(s.ExpiresAt), Upstream: a.Upstream,
	}, v.now(), func(id int64) (int64, []byte, error) {
		kid, sealed, err := v.sealSecrets(id, s)
		keyID = kid
		return kid, sealed, err
	})
	if err != nil {
		return 0, err
	}
	v.resealIfRetired(ctx, id, keyID)
	return id, nil
}

// swapHook, when set (tests only), runs in SwapTokens between sealing and
// saving: where a concurrent rotation can retire the key just used.
var swapHook func()

// syncBeforeSeal learns about a rotated data key before a secret is
// sealed. A failure is logged, never returned: tokens are saved under the
// key at hand rather than lost.
func (v *Vault) syncBeforeSeal(ctx context.Context) {
	if _, err := v.syncKeys(ctx); err != nil {
		v.log.Warn("check for a new data key", "err", err)
	}
}

// resealIfRetired re-seals an account that was just written under keyID
// when a rotation retired keyID in between: the rotation may already have
// passed that account. Best effort: the secret is saved either way, and
// the next rotation re-seals it.
func (v *Vault) resealIfRetired(ctx context.Context, accountID, keyID int64) {
	cur, err := v.syncKeys(ctx)
	if err != nil || cur == 0 || cur == keyID {
		return
	}
	if _, err := v.resealAccount(ctx, accountID); err != nil {
		v.log.Warn("re-seal account secret under the current data key", "account_id", accountID, "err", err)
	}
}

// ValidateName checks an account name: 1-64 of letters, digits, '.', '_',
// '-', '@', not starting with '-' and not only dots (".", ".."): names
// appear in messages, hints and completions, maybe in paths. Control
// characters and spaces are refused with every other character.
func ValidateName(name string) error {
	if name == "" || len(name) > 64 {
		return fmt.Errorf("invalid account name %q: use 1 to 64 characters", name)
	}
	for _, r := range name {
		ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("._-@", r)
		if !ok {
			return fmt.Errorf("invalid account name %q: use letters, digits, '.', '_', '-' or '@'", name)
		}
	}
	if strings.HasPrefix(name, "-") {
		return fmt.Errorf("invalid account name %q: must not start with '-'", name)
	}
	if strings.Trim(name, ".") == "" {
		return fmt.Errorf("invalid account name %q: must not be only dots", name)
	}
	return nil
}

// Secrets returns an account's current plaintext credentials and version.
func (v *Vault) Secrets(ctx context.Context, accountID int64) (Secrets, error) {
	ss, err := store.GetSecret(ctx, v.db, accountID)
	if err != nil {
		return Secrets{}, fmt.Errorf("read account secret: %w", err)
	}
	s, err := v.openSecrets(ctx, accountID, ss.KeyID, ss.Sealed)
	if err != nil {
		return Secrets{}, err
	}
	s.Version = ss.Version
	return s, nil
}

// SwapTokens stores s as the account's secret if its version is still
// fromVersion (compare-and-swap), returning the new version. When another
// writer moved it first, the error is ErrConflict and nothing is written.
//
// A concurrent `key rotate --data` never makes it fail: re-sealing keeps an
// account's version, and a secret saved under a key that was retired a
// moment before is re-sealed right after.
func (v *Vault) SwapTokens(ctx context.Context, accountID, fromVersion int64, s Secrets) (int64, error) {
	v.syncBeforeSeal(ctx)
	keyID, sealed, err := v.sealSecrets(accountID, s)
	if err != nil {
		return 0, err
	}
	if swapHook != nil {
		swapHook()
	}
	nv, err := store.SwapSecret(ctx, v.db, accountID, fromVersion, store.SealedSecret{
		KeyID: keyID, Sealed: sealed, TokenExpiresAt: store.ToMS(s.ExpiresAt),
	}, v.now())
	if err != nil {
		return 0, err
	}
	v.resealIfRetired(ctx, accountID, keyID)
	return nv, nil
}

// ReplaceSecrets stores s as the account's secret whatever its current
// version (a new login: the old credentials are dropped), sealed and
// bound to the account's row as SwapTokens does. The version moves on,
// so a daemon that cached the old credentials reads the new ones, and a
// needs-login status is cleared. A daemon refreshing the old tokens at
// the same moment loses the race: its swap sees the new version.
func (v *Vault) ReplaceSecrets(ctx context.Context, accountID int64, s Secrets) error {
	for range 5 {
		cur, err := store.GetSecret(ctx, v.db, accountID)
		if err != nil {
			return fmt.Errorf("read account secret: %w", err)
		}
		_, err = v.SwapTokens(ctx, accountID, cur.Version, s)
		if !errors.Is(err, ErrConflict) {
			return err
		}
	}
	return ErrConflict
}

// MarkNeedsLogin takes an account out of rotation until it is logged in again.
func (v *Vault) MarkNeedsLogin(ctx context.Context, accountID int64, reason string) error {
	return store.SetStatus(ctx, v.db, accountID, store.StatusNeedsLogin, reason, v.now())
}

// payloadAEAD seals payloads: nonce || XChaCha20-Poly1305(plain).
type payloadAEAD struct {
	aead interface {
		NonceSize() int
		Overhead() int
		Seal(dst, nonce, plaintext, additionalData []byte) []byte
		Open(dst, nonce, ciphertext, additionalData []byte) ([]byte, error)
	}
}

// SealPayload encrypts the captured payload of request requestID with the
// current data key's symmetric payload key, bound to that request (its id
// is the associated data). It is safe for concurrent use.
func (v *Vault) SealPayload(requestID string, plain []byte) (keyID int64, sealed []byte, err error) {
	v.maybeSync()
	dk := v.currentKey()
	ns := dk.aead.aead.NonceSize()
	out := make([]byte, ns, ns+len(plain)+dk.aead.aead.Overhead())
	if _, err := rand.Read(out); err != nil {
		return 0, nil, err
	}
	return dk.id, dk.aead.aead.Seal(out, out[:ns], plain, payloadAD(requestID)), nil
}

// OpenPayload decrypts the payload of request requestID, sealed by
// SealPayload with key keyID. A payload sealed for another request fails.
func (v *Vault) OpenPayload(keyID int64, requestID string, sealed []byte) ([]byte, error) {
	v.mu.RLock()
	dk := v.keys[keyID]
	v.mu.RUnlock()
	if dk == nil {
		return nil, fmt.Errorf("open payload: data key %d is unknown (retired)", keyID)
	}
	ns := dk.aead.aead.NonceSize()
	if len(sealed) < ns+dk.aead.aead.Overhead() {
		return nil, errors.New("open payload: too short")
	}
	plain, err := dk.aead.aead.Open(nil, sealed[:ns], sealed[ns:], payloadAD(requestID))
	if err != nil {
		// Sealed by the previous release, without associated data. Only
		// the holder of the payload key could have made one, so this
		// lets nobody forge a payload; such old payloads can still be
		// moved between rows (until retention deletes them).
		plain, err = dk.aead.aead.Open(nil, sealed[:ns], sealed[ns:], nil)
	}
	if err != nil {
		return nil, errors.New("open payload: authentication failed")
	}
	return plain, nil
}
