package backup_test

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"filippo.io/age"

	"github.com/claudeflare/claudeflare/backup"
	"github.com/claudeflare/claudeflare/store"
	"github.com/claudeflare/claudeflare/vault"
)

// reseal decrypts a backup made of d, lets edit change the bytes of each
// entry (by name), and encrypts the result again to the vault's own
// master recipients: what someone holding the backup and the recipient,
// or a disk flipping bits under an archive, can produce.
func reseal(t *testing.T, d *dataDir, archive []byte, edit func(name string, b []byte) []byte) []byte {
	t.Helper()
	ids, err := backup.Identities(d.ks)
	if err != nil {
		t.Fatal(err)
	}
	ar, err := age.Decrypt(bytes.NewReader(archive), ids...)
	if err != nil {
		t.Fatal(err)
	}
	info, err := vault.ReadMaster(context.Background(), d.vdb)
	if err != nil {
		t.Fatal(err)
	}
	to, err := age.ParseRecipients(strings.NewReader(strings.Join(info.Recipients, "\n")))
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	aw, err := age.Encrypt(&out, to...)
	if err != nil {
		t.Fatal(err)
	}
	tr, tw := tar.NewReader(ar), tar.NewWriter(aw)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		b = edit(hdr.Name, b)
		hdr.Size = int64(len(b))
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := aw.Close(); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

// treeHashes hashes every file under dir by its path relative to dir.
func treeHashes(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, de fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if de.IsDir() {
			out[rel+"/"] = "dir"
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		s := sha256.Sum256(b)
		out[rel] = hex.EncodeToString(s[:])
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestRestoreRefusesWrongChecksum: one file of the archive no longer
// matches the checksum its manifest gives, though it is still a sound
// SQLite database of the right size and the archive opens with the right
// key. Restore refuses it, naming the file, and touches nothing: not a
// fresh data dir, not a live one even with Force.
func TestRestoreRefusesWrongChecksum(t *testing.T) {
	d := newDataDir(t, "")
	ctx := context.Background()
	var buf bytes.Buffer
	if _, err := backup.Create(ctx, &buf, d.options()); err != nil {
		t.Fatal(err)
	}
	ids, err := backup.Identities(d.ks)
	if err != nil {
		t.Fatal(err)
	}
	keys, err := vault.BackupKeys(d.ks)
	if err != nil {
		t.Fatal(err)
	}
	// The request log's rows say /v1/messagex instead of /v1/messages:
	// same size, no index touched, integrity_check still passes.
	edited := 0
	bad := reseal(t, d, buf.Bytes(), func(name string, b []byte) []byte {
		if name != store.LogFile {
			return b
		}
		edited = bytes.Count(b, []byte("/v1/messages"))
		return bytes.ReplaceAll(b, []byte("/v1/messages"), []byte("/v1/messagex"))
	})
	if edited == 0 {
		t.Fatal("the archive's log.db holds no row to edit")
	}
	// The re-sealed archive without the edit restores: the refusal below
	// is for the checksum alone.
	good := reseal(t, d, buf.Bytes(), func(_ string, b []byte) []byte { return b })
	okDir := filepath.Join(t.TempDir(), "ok")
	if _, err := backup.Restore(ctx, bytes.NewReader(good), backup.RestoreOptions{DataDir: okDir, Identities: ids, BackupKeys: keys}); err != nil {
		t.Fatalf("the re-sealed archive, unedited, does not restore: %v", err)
	}

	// Into a fresh data dir.
	fresh := filepath.Join(t.TempDir(), "fresh")
	if err := os.MkdirAll(fresh, 0o700); err != nil {
		t.Fatal(err)
	}
	before := treeHashes(t, fresh)
	_, err = backup.Restore(ctx, bytes.NewReader(bad), backup.RestoreOptions{DataDir: fresh, Identities: ids, BackupKeys: keys})
	if err == nil {
		t.Fatal("an archive whose log.db does not match the manifest's checksum was restored")
	}
	if !strings.Contains(err.Error(), store.LogFile) {
		t.Errorf("the refusal does not name the damaged file: %v", err)
	}
	after := treeHashes(t, fresh)
	delete(after, backup.LockFile) // the restore's own lock
	if !maps.Equal(before, after) {
		t.Fatalf("a refused restore changed a fresh data dir: %v -> %v", before, after)
	}

	// Over a live data dir with Force.
	e := newDataDir(t, "")
	e.vdb.Close()
	e.ldb.Close()
	before = treeHashes(t, e.dir)
	_, err = backup.Restore(ctx, bytes.NewReader(bad), backup.RestoreOptions{DataDir: e.dir, Identities: append(ids, mustIdentities(t, e.ks)...), BackupKeys: keys, Force: true, ReplaceIdentity: true})
	if err == nil {
		t.Fatal("an archive with a wrong checksum replaced a live data dir")
	}
	after = treeHashes(t, e.dir)
	if _, had := before[backup.LockFile]; !had {
		delete(after, backup.LockFile)
	}
	if !maps.Equal(before, after) {
		t.Fatalf("a refused restore changed the live data dir: %v -> %v", before, after)
	}
}

func mustIdentities(t *testing.T, ks vault.KeySource) []age.Identity {
	t.Helper()
	ids, err := backup.Identities(ks)
	if err != nil {
		t.Fatal(err)
	}
	return ids
}

// TestRestoreRemovesStaleWAL: the data dir restored over (with Force) was
// left by a process that died with transactions still in its WAL files.
// Those WALs belong to the old databases: the restored data must be the
// archive's alone, whole, with none of the old transactions replayed
// into it.
func TestRestoreRemovesStaleWAL(t *testing.T) {
	d := newDataDir(t, "")
	ctx := context.Background()
	var buf bytes.Buffer
	if _, err := backup.Create(ctx, &buf, d.options()); err != nil {
		t.Fatal(err)
	}
	o := restoreOpts(t, "", d.ks)

	// The live data dir: more rows, still in the WAL when it "crashed".
	e := newDataDir(t, "")
	e.insert(t, "unflushed", 300)
	wals := map[string][]byte{}
	for _, f := range []string{store.LogFile + "-wal", store.VaultFile + "-wal"} {
		b, err := os.ReadFile(filepath.Join(e.dir, f))
		if err != nil || len(b) == 0 {
			t.Fatalf("no WAL to leave behind: %s: %v", f, err)
		}
		wals[f] = b
	}
	e.vdb.Close()
	e.ldb.Close()
	for f, b := range wals {
		if err := os.WriteFile(filepath.Join(e.dir, f), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}

	o.DataDir, o.Force, o.ReplaceIdentity = e.dir, true, true
	res, err := backup.Restore(ctx, bytes.NewReader(buf.Bytes()), o)
	if err != nil {
		t.Fatal(err)
	}
	for f := range wals {
		if _, err := os.Stat(filepath.Join(e.dir, f)); err == nil {
			t.Errorf("%s of the old databases left next to the restored ones (removed: %v)", f, res.Removed)
		}
	}
	for _, f := range []string{store.LogFile, store.VaultFile} {
		if err := integrityOK(filepath.Join(e.dir, f)); err != nil {
			t.Fatalf("restored %s: %v", f, err)
		}
	}
	if n := openRestored(t, e.dir, vault.KeySource{DataDir: e.dir}, d.names); n != 200 {
		t.Fatalf("restored log has %d requests, want the archive's 200", n)
	}
}

// integrityOK runs PRAGMA integrity_check on a database file, as a
// daemon opening it would see it (WAL files included).
func integrityOK(path string) error {
	db, err := store.OpenLog(filepath.Dir(path))
	if filepath.Base(path) == store.VaultFile {
		db, err = store.OpenVault(filepath.Dir(path))
	}
	if err != nil {
		return err
	}
	defer db.Close()
	var rows []string
	if err := db.R.Select(&rows, "PRAGMA integrity_check"); err != nil {
		return err
	}
	if len(rows) != 1 || rows[0] != "ok" {
		return fmt.Errorf("integrity_check: %s", strings.Join(rows, "; "))
	}
	return nil
}

// TestRestoreRefusesNewerLogSchema: a backup made by a newer claudeflare,
// whose request log has a schema this binary does not know, is refused
// with a hint to upgrade, and nothing is touched.
func TestRestoreRefusesNewerLogSchema(t *testing.T) {
	d := newDataDir(t, "")
	ctx := context.Background()
	if _, err := d.ldb.W.Exec(fmt.Sprintf("PRAGMA user_version = %d", store.SchemaVersion("log")+1)); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if _, err := backup.Create(ctx, &buf, d.options()); err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(t.TempDir(), "data")
	if err := os.MkdirAll(dst, 0o700); err != nil {
		t.Fatal(err)
	}
	_, err := backup.Restore(ctx, bytes.NewReader(buf.Bytes()), restoreOpts(t, dst, d.ks))
	if !errors.Is(err, store.ErrTooNew) || !strings.Contains(err.Error(), store.LogFile) {
		t.Fatalf("restore of a log with a newer schema: %v; want %v naming %s", err, store.ErrTooNew, store.LogFile)
	}
	after := treeHashes(t, dst)
	delete(after, backup.LockFile)
	delete(after, "./")
	if len(after) != 0 {
		t.Fatalf("a refused restore left %v", after)
	}
}
