package vault

import (
	"bytes"
	"crypto/rand"
	"database/sql"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"filippo.io/age"

	"github.com/claudeflare/claudeflare/internal/testutil"
	"github.com/claudeflare/claudeflare/requestlog"
	"github.com/claudeflare/claudeflare/store"
)

// TestSwappedSecretsFail: two accounts' sealed secrets swapped with plain
// SQL no longer open, each with a clear error; nothing of the other
// account's tokens comes out.
func TestSwappedSecretsFail(t *testing.T) {
	w := newWorld(t, KeySource{})
	v := w.mustOpen(KeySource{})
	swapRows(t, w.rawDB(), "accounts", "secret", "id", 1, 2)
	for _, id := range []int64{1, 2} {
		s, err := v.Secrets(ctx, id)
		if !errors.Is(err, ErrNotBound) {
			t.Fatalf("account %d: %v", id, err)
		}
		if s.AccessToken != "" || !strings.Contains(err.Error(), "sealed for another account") {
			t.Fatalf("account %d: %v", id, err)
		}
	}
	if _, err := v.Secrets(ctx, 3); err != nil {
		t.Fatalf("untouched account: %v", err)
	}
}

// TestForgedSecretFails: a secret made by someone without the data key
// (age-encrypted to the public data recipient, with or without an account
// id) does not open under a data key of this release.
func TestForgedSecretFails(t *testing.T) {
	w := newWorld(t, KeySource{})
	v := w.mustOpen(KeySource{})
	dk := v.currentKey()
	db := w.rawDB()
	for _, plain := range []string{
		`{"access_token":"attacker","refresh_token":"attacker"}`,
		`{"access_token":"attacker","account_id":1,"bind":"AAAA"}`,
	} {
		sealed, err := encrypt([]byte(plain), dk.recipient)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := db.Exec(`UPDATE accounts SET secret = ? WHERE id = 1`, sealed); err != nil {
			t.Fatal(err)
		}
		if _, err := v.Secrets(ctx, 1); !errors.Is(err, ErrNotBound) {
			t.Fatalf("forged %s: %v", plain, err)
		}
	}
}

// TestSwappedPayloadsFailExport: two payloads swapped between requests
// make the export fail with an authentication error naming the request.
func TestSwappedPayloadsFailExport(t *testing.T) {
	w := newWorld(t, KeySource{})
	v := w.mustOpen(KeySource{})
	ldb := w.logDB()
	if _, err := ldb.W.Exec(`DELETE FROM payloads`); err != nil {
		t.Fatal(err)
	}
	w.addPayload(v, `{"request":{"method":"POST","path":"/v1/first","headers":{}},"response":{"headers":{}}}`)
	w.addPayload(v, `{"request":{"method":"POST","path":"/v1/second","headers":{}},"response":{"headers":{}}}`)
	var out bytes.Buffer
	if _, err := requestlog.WriteNDJSON(ctx, w.logDB(), requestlog.Filter{}, v.OpenPayload, &out, 1); err != nil {
		t.Fatalf("export before the swap: %v", err)
	}
	var seqs []int64
	if err := ldb.W.Select(&seqs, `SELECT request_seq FROM payloads ORDER BY request_seq`); err != nil || len(seqs) != 2 {
		t.Fatalf("payloads %v: %v", seqs, err)
	}
	swapRows(t, ldb.W.DB, "payloads", "sealed", "request_seq", seqs[0], seqs[1])
	out.Reset()
	_, err := requestlog.WriteNDJSON(ctx, ldb, requestlog.Filter{}, v.OpenPayload, &out, 1)
	if err == nil || !strings.Contains(err.Error(), "authentication failed") || !strings.Contains(err.Error(), "req-1") {
		t.Fatalf("export after the swap: %v", err)
	}
	if bytes.Contains(out.Bytes(), []byte("/v1/")) {
		t.Fatalf("a swapped payload was exported: %s", out.Bytes())
	}
}

