package backup_test

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"filippo.io/age"

	"github.com/claudeflare/claudeflare/backup"
	"github.com/claudeflare/claudeflare/internal/testutil"
	"github.com/claudeflare/claudeflare/store"
	"github.com/claudeflare/claudeflare/vault"
)

// recipient is the data dir's public master recipient.
func (d *dataDir) recipient(t *testing.T) string {
	t.Helper()
	info, err := vault.ReadMaster(context.Background(), d.vdb)
	if err != nil || len(info.Recipients) != 1 {
		t.Fatalf("master: %+v %v", info, err)
	}
	return info.Recipients[0]
}

// snapshotDir describes every file of dir (but the lock file) by name,
// mode and content hash.
func snapshotDir(t *testing.T, dir string) string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, e := range entries {
		if e.Name() == backup.LockFile {
			continue
		}
		info, _ := e.Info()
		b, _ := os.ReadFile(filepath.Join(dir, e.Name()))
		lines = append(lines, fmt.Sprintf("%s %v %x", e.Name(), info.Mode(), sha256.Sum256(b)))
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

// forge builds an archive as someone who knows only the public recipient
// would: the manifest and files of their choice (mac: the manifest.mac
// entry, none when empty), encrypted to the recipient.
func forge(t *testing.T, recipient, format, mac string, files map[string][]byte) []byte {
	t.Helper()
	m := backup.Manifest{Format: format, CreatedAt: time.Now().UTC().Truncate(time.Second), Version: "forged", MasterKind: vault.MasterIdentity}
	var names []string
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		s := sha256.Sum256(files[n])
		m.Files = append(m.Files, backup.File{Name: n, Size: int64(len(files[n])), SHA256: hex.EncodeToString(s[:])})
	}
	mb, _ := json.Marshal(m)
	r, err := age.ParseX25519Recipient(recipient)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	aw, err := age.Encrypt(&out, r)
	if err != nil {
		t.Fatal(err)
	}
	tw := tar.NewWriter(aw)
	put := func(name string, b []byte) {
		tw.WriteHeader(&tar.Header{Name: name, Mode: 0o600, Size: int64(len(b)), Typeflag: tar.TypeReg})
		tw.Write(b)
	}
	put(backup.ManifestName, mb)
	if mac != "" {
		put(backup.MACName, []byte(mac))
	}
	for _, n := range names {
		put(n, files[n])
	}
	tw.Close()
	aw.Close()
	return out.Bytes()
}

// attackerFiles are what the attacker packed: a vault of their
// own (with their identity) and no request log.
func attackerFiles(t *testing.T) map[string][]byte {
	t.Helper()
	a := newDataDir(t, "")
	snap := filepath.Join(t.TempDir(), "vault.db")
	if _, err := a.vdb.W.Exec(`VACUUM INTO ?`, snap); err != nil {
		t.Fatal(err)
	}
	vb, _ := os.ReadFile(snap)
	ib, _ := os.ReadFile(filepath.Join(a.dir, vault.IdentityFileName))
	return map[string][]byte{store.VaultFile: vb, vault.IdentityFileName: ib}
}

// Issue 11 item 5: an archive built by someone else and encrypted to the
// public recipient is refused, with or without a made-up MAC, even with
// Force, and changes nothing in the data dir.
func TestRestoreRefusesForgedArchive(t *testing.T) {
	d := newDataDir(t, "")
	ctx := context.Background()
	files := attackerFiles(t)
	recipient := d.recipient(t)
	opts := restoreOpts(t, d.dir, d.ks)
	opts.Force = true
	opts.ReplaceIdentity = true
	d.vdb.Close()
	d.ldb.Close()
	before := snapshotDir(t, d.dir)
	for _, tc := range []struct {
		name, format, mac string
		want              error
		allowUnauth       bool
	}{
		{"no mac", backup.Format, "", backup.ErrNotAuthentic, false},
		{"made-up mac", backup.Format, strings.Repeat("ab", 32), backup.ErrNotAuthentic, false},
		{"made-up mac, allow unauthenticated", backup.Format, strings.Repeat("ab", 32), backup.ErrNotAuthentic, true},
		{"old format", backup.FormatV1, "", backup.ErrUnauthenticated, false},
	} {
		archive := forge(t, recipient, tc.format, tc.mac, files)
		o := opts
		o.AllowUnauthenticated = tc.allowUnauth
		if _, err := backup.Restore(ctx, bytes.NewReader(archive), o); !errors.Is(err, tc.want) {
			t.Fatalf("%s: %v, want %v", tc.name, err, tc.want)
		}
		if after := snapshotDir(t, d.dir); after != before {
			t.Fatalf("%s: a refused restore changed the data dir:\n%s\n%s", tc.name, before, after)
		}
	}
}

