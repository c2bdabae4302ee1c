// Package audit is claudeflare's audit log in vault.db: who added,
// removed, paused or resumed an account, rotated the master key, created
// or revoked a client key, failed to authenticate... Rows are chained
// with HMAC-SHA256 under the vault's audit key (vault.Vault.AuditKey), so
// nobody without the master key can edit, insert, delete or re-chain
// them unseen; Verify checks the chain. Its SQL is in package store.
package audit

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os/user"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/claudeflare/claudeflare/oauth"
	"github.com/claudeflare/claudeflare/store"
	"github.com/claudeflare/claudeflare/vault"
)

// Audit actions.
const (
	ActionAccountAdded      = "account.added"
	ActionAccountRemoved    = "account.removed"
	ActionAccountPaused     = "account.paused"
	ActionAccountResumed    = "account.resumed"
	ActionAccountNeedsLogin = "account.needs_login"
	ActionKeyRotated        = "key.rotated"
	ActionClientKeyCreated  = "client_key.created"
	ActionClientKeyRevoked  = "client_key.revoked"
	ActionClientKeyNewAddr  = "client_key.new_address"
	ActionAuthFailed        = "auth.failed"
	ActionConfigReloaded    = "config.reloaded"
	ActionAuditKeyed        = "audit.keyed"
	ActionAuditRestarted    = "audit.restarted"
	// ActionClientKeyTampered: a client key row failed authentication
	// and was not loaded.
	ActionClientKeyTampered = "client_key.tampered"
)

// Actors that are not a person or a client key.
const (
	ActorDaemon = "daemon"
)

// CLIActor names the person running a command: "cli:<user>".
func CLIActor() string {
	if u, err := user.Current(); err == nil && u.Username != "" {
		return "cli:" + u.Username
	}
	return "cli"
}

// KeyActor names a client key acting through the admin API.
func KeyActor(name string) string { return "key:" + name }

// AddrActor names an unauthenticated client by its address.
func AddrActor(addr string) string { return "addr:" + addr }

// Entry is one row of the audit log (the store's row, with the chain's
// methods).
type Entry store.AuditRow

// Time is the entry's time in UTC.
func (e Entry) Time() time.Time { return store.FromMS(e.TS) }

// canonical is the byte form of a row that its MAC covers: a JSON array
// of id, time, actor, action and detail.
func (e Entry) canonical() []byte {
	b, _ := json.Marshal([]any{e.ID, e.TS, e.Actor, e.Action, e.Detail})
	return b
}

// chainMAC is a row's hash: HMAC-SHA256 with the vault's audit key over
// the previous row's hash and the row. Nobody without the key can make
// one, so rows cannot be edited, inserted or re-chained without it.
func chainMAC(key, prev []byte, e Entry) []byte {
	m := hmac.New(sha256.New, key)
	m.Write(prev)
	m.Write(e.canonical())
	return m.Sum(nil)
}

// legacyHash is the unkeyed SHA-256 link of a chain made by the first
// release. Such rows are accepted only before the first keyed row, whose
// MAC then covers them.
func legacyHash(prev []byte, e Entry) []byte {
	h := sha256.New()
	h.Write(prev)
	h.Write(e.canonical())
	return h.Sum(nil)
}

var genesis = make([]byte, sha256.Size)

// minKeyLen is the shortest audit key accepted: a key this short was
// not made by the vault.
const minKeyLen = 16

// CheckKey fails when key cannot be the vault's audit key (too short: no
// audit key was given).
func CheckKey(key []byte) error {
	if len(key) < minKeyLen {
		return errors.New("write audit log: no audit key (open the vault with the master key)")
	}
	return nil
}

// Write appends an entry to the audit log in vault.db, chained to the one
// before it and keyed with key, the vault's audit key
// (vault.Vault.AuditKey). Actor and detail are sanitised (no control
// characters, nothing that looks like a credential).
func Write(ctx context.Context, db *store.DB, key []byte, actor, action, detail string) error {
	return WriteAt(ctx, db, key, time.Now(), actor, action, detail)
}

// WriteAt is Write with an explicit time.
func WriteAt(ctx context.Context, db *store.DB, key []byte, now time.Time, actor, action, detail string) error {
	if err := CheckKey(key); err != nil {
		return err
	}
	err := store.Tx(ctx, db, func(tx *sqlx.Tx) error {
		return Append(ctx, tx, key, now, actor, action, detail)
	})
	if err != nil {
		return fmt.Errorf("write audit log: %w", err)
	}
	return nil
}