// TestLegacyCiphertextsOpenAndRebind: ciphertexts made by the previous
// release (no account id, no associated data) still open after the
// upgrade; the first open binds every account secret to its row, so that
// an unbound secret planted afterwards is refused; key rotate --data keeps
// them bound under the new key.
func TestLegacyCiphertextsOpenAndRebind(t *testing.T) {
	w := newWorld(t, KeySource{})
	v := w.mustOpen(KeySource{})
	dk := v.currentKey()
	legacySecret, err := encrypt([]byte(`{"access_token":"old-at","refresh_token":"old-rt"}`), dk.recipient)
	if err != nil {
		t.Fatal(err)
	}
	nonce := make([]byte, dk.aead.aead.NonceSize())
	rand.Read(nonce)
	legacyPayload := dk.aead.aead.Seal(nonce, nonce, []byte("old payload"), nil)

	// Under a key of this release: an unbound secret is refused.
	db := w.rawDB()
	if _, err := db.Exec(`UPDATE accounts SET secret = ? WHERE id = 1`, legacySecret); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Secrets(ctx, 1); !errors.Is(err, ErrNotBound) {
		t.Fatalf("unbound secret under a bound key: %v", err)
	}

	// The vault as the previous release left it: no MACs, unbound keys.
	if _, err := db.Exec(`UPDATE data_keys SET bound = 0, mac = NULL`); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`UPDATE master SET mac = NULL, audit_key = NULL`); err != nil {
		t.Fatal(err)
	}
	var notes []string
	dbs, err := store.OpenVault(w.dir)
	if err != nil {
		t.Fatal(err)
	}
	defer dbs.Close()
	v, err = Open(ctx, dbs, w.ks(KeySource{}), Options{Notify: func(s string) { notes = append(notes, s) }})
	if err != nil {
		t.Fatal(err)
	}
	if len(notes) != 1 || !strings.Contains(notes[0], "A new data key was made and 3 account secrets re-sealed") {
		t.Fatalf("notes %q", notes)
	}
	if v.currentKey().id == dk.id {
		t.Fatal("the upgrade kept the old data key current")
	}
	s, err := v.Secrets(ctx, 1)
	if err != nil || s.AccessToken != "old-at" {
		t.Fatalf("legacy secret: %v", err)
	}
	if got, err := v.OpenPayload(dk.id, "req-x", legacyPayload); err != nil || string(got) != "old payload" {
		t.Fatalf("legacy payload: %v", err)
	}
	w.want[1] = Secrets{AccessToken: "old-at", RefreshToken: "old-rt"}
	assertBound := func(v *Vault, what string) {
		t.Helper()
		var rows []struct {
			ID     int64  `db:"id"`
			KeyID  int64  `db:"key_id"`
			Sealed []byte `db:"secret"`
		}
		if err := db.Select(&rows, `SELECT id, key_id, secret FROM accounts`); err != nil {
			t.Fatal(err)
		}
		for _, r := range rows {
			k, err := v.key(ctx, r.KeyID)
			if err != nil {
				t.Fatal(err)
			}
			plain, err := decrypt(r.Sealed, k.identity)
			if err != nil {
				t.Fatal(err)
			}
			var ss sealedSecrets
			if err := json.Unmarshal(plain, &ss); err != nil || ss.AccountID != r.ID || ss.Tag == nil || !k.bound {
				t.Fatalf("%s: account %d is not bound", what, r.ID)
			}
		}
		var unbound int
		db.Get(&unbound, `SELECT count(*) FROM data_keys WHERE bound = 0`)
		if unbound != 0 {
			t.Fatalf("%s: %d unbound data keys", what, unbound)
		}
	}
	assertBound(v, "after the upgrade")

	// An unbound secret planted after the upgrade (sealed to the current
	// data recipient, which is public) is refused.
	planted, err := encrypt([]byte(`{"access_token":"planted"}`), v.currentKey().recipient)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`UPDATE accounts SET secret = ? WHERE id = 2`, planted); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Secrets(ctx, 2); !errors.Is(err, ErrNotBound) {
		t.Fatalf("unbound secret planted after the upgrade: %v", err)
	}
	if _, err := v.SwapTokens(ctx, 2, 1, w.want[2]); err != nil {
		t.Fatal(err)
	}

	// key rotate --data keeps every secret bound, under the new key.
	if _, err := v.Rotate(ctx, RotateOptions{Data: true}); err != nil {
		t.Fatal(err)
	}
	v2 := w.mustOpen(KeySource{})
	w.check(v2)
	assertBound(v2, "after key rotate --data")
}

// copyFixture copies the data dir made by the previous release into a
// temp dir with private modes.
func copyFixture(t *testing.T) string {
	t.Helper()
	return testutil.FirstReleaseDataDir(t)
}