// A genuine archive whose manifest was changed (re-encrypted by someone
// who could decrypt it, e.g. with a stolen old key) fails its MAC.
func TestRestoreRefusesEditedManifest(t *testing.T) {
	d := newDataDir(t, "")
	ctx := context.Background()
	var buf bytes.Buffer
	if _, err := backup.Create(ctx, &buf, d.options()); err != nil {
		t.Fatal(err)
	}
	ids, _ := backup.Identities(d.ks)
	ar, err := age.Decrypt(&buf, ids...)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(ar)
	files := map[string][]byte{}
	var mac string
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		b, _ := io.ReadAll(tr)
		switch h.Name {
		case backup.MACName:
			mac = string(b)
		case backup.ManifestName:
		default:
			files[h.Name] = b
		}
	}
	if len(mac) != 64 || len(files) != 3 {
		t.Fatalf("archive: mac %q, files %d", mac, len(files))
	}
	delete(files, store.LogFile) // the manifest now leaves the log out
	archive := forge(t, d.recipient(t), backup.Format, mac, files)
	dst := filepath.Join(t.TempDir(), "restored")
	if _, err := backup.Restore(ctx, bytes.NewReader(archive), restoreOpts(t, dst, d.ks)); !errors.Is(err, backup.ErrNotAuthentic) {
		t.Fatalf("edited manifest: %v", err)
	}
}

// A restore over a data dir with the same identity keeps it as it is.
func TestRestoreSameIdentityKept(t *testing.T) {
	d := newDataDir(t, "")
	ctx := context.Background()
	var buf bytes.Buffer
	if _, err := backup.Create(ctx, &buf, d.options()); err != nil {
		t.Fatal(err)
	}
	o := restoreOpts(t, d.dir, d.ks)
	o.Force = true
	d.vdb.Close()
	d.ldb.Close()
	res, err := backup.Restore(ctx, &buf, o)
	if err != nil || res.IdentityMovedAside != "" || strings.Contains(strings.Join(res.Restored, ","), vault.IdentityFileName) {
		t.Fatalf("same identity: %+v %v", res, err)
	}
}

// Item 14: the first release's backup (testdata/upgrade/v1) restores only
// with AllowUnauthenticated, and then opens with its identity.
func TestRestoreFirstReleaseBackup(t *testing.T) {
	tmp := t.TempDir()
	id := filepath.Join(tmp, "identity.txt")
	testutil.WriteFirstReleaseFile(t, "backup.age", filepath.Join(tmp, "backup.age"))
	testutil.WriteFirstReleaseFile(t, "data/identity.txt", id)
	ks := vault.KeySource{IdentityFile: id}
	dst := filepath.Join(tmp, "restored")
	archive, _ := os.ReadFile(filepath.Join(tmp, "backup.age"))
	o := restoreOpts(t, dst, ks)
	if _, err := backup.Restore(context.Background(), bytes.NewReader(archive), o); !errors.Is(err, backup.ErrUnauthenticated) {
		t.Fatalf("first-release backup without the flag: %v", err)
	}
	if entries, _ := os.ReadDir(dst); len(entries) != 1 {
		t.Fatalf("a refused restore left %d files", len(entries))
	}
	o.AllowUnauthenticated = true
	res, err := backup.Restore(context.Background(), bytes.NewReader(archive), o)
	if err != nil || res.Authenticated || res.Manifest.Format != backup.FormatV1 {
		t.Fatalf("with the flag: %+v %v", res, err)
	}
	vdb, err := store.OpenVault(dst)
	if err != nil {
		t.Fatal(err)
	}
	defer vdb.Close()
	v, err := vault.Open(context.Background(), vdb, vault.KeySource{DataDir: dst}, vault.Options{})
	if err != nil {
		t.Fatal(err)
	}
	accts, _ := store.ListAccounts(context.Background(), vdb)
	if len(accts) != 1 || accts[0].Name != "pool" {
		t.Fatalf("accounts %+v", accts)
	}
	if s, err := v.Secrets(context.Background(), accts[0].ID); err != nil || !strings.HasPrefix(s.APIKey, "sk-ant-") {
		t.Fatalf("secret: %v", err)
	}
}