// Append adds a row inside tx, for a caller that changes something in
// the same transaction (WriteAt wraps its errors, Append does not). The previous hash is the head's (the
// last row written), so that rows deleted from the end stay detectable
// after later appends; the id comes from SQLite's AUTOINCREMENT, which
// never reuses the id of a deleted row, so a cut tail followed by an
// append leaves a gap.
func Append(ctx context.Context, tx *sqlx.Tx, key []byte, now time.Time, actor, action, detail string) error {
	return appendRow(ctx, tx, key, now, actor, action, detail, false)
}

// errNotStarted: a writer found no audit row and no head.
var errNotStarted = errors.New("the audit log is empty: it was never started or every row and its head were deleted (run claudeflare audit --verify)")

// appendRow is Append; with start, it may write the first row of an
// empty log.
func appendRow(ctx context.Context, tx *sqlx.Tx, key []byte, now time.Time, actor, action, detail string, start bool) error {
	if err := CheckKey(key); err != nil {
		return err
	}
	prev := genesis
	head, err := store.GetAuditHead(ctx, tx)
	switch {
	case err == nil:
		prev = head.Hash
	case store.IsNotFound(err):
		// No head: chain to the last row. An empty log is started only
		// by Prepare, which knows whether it may be.
		last, err := store.LastAuditHash(ctx, tx)
		switch {
		case err == nil:
			prev = last
		case store.IsNotFound(err) && start:
		case store.IsNotFound(err):
			return errNotStarted
		default:
			return fmt.Errorf("read audit head: %w", err)
		}
	default:
		return fmt.Errorf("read audit head: %w", err)
	}
	e := Entry{TS: store.ToMS(now), Actor: clean(actor), Action: action, Detail: clean(detail), PrevHash: prev}
	row := store.AuditRow(e)
	row.Hash = genesis
	if e.ID, err = store.InsertAuditRow(ctx, tx, row); err != nil {
		return fmt.Errorf("insert audit entry: %w", err)
	}
	e.Hash = chainMAC(key, prev, e)
	if err := store.SetAuditHash(ctx, tx, e.ID, e.Hash); err != nil {
		return fmt.Errorf("insert audit entry: %w", err)
	}
	if err := store.PutAuditHead(ctx, tx, store.AuditHead{LastID: e.ID, Hash: e.Hash}); err != nil {
		return fmt.Errorf("update audit head: %w", err)
	}
	return nil
}

// clean makes text safe to store: oauth.Sanitize without its length cap
// mattering for the short texts written here.
func clean(s string) string { return oauth.Sanitize(s) }

// List calls fn for each entry at or after since, oldest first,
// reading row by row. It checks nothing: Verify does.
func List(ctx context.Context, db *store.DB, since time.Time, fn func(Entry) error) error {
	return store.EachAuditRowSince(ctx, db, store.ToMS(since), func(r store.AuditRow) error { return fn(Entry(r)) })
}

// ErrTampered is wrapped by every ChainError.
var ErrTampered = errors.New("audit log tampered with")

// ChainError names the first audit row that fails verification.
type ChainError struct {
	ID     int64 // the row; 0 when the log's head is at fault
	Reason string
	// Anchor: the chain verifies, but the expected head is not in it.
	Anchor bool
}

func (e *ChainError) Error() string {
	if e.ID == 0 {
		return fmt.Sprintf("audit log tampered with: %s", e.Reason)
	}
	return fmt.Sprintf("audit log tampered with at row %d: %s", e.ID, e.Reason)
}

// Unwrap makes errors.Is(err, ErrTampered) true.
func (e *ChainError) Unwrap() error { return ErrTampered }

// State is what Verify found.
type State struct {
	// Entries is the number of rows.
	Entries int
	// Legacy is how many rows at the start were made by the first release
	// (plain SHA-256 links). They are covered by the first keyed row's MAC.
	Legacy int
	// Keyed is false while no row carries a MAC yet: an empty log, or one
	// made by the first release that no holder of the master key has
	// opened since (Prepare keys it).
	Keyed bool
	// LastID and Head are the last row's id and hash: the value to anchor
	// elsewhere and give back to --expect-head.
	LastID int64
	Head   []byte
	// ExpectedAt is the row whose hash is the expected head, when one was
	// given.
	ExpectedAt int64
	// RestartedAt is the first audit.restarted row: a writer found the log
	// deleted or replaced and started it again there.
	RestartedAt int64
	restart     Entry
}

