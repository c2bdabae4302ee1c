package statefile

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// otherUID is a user that is not us: nobody.
const otherUID = 65534

// chownOther gives path to another user, or skips the test when that is
// not possible (not root).
func chownOther(t *testing.T, path string) {
	t.Helper()
	if err := os.Lchown(path, otherUID, otherUID); err != nil {
		if os.Geteuid() != 0 {
			t.Skip("not root and chown failed: cannot make a file of another user")
		}
		t.Fatal(err)
	}
}

// wantError requires a one-line *Error that names path and contains sub,
// with a hint containing hint.
func wantError(t *testing.T, err error, path, sub, hint string) {
	t.Helper()
	var se *Error
	if !errors.As(err, &se) {
		t.Fatalf("got %v (%T), want a *statefile.Error", err, err)
	}
	msg := err.Error()
	if strings.Contains(msg, "\n") || !strings.Contains(msg, path) || !strings.Contains(msg, sub) {
		t.Errorf("message %q: want one line naming %s and saying %q", msg, path, sub)
	}
	if !strings.Contains(se.Hint(), hint) || strings.Contains(se.Hint(), "\n") {
		t.Errorf("hint %q: want %q", se.Hint(), hint)
	}
}

func TestCheck(t *testing.T) {
	dir := t.TempDir()
	p := func(n string) string { return filepath.Join(dir, n) }

	if err := Check(p("missing")); err != nil {
		t.Errorf("missing file: %v", err)
	}
	os.WriteFile(p("ok"), []byte("x"), 0o600)
	if err := Check(p("ok")); err != nil {
		t.Errorf("0600 file: %v", err)
	}

	os.WriteFile(p("open"), []byte("x"), 0o600)
	os.Chmod(p("open"), 0o644)
	wantError(t, Check(p("open")), p("open"), "open to group or others (mode 0644)", "chmod 600 "+p("open"))
	if st, _ := os.Stat(p("open")); st.Mode().Perm() != 0o644 {
		t.Errorf("the mode was changed to %04o: refuse, do not fix", st.Mode().Perm())
	}
	os.WriteFile(p("groupw"), []byte("x"), 0o600)
	os.Chmod(p("groupw"), 0o620)
	wantError(t, Check(p("groupw")), p("groupw"), "mode 0620", "chmod 600")

	os.Symlink(p("ok"), p("link"))
	wantError(t, Check(p("link")), p("link"), "is a symbolic link", "rm "+p("link"))

	os.Mkdir(p("adir"), 0o700)
	wantError(t, Check(p("adir")), p("adir"), "is not a regular file", "move")

	os.WriteFile(p("theirs"), []byte("x"), 0o600)
	chownOther(t, p("theirs"))
	wantError(t, Check(p("theirs")), p("theirs"), "is owned by "+userName(otherUID)+", not by "+userName(os.Geteuid()),
		"theirs is owned by "+sudoUser(otherUID)+"; run as that user: sudo -u "+sudoUser(otherUID)+" claudeflare ...")
}