// TestUpgradeFromV1: the vault made by the previous release opens; the
// first open adds the MACs and says so, naming the recipient it sealed;
// later opens say nothing; the account made then still opens; a recipient
// added afterwards is caught.
func TestUpgradeFromV1(t *testing.T) {
	dir := copyFixture(t)
	w := &world{t: t, dir: dir, want: map[int64]Secrets{}}
	idText, _ := os.ReadFile(filepath.Join(dir, IdentityFileName))
	ids, err := age.ParseIdentities(bytes.NewReader(idText))
	if err != nil {
		t.Fatal(err)
	}
	recipient := ids[0].(*age.X25519Identity).Recipient().String()

	open := func() (*Vault, []string) {
		t.Helper()
		db, err := store.OpenVault(dir)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		var notes []string
		v, err := Open(ctx, db, w.ks(KeySource{}), Options{Notify: func(s string) { notes = append(notes, s) }})
		if err != nil {
			t.Fatalf("open the previous release's vault: %v", err)
		}
		return v, notes
	}
	v, notes := open()
	if len(notes) != 1 || !strings.Contains(notes[0], recipient) || !strings.Contains(notes[0], "earlier release") {
		t.Fatalf("first open: notes %q", notes)
	}
	if err := v.CheckMAC(ctx); err != nil {
		t.Fatal(err)
	}
	accts, err := store.ListAccounts(ctx, v.DB())
	if err != nil || len(accts) != 1 {
		t.Fatalf("accounts: %v", err)
	}
	s, err := v.Secrets(ctx, accts[0].ID)
	if err != nil || s.APIKey != "sk-ant-api03-TESTONLY-fixture-key-0000000000" {
		t.Fatalf("the previous release's secret: %v", err)
	}
	if _, err := v.AuditKey(ctx); err != nil {
		t.Fatal(err)
	}
	if _, notes := open(); len(notes) != 0 {
		t.Fatalf("second open: notes %q", notes)
	}
	if strings.Count(notes[0], "A new data key was made") != 1 {
		t.Fatalf("first open: %q", notes)
	}
	// From now on a recipient added with SQL is caught.
	stranger, _ := age.GenerateX25519Identity()
	if _, err := w.rawDB().Exec(`UPDATE master SET recipients = recipients || char(10) || ?`, stranger.Recipient().String()); err != nil {
		t.Fatal(err)
	}
	if _, _, err := w.open(KeySource{}); !errors.Is(err, ErrTampered) {
		t.Fatalf("open after tampering: %v", err)
	}
}

// swapRows swaps column col of the rows keyed a and b, as someone with
// write access to the database file could.
func swapRows(t *testing.T, db interface {
	QueryRow(string, ...any) *sql.Row
	Exec(string, ...any) (sql.Result, error)
}, table, col, key string, a, b int64) {
	t.Helper()
	var va, vb []byte
	q := "SELECT " + col + " FROM " + table + " WHERE " + key + " = ?"
	if err := db.QueryRow(q, a).Scan(&va); err != nil {
		t.Fatal(err)
	}
	if err := db.QueryRow(q, b).Scan(&vb); err != nil {
		t.Fatal(err)
	}
	u := "UPDATE " + table + " SET " + col + " = ? WHERE " + key + " = ?"
	if _, err := db.Exec(u, vb, a); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(u, va, b); err != nil {
		t.Fatal(err)
	}
}