// Verify checks the whole chain with the audit key: every row's MAC
// over the row and the previous row's hash, ids contiguous from 1, and a
// head record matching the last row. An edited, inserted or deleted row,
// a re-chained one, or rows cut from the end without moving the head give
// a *ChainError naming the first bad row.
//
// What it cannot see without help: the newest rows cut off together with
// the head moved back to the last remaining row (the chain then looks as
// it did earlier), or the whole log replaced by an older copy. For those,
// anchor the head elsewhere (audit --head) and pass it as expect: it must
// be the hash of a row of the chain (the head when anchored, or any row
// written since then follows it), else verification fails.
func Verify(ctx context.Context, db *store.DB, key []byte, expect []byte) (State, error) {
	var st State
	if err := CheckKey(key); err != nil {
		return st, errors.New("verify audit log: no audit key (open the vault with the master key)")
	}
	prev := genesis
	var last Entry
	err := store.EachAuditRow(ctx, db, func(r store.AuditRow) error {
		e := Entry(r)
		switch {
		case st.Entries == 0 && e.ID != 1:
			return &ChainError{ID: e.ID, Reason: fmt.Sprintf("the log starts at row %d: %s deleted", e.ID, span(1, e.ID-1))}
		case st.Entries > 0 && e.ID != last.ID+1:
			return &ChainError{ID: e.ID, Reason: fmt.Sprintf("does not follow row %d: %s deleted", last.ID, span(last.ID+1, e.ID-1))}
		}
		if !bytes.Equal(e.PrevHash, prev) {
			if st.Entries == 0 {
				return &ChainError{ID: e.ID, Reason: "the first row does not start the chain: rows before it were deleted or it was edited"}
			}
			return &ChainError{ID: e.ID, Reason: fmt.Sprintf("does not follow row %d: a row between them was deleted or row %d was changed", last.ID, last.ID)}
		}
		switch {
		case hmac.Equal(chainMAC(key, prev, e), e.Hash):
			st.Keyed = true
		case !st.Keyed && bytes.Equal(legacyHash(prev, e), e.Hash):
			st.Legacy++
		default:
			return &ChainError{ID: e.ID, Reason: "its MAC does not match its content: the row was edited, or re-chained without the audit key"}
		}
		if st.Keyed && e.Action == ActionAuditRestarted && st.RestartedAt == 0 {
			st.RestartedAt, st.restart = e.ID, e
		}
		if expect != nil && hmac.Equal(e.Hash, expect) {
			st.ExpectedAt = e.ID
		}
		prev, last = e.Hash, e
		st.Entries++
		return nil
	})
	if err != nil {
		return st, err
	}
	st.LastID, st.Head = last.ID, last.Hash

	head, err := store.GetAuditHead(ctx, db.R)
	switch {
	case store.IsNotFound(err):
		if st.Entries > 0 {
			return st, &ChainError{Reason: "the head record is missing"}
		}
	case err != nil:
		return st, fmt.Errorf("read audit head: %w", err)
	case st.Entries == 0:
		return st, &ChainError{Reason: fmt.Sprintf("every row was deleted (the head names row %d)", head.LastID)}
	case head.LastID != last.ID || !bytes.Equal(head.Hash, last.Hash):
		if head.LastID > last.ID {
			return st, &ChainError{ID: head.LastID, Reason: fmt.Sprintf("rows after row %d were deleted (the head names row %d)", last.ID, head.LastID)}
		}
		return st, &ChainError{ID: last.ID, Reason: "the last row does not match the head record"}
	}
	if st.RestartedAt != 0 {
		r := st.restart
		return st, &ChainError{ID: r.ID, Reason: fmt.Sprintf("the log had been deleted or replaced by rows without a MAC before this row; %s found it at %s and restarted the chain here",
			r.Actor, r.Time().Format(time.RFC3339))}
	}
	if expect != nil && st.ExpectedAt == 0 {
		return st, &ChainError{Anchor: true, Reason: fmt.Sprintf("the expected head %s is not a row of the chain: rows were cut from the end, or the log was replaced",
			shortHash(expect))}
	}
	return st, nil
}

// Prep is what Prepare found and did.
type Prep struct {
	// Key is the vault's audit key, for Write, CreateKey, the guard...
	Key []byte
	// State is the chain after Prepare.
	State State
	// Sealed: this open keyed a log made by an earlier release (State.Legacy
	// rows), or started an empty one (State.Legacy == 0).
	Sealed bool
	// Restarted: the log had been deleted (or replaced by rows without a
	// MAC) although the vault has had an audit key, and a writer started
	// it again with an audit.restarted row, which --verify reports from
	// then on.
	Restarted bool
	// Problem is the chain's first failure (a *ChainError), nil when it
	// verifies. Writers go on appending to the head; --verify reports it.
	// When the last row carries a valid MAC and the head names it, the
	// rows before it are not walked (State then has LastID, Head and
	// Keyed only): Verify checks them.
	Problem error
}