// TestOpenFileNeverFollowsALink: a planted link is refused and what it
// points to is left byte-identical (the daemon.lock attack).
func TestOpenFileNeverFollowsALink(t *testing.T) {
	dir := t.TempDir()
	victim := filepath.Join(dir, "victim")
	orig := []byte("precious content\n")
	os.WriteFile(victim, orig, 0o600)
	lock := filepath.Join(dir, "daemon.lock")
	os.Symlink(victim, lock)
	f, err := OpenFile(lock, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err == nil {
		f.Close()
		t.Fatal("opened a symbolic link")
	}
	wantError(t, err, lock, "is a symbolic link", "rm "+lock)
	if got, _ := os.ReadFile(victim); !bytes.Equal(got, orig) {
		t.Errorf("the link's target changed: %q", got)
	}
	// A dangling link is not created through either.
	os.Remove(lock)
	os.Symlink(filepath.Join(dir, "new"), lock)
	if f, err := OpenFile(lock, os.O_RDWR|os.O_CREATE, 0o600); err == nil {
		f.Close()
		t.Fatal("opened a dangling link")
	}
	if _, err := os.Lstat(filepath.Join(dir, "new")); !os.IsNotExist(err) {
		t.Errorf("a file was created through the dangling link: %v", err)
	}
}

func TestOpenFileChecksWhatItOpened(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "vault.db")
	f, err := OpenFile(p, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	if st, _ := os.Stat(p); st.Mode().Perm() != 0o600 {
		t.Errorf("created with mode %04o", st.Mode().Perm())
	}
	os.Chmod(p, 0o640)
	if _, err := OpenFile(p, os.O_RDWR, 0); err == nil {
		t.Error("opened a file open to the group")
	}
	os.Chmod(p, 0o600)
	chownOther(t, p)
	_, err = OpenFile(p, os.O_RDWR, 0)
	wantError(t, err, p, "owned by "+userName(otherUID), "sudo -u "+sudoUser(otherUID))
}

func TestEnsureDir(t *testing.T) {
	base := t.TempDir()
	dir := filepath.Join(base, "a", "data")
	if err := EnsureDir(dir); err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(dir); st.Mode().Perm() != 0o700 {
		t.Errorf("created with mode %04o", st.Mode().Perm())
	}
	// Ours but too open: tightened, as before.
	os.Chmod(dir, 0o755)
	if err := EnsureDir(dir); err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(dir); st.Mode().Perm() != 0o700 {
		t.Errorf("not tightened: %04o", st.Mode().Perm())
	}
	// A link to a directory of ours is the administrator's choice.
	link := filepath.Join(base, "link")
	os.Symlink(dir, link)
	if err := EnsureDir(link); err != nil {
		t.Errorf("link to our dir: %v", err)
	}
	// Another user's: refused, and left as it was.
	theirs := filepath.Join(base, "theirs")
	os.Mkdir(theirs, 0o755)
	chownOther(t, theirs)
	err := EnsureDir(theirs)
	wantError(t, err, theirs, "data dir "+theirs+" is owned by "+userName(otherUID)+", not by",
		"the data dir is owned by "+sudoUser(otherUID)+"; run as that user: sudo -u "+sudoUser(otherUID)+" claudeflare ...")
	if st, _ := os.Stat(theirs); st.Mode().Perm() != 0o755 {
		t.Errorf("another user's dir was changed to %04o", st.Mode().Perm())
	}
	// Through a link too.
	link2 := filepath.Join(base, "link2")
	os.Symlink(theirs, link2)
	if err := EnsureDir(link2); err == nil {
		t.Error("a link to another user's dir was accepted")
	}
	// A file is not a data dir.
	file := filepath.Join(base, "file")
	os.WriteFile(file, nil, 0o600)
	wantError(t, EnsureDir(file), file, "is not a directory", "--data-dir")
}

func TestCheckFilesCoversEveryStateFile(t *testing.T) {
	for _, name := range Names {
		dir := t.TempDir()
		os.Symlink("/dev/null", filepath.Join(dir, name))
		err := CheckFiles(dir)
		if Databases[name] {
			// store.Open checks these (store's TestOpenRefusesUnsafeFiles).
			if err != nil {
				t.Errorf("%s: CheckFiles checked a database: %v", name, err)
			}
			if err := CheckIn(dir, name); err == nil || !strings.Contains(err.Error(), name) {
				t.Errorf("%s: CheckIn did not refuse a link: %v", name, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("%s: a link was not refused: %v", name, err)
		}
	}
}

// TestIdentityModeLeftToTheKeyReader: CheckFiles refuses a linked or
// foreign identity.txt but leaves its mode to the vault, which refuses a
// key file open to others in its own words.
func TestIdentityModeLeftToTheKeyReader(t *testing.T) {
	dir := t.TempDir()
	id := filepath.Join(dir, IdentityName)
	os.WriteFile(id, []byte("x"), 0o600)
	os.Chmod(id, 0o640)
	if err := CheckFiles(dir); err != nil {
		t.Errorf("mode of identity.txt: %v", err)
	}
	os.Remove(id)
	os.Symlink("/dev/null", id)
	if err := CheckFiles(dir); err == nil {
		t.Error("linked identity.txt accepted")
	}
}
