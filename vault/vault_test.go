package vault

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"filippo.io/age"

	"github.com/claudeflare/claudeflare/store"
)

func openTest(t *testing.T, dir string, ks KeySource) (*Vault, *store.DB) {
	t.Helper()
	if err := EnsureDataDir(dir); err != nil {
		t.Fatal(err)
	}
	db, err := store.OpenVault(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	v, err := Open(context.Background(), db, ks, Options{Create: true})
	if err != nil {
		t.Fatal(err)
	}
	return v, db
}

func TestSecretsRoundTripAndNothingPlainOnDisk(t *testing.T) {
	dir := t.TempDir()
	v, db := openTest(t, dir, KeySource{DataDir: dir})
	ctx := context.Background()
	refresh := "sk-ant-ort01-PLAINTEXT-REFRESH-abcdefghijklmnop"
	access := "sk-ant-oat01-PLAINTEXT-ACCESS-abcdefghijklmnop"
	exp := time.Now().Add(time.Hour).UTC().Truncate(time.Millisecond)
	id, err := v.AddAccount(ctx, NewAccount{Name: "work", Kind: store.KindOAuth, Mode: "max", Tier: 1}, Secrets{AccessToken: access, RefreshToken: refresh, ExpiresAt: exp})
	if err != nil {
		t.Fatal(err)
	}
	s, err := v.Secrets(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if s.AccessToken != access || s.RefreshToken != refresh || !s.ExpiresAt.Equal(exp) || s.Version != 1 {
		t.Fatalf("round trip mismatch: version %d", s.Version)
	}
	if _, err := v.AddAccount(ctx, NewAccount{Name: "work", Kind: store.KindOAuth}, Secrets{RefreshToken: "x"}); !errors.Is(err, store.ErrAccountExists) {
		t.Fatalf("duplicate name: got %v", err)
	}
	db.Close()
	st, _ := os.Stat(dir)
	if st.Mode().Perm() != 0o700 {
		t.Errorf("data dir mode %o", st.Mode().Perm())
	}
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if fi.IsDir() {
			return nil
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %o, want 600", p, fi.Mode().Perm())
		}
		b, _ := os.ReadFile(p)
		for _, sec := range []string{refresh, access, "PLAINTEXT"} {
			if bytes.Contains(b, []byte(sec)) {
				t.Errorf("%s contains a plaintext secret", p)
			}
		}
		return nil
	})
}

func TestSwapTokensCompareAndSwap(t *testing.T) {
	dir := t.TempDir()
	v, _ := openTest(t, dir, KeySource{DataDir: dir})
	ctx := context.Background()
	id, err := v.AddAccount(ctx, NewAccount{Name: "a", Kind: store.KindOAuth}, Secrets{RefreshToken: "r1"})
	if err != nil {
		t.Fatal(err)
	}
	nv, err := v.SwapTokens(ctx, id, 1, Secrets{RefreshToken: "r2"})
	if err != nil || nv != 2 {
		t.Fatalf("first swap: %d %v", nv, err)
	}
	if _, err := v.SwapTokens(ctx, id, 1, Secrets{RefreshToken: "r3"}); !errors.Is(err, ErrConflict) {
		t.Fatalf("stale swap: got %v, want ErrConflict", err)
	}
	s, _ := v.Secrets(ctx, id)
	if s.RefreshToken != "r2" || s.Version != 2 {
		t.Fatalf("after conflict: version %d", s.Version)
	}
}

func TestWrongKeyIsClearAndWritesNothing(t *testing.T) {
	dir := t.TempDir()
	_, db := openTest(t, dir, KeySource{DataDir: dir})
	db.Close()
	other, _ := age.GenerateX25519Identity()
	db2, err := store.OpenVault(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer db2.Close()
	_, err = Open(context.Background(), db2, KeySource{EncryptionKey: other.String(), DataDir: dir}, Options{Create: true})
	if !errors.Is(err, ErrWrongKey) {
		t.Fatalf("got %v, want ErrWrongKey", err)
	}
	if bytes.Contains([]byte(err.Error()), []byte(other.String())) {
		t.Fatal("error message contains the key")
	}
	// A malformed key never echoes what was given.
	_, err = Open(context.Background(), db2, KeySource{EncryptionKey: "AGE-SECRET-KEY-1NOTREALLYAKEYATALL", DataDir: dir}, Options{})
	if err == nil || bytes.Contains([]byte(err.Error()), []byte("NOTREALLY")) {
		t.Fatalf("malformed key error: %v", err)
	}
}

func TestEnvAndPassphraseKeys(t *testing.T) {
	id, _ := age.GenerateX25519Identity()
	dir := t.TempDir()
	v, db := openTest(t, dir, KeySource{EncryptionKey: id.String(), DataDir: dir})
	if _, err := os.Stat(filepath.Join(dir, IdentityFileName)); !os.IsNotExist(err) {
		t.Fatal("env key must not create identity.txt")
	}
	_, rs, _ := v.Recipients(context.Background())
	if len(rs) != 1 || rs[0] != id.Recipient().String() {
		t.Fatalf("recipients %v", rs)
	}
	db.Close()

	dir2 := t.TempDir()
	_, db2 := openTest(t, dir2, KeySource{Passphrase: "correct horse", DataDir: dir2})
	if _, err := Open(context.Background(), db2, KeySource{Passphrase: "wrong horse", DataDir: dir2}, Options{}); !errors.Is(err, ErrWrongKey) {
		t.Fatalf("wrong passphrase: %v", err)
	}
}

func TestGroupReadableIdentityRefused(t *testing.T) {
	dir := t.TempDir()
	_, db := openTest(t, dir, KeySource{DataDir: dir})
	os.Chmod(filepath.Join(dir, IdentityFileName), 0o644)
	_, err := Open(context.Background(), db, KeySource{DataDir: dir}, Options{})
	if !errors.Is(err, ErrKeyFileMode) {
		t.Fatalf("got %v", err)
	}
}

func TestPayloadSealing(t *testing.T) {
	dir := t.TempDir()
	v, _ := openTest(t, dir, KeySource{DataDir: dir})
	plain := []byte(`{"hello":"world"}`)
	kid, sealed, err := v.SealPayload("req-1", plain)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(sealed, plain) {
		t.Fatal("payload not encrypted")
	}
	got, err := v.OpenPayload(kid, "req-1", sealed)
	if err != nil || !bytes.Equal(got, plain) {
		t.Fatalf("open: %v", err)
	}
	if _, err := v.OpenPayload(kid, "req-2", sealed); err == nil {
		t.Fatal("a payload opened as another request's")
	}
	sealed[len(sealed)-1] ^= 1
	if _, err := v.OpenPayload(kid, "req-1", sealed); err == nil {
		t.Fatal("tampered payload opened")
	}
}

func BenchmarkSealPayload(b *testing.B) {
	dir := b.TempDir()
	EnsureDataDir(dir)
	db, _ := store.OpenVault(dir)
	defer db.Close()
	v, err := Open(context.Background(), db, KeySource{DataDir: dir}, Options{Create: true})
	if err != nil {
		b.Fatal(err)
	}
	plain := bytes.Repeat([]byte("x"), 4096)
	b.Run("aead", func(b *testing.B) {
		b.SetBytes(int64(len(plain)))
		for b.Loop() {
			v.SealPayload("req-1", plain)
		}
	})
	b.Run("age-x25519-baseline", func(b *testing.B) {
		b.SetBytes(int64(len(plain)))
		for b.Loop() {
			encrypt(plain, v.keys[v.current].recipient)
		}
	})
}