// TestUpgradeDropsForeignRecipients: when an earlier release's vault is
// sealed, a recipient that is not the master's own is dropped from the
// master record (so no new data key or backup is encrypted to it) and
// named; a break-glass key of that vault opens it but seals nothing.
func TestUpgradeDropsForeignRecipients(t *testing.T) {
	dir := copyFixture(t)
	w := &world{t: t, dir: dir, want: map[int64]Secrets{}}
	stranger, _ := age.GenerateX25519Identity()
	if _, err := w.rawDB().Exec(`UPDATE master SET recipients = recipients || char(10) || ?`, stranger.Recipient().String()); err != nil {
		t.Fatal(err)
	}
	db, err := store.OpenVault(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	// Wrap the data key to the stranger too, as a rotation by the earlier
	// release would have: it is a "break-glass" key of that vault.
	v0, err := Open(ctx, db, w.ks(KeySource{}), Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	dk := v0.currentKey()
	wrap, err := encrypt(dk.text, stranger.Recipient())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.rawDB().Exec(`UPDATE data_keys SET wrapped = ? WHERE id = ?`, wrap, dk.id); err != nil {
		t.Fatal(err)
	}
	var notes []string
	if _, err := Open(ctx, db, w.ks(KeySource{EncryptionKey: stranger.String()}), Options{Notify: func(s string) { notes = append(notes, s) }}); err != nil {
		t.Fatal(err)
	}
	if len(notes) != 0 {
		t.Fatalf("the break-glass key sealed the vault: %q", notes)
	}
	// Put the master's wrap back and open with the master key.
	if _, err := w.rawDB().Exec(`UPDATE data_keys SET wrapped = ? WHERE id = ?`, dk.wrapped, dk.id); err != nil {
		t.Fatal(err)
	}
	v, err := Open(ctx, db, w.ks(KeySource{}), Options{Notify: func(s string) { notes = append(notes, s) }})
	if err != nil {
		t.Fatal(err)
	}
	if len(notes) != 1 || !strings.Contains(notes[0], "Dropped from the master recipients") || !strings.Contains(notes[0], stranger.Recipient().String()) {
		t.Fatalf("notes %q", notes)
	}
	_, rs, err := v.Recipients(ctx)
	if err != nil || len(rs) != 1 || rs[0] == stranger.Recipient().String() {
		t.Fatalf("recipients after sealing: %v %v", rs, err)
	}
	if _, err := v.Rotate(ctx, RotateOptions{Data: true}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := w.open(KeySource{EncryptionKey: stranger.String()}); !errors.Is(err, ErrWrongKey) {
		t.Fatalf("the stranger opens the new data key: %v", err)
	}
}

// TestUpgradeRetiresForgedDataKey: a data key someone added to the earlier
// release's unauthenticated vault (wrapped to the public master recipient,
// made current) is not what secrets are sealed to after the upgrade.
func TestUpgradeRetiresForgedDataKey(t *testing.T) {
	dir := copyFixture(t)
	w := &world{t: t, dir: dir, want: map[int64]Secrets{}}
	db, err := store.OpenVault(dir) // schema upgrade only
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	info, err := ReadMaster(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	to, err := age.ParseRecipients(strings.NewReader(strings.Join(info.Recipients, "\n")))
	if err != nil {
		t.Fatal(err)
	}
	forged, err := newDataKeyRow(to, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	raw := w.rawDB()
	if _, err := raw.Exec(`UPDATE data_keys SET retired_at = 1`); err != nil {
		t.Fatal(err)
	}
	if _, err := raw.Exec(`INSERT INTO data_keys (recipient, wrapped, payload_key, created_at) VALUES (?, ?, ?, 1)`,
		forged.Recipient, forged.Wrapped, forged.PayloadKey); err != nil {
		t.Fatal(err)
	}
	var forgedID int64
	raw.Get(&forgedID, `SELECT max(id) FROM data_keys`)
	v, err := Open(ctx, db, w.ks(KeySource{}), Options{Notify: func(string) {}})
	if err != nil {
		t.Fatal(err)
	}
	if v.currentKey().id == forgedID {
		t.Fatal("secrets are sealed to the forged data key")
	}
	var under int
	raw.Get(&under, `SELECT count(*) FROM accounts WHERE key_id = ?`, forgedID)
	if under != 0 {
		t.Fatalf("%d secrets under the forged key", under)
	}
}

// TestUpgradeFinishesPreviousReleaseRotation: a master rotation the
// previous release left half done (no MACs anywhere) still opens; the
// next key rotate finishes it and then seals the vault.
func TestUpgradeFinishesPreviousReleaseRotation(t *testing.T) {
	w := newWorld(t, KeySource{})
	v := w.mustOpen(KeySource{})
	rotateHook = func(step string) error {
		if step == stepWrappedBoth {
			return errors.New("crash")
		}
		return nil
	}
	_, err := v.Rotate(ctx, RotateOptions{Master: true})
	rotateHook = nil
	if err == nil {
		t.Fatal("the rotation did not stop")
	}
	db := w.rawDB()
	for _, q := range []string{
		`UPDATE master SET mac = NULL, next_mac = NULL, audit_key = NULL, audit_key_next = NULL`,
		`UPDATE data_keys SET mac = NULL, mac_next = NULL, bound = 0`,
	} {
		if _, err := db.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	var notes []string
	v2, _ := w.mustOpenDB(KeySource{}, Options{Notify: func(s string) { notes = append(notes, s) }})
	w.check(v2)
	if len(notes) != 0 {
		t.Fatalf("sealed in the middle of a rotation: %q", notes)
	}
	if _, err := v2.Rotate(ctx, RotateOptions{Master: true}); err != nil {
		t.Fatal(err)
	}
	if len(notes) != 1 || !strings.Contains(notes[0], "now authenticated") {
		t.Fatalf("notes %q", notes)
	}
	v3 := w.mustOpen(KeySource{})
	w.check(v3)
	if err := v3.CheckMAC(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestUpgradeRaceLoser: a process that finds the vault sealed by another
// one while it was about to seal it checks the MACs instead.
func TestUpgradeRaceLoser(t *testing.T) {
	dir := copyFixture(t)
	w := &world{t: t, dir: dir, want: map[int64]Secrets{}}
	loser, _ := w.mustOpenDB(KeySource{}, Options{ReadOnly: true, Notify: func(string) {}})
	w.mustOpenDB(KeySource{}, Options{Notify: func(string) {}}) // the winner seals
	if err := loser.upgrade(ctx, false, true); err != nil {
		t.Fatal(err)
	}
	if loser.legacy {
		t.Fatal("the loser still takes the vault for an earlier release's")
	}
	stranger, _ := age.GenerateX25519Identity()
	if _, err := w.rawDB().Exec(`UPDATE master SET recipients = recipients || char(10) || ?`, stranger.Recipient().String()); err != nil {
		t.Fatal(err)
	}
	if _, _, err := loser.Recipients(ctx); !errors.Is(err, ErrTampered) {
		t.Fatalf("recipients after tampering: %v", err)
	}
}