// Prepare gets v's audit key and brings the chain to a state that can
// be extended: a log made by an earlier release (plain hashes) is verified
// and keyed, an empty one started, each with an audit.keyed row; that
// happens only while the vault has no audit key yet (the vault's
// authenticated metadata records that a keyed chain exists once it has
// one). A vault with an audit key whose log is empty or has no keyed row
// was tampered with: Problem says so and, with write, an audit.restarted
// row starts the chain again, so that the deletion stays on record.
func Prepare(ctx context.Context, v *vault.Vault, now time.Time, actor string, write bool) (Prep, error) {
	var p Prep
	db := v.DB()
	had, err := store.HadAuditKey(ctx, db)
	if err != nil {
		return p, fmt.Errorf("read audit key record: %w", err)
	}
	// AuditKey checks the master record's MAC, which covers the key's
	// wrap: had is true only if the key was really there.
	if p.Key, err = v.AuditKey(ctx); err != nil {
		return p, fmt.Errorf("audit key: %w", err)
	}
	// The common case, cheaply: the last row carries a MAC and the head
	// names it. (--verify walks the whole chain afterwards.)
	if st, ok := keyedTail(ctx, db, p.Key); ok {
		p.State = st
		return p, nil
	}
	p.State, err = Verify(ctx, db, p.Key, nil)
	var ce *ChainError
	switch {
	case errors.As(err, &ce):
		p.Problem = err
		return p, nil
	case err != nil:
		return p, err
	case p.State.Keyed:
		return p, nil
	case !had:
		p.State, p.Sealed, err = seal(ctx, db, p.Key, now, actor, p.State)
		var ce *ChainError
		if errors.As(err, &ce) {
			p.Problem, err = err, nil
		}
		return p, err
	}
	what := "every row and the head were deleted"
	if p.State.Entries > 0 {
		what = fmt.Sprintf("its %d %s carry no MAC: the log was replaced", p.State.Entries, plural(p.State.Entries, "row", "rows"))
	}
	p.Problem = &ChainError{Reason: "the vault has had an audit key, but " + what}
	if !write {
		return p, nil
	}
	err = store.Tx(ctx, db, func(tx *sqlx.Tx) error {
		return appendRow(ctx, tx, p.Key, now, actor, ActionAuditRestarted, "audit chain restarted: "+what, true)
	})
	if err != nil {
		return p, fmt.Errorf("restart audit log: %w", err)
	}
	p.Restarted = true
	p.State, err = Verify(ctx, db, p.Key, nil)
	if errors.As(err, &ce) {
		err = nil
	}
	return p, err
}

// keyedTail reports whether the last row carries a valid MAC over its
// stored link and the head record names it; the state it returns has
// LastID, Head and Keyed only.
func keyedTail(ctx context.Context, db *store.DB, key []byte) (State, bool) {
	r, err := store.LastAuditRow(ctx, db.W)
	e := Entry(r)
	if err != nil || !hmac.Equal(chainMAC(key, e.PrevHash, e), e.Hash) || e.Action == ActionAuditRestarted {
		return State{}, false
	}
	head, err := store.GetAuditHead(ctx, db.W)
	if err != nil || head.LastID != e.ID || !bytes.Equal(head.Hash, e.Hash) {
		return State{}, false
	}
	return State{Keyed: true, LastID: e.ID, Head: e.Hash}, true
}

// seal keys a chain that has no keyed row yet (st, as Verify found
// it), so that from now on nobody without the audit key can extend or
// rewrite it: it appends an audit.keyed row whose MAC covers every row
// before it, and returns the state after it, with sealed true.
func seal(ctx context.Context, db *store.DB, key []byte, now time.Time, actor string, st State) (State, bool, error) {
	detail := "audit chain started, keyed with the vault's audit key"
	if st.Entries > 0 {
		detail = fmt.Sprintf("audit chain keyed: %d earlier %s made by an earlier release verified as a plain hash chain and covered from here on",
			st.Entries, plural(st.Entries, "entry", "entries"))
	}
	// Under the write lock: check again that nobody keyed it meanwhile.
	err := store.Tx(ctx, db, func(tx *sqlx.Tx) error {
		head, err := store.GetAuditHead(ctx, tx)
		if err != nil && !store.IsNotFound(err) {
			return fmt.Errorf("read audit head: %w", err)
		}
		if !bytes.Equal(head.Hash, st.Head) {
			return errSealRace
		}
		return appendRow(ctx, tx, key, now, actor, ActionAuditKeyed, detail, true)
	})
	sealed := err == nil
	if err != nil && !errors.Is(err, errSealRace) {
		return st, false, fmt.Errorf("key audit log: %w", err)
	}
	st, err = Verify(ctx, db, key, nil)
	return st, sealed && err == nil, err
}

var errSealRace = errors.New("audit log changed while keying it")

func span(from, to int64) string {
	if from == to {
		return fmt.Sprintf("row %d was", from)
	}
	return fmt.Sprintf("rows %d to %d were", from, to)
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

func shortHash(h []byte) string {
	s := hex.EncodeToString(h)
	if len(s) > 16 {
		return s[:16] + "..."
	}
	return s
}
