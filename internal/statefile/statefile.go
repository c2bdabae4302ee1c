// Package statefile checks the data directory and the state files in it
// before anything opens them, as ssh checks ~/.ssh: the directory and every
// file must belong to the user claudeflare runs as, a file must be a
// regular file (never a symbolic link: a planted link would make us read
// or overwrite whatever it points to, as root perhaps) and must not be open
// to group or others. Problems are *Error values: one line saying what is
// wrong, and a hint saying what to do.
package statefile

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
)

// Names are the state files claudeflare keeps in its data directory:
// the vault and the request log with SQLite's -wal and -shm files, the
// default master identity and the daemon's lock.
var Names = []string{
	"vault.db", "vault.db-wal", "vault.db-shm",
	"log.db", "log.db-wal", "log.db-shm",
	"identity.txt",
	LockName,
}

// Error is a data dir or state file that is not safe to use.
type Error struct {
	// Path is the file or directory.
	Path string
	// Msg is one line that names Path and says what is wrong.
	Msg string
	// Advice says what to do about it.
	Advice string
}

func (e *Error) Error() string { return e.Msg }

// Hint is the line that tells the user what to do (Advice). Callers find
// it with errors.As(err, &h) for h an interface{ Hint() string }.
func (e *Error) Hint() string { return e.Advice }

// geteuid is os.Geteuid; tests do not change it (they chown files instead).
var geteuid = os.Geteuid

// userName names uid for people: "claudeflare (uid 998)", or "uid 998"
// when it has no name.
func userName(uid int) string {
	if u, err := user.LookupId(strconv.Itoa(uid)); err == nil && u.Username != "" {
		return fmt.Sprintf("%s (uid %d)", u.Username, uid)
	}
	return fmt.Sprintf("uid %d", uid)
}

// sudoUser is the argument of sudo -u for uid.
func sudoUser(uid int) string {
	if u, err := user.LookupId(strconv.Itoa(uid)); err == nil && u.Username != "" {
		return u.Username
	}
	return "'#" + strconv.Itoa(uid) + "'"
}

func ownerOf(fi fs.FileInfo) (int, bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, false
	}
	return int(st.Uid), true
}

// checkOwner refuses fi when another user owns it. what is "the data dir"
// or the file's base name.
func checkOwner(path, what string, fi fs.FileInfo) error {
	uid, ok := ownerOf(fi)
	if !ok {
		return nil
	}
	me := geteuid()
	if uid == me {
		return nil
	}
	return &Error{
		Path:   path,
		Msg:    fmt.Sprintf("%s is owned by %s, not by %s who runs claudeflare", path, userName(uid), userName(me)),
		Advice: fmt.Sprintf("%s is owned by %s; run as that user: sudo -u %s claudeflare ...", what, sudoUser(uid), sudoUser(uid)),
	}
}

// CheckDir checks the data directory dir, which must exist: a directory
// (a symbolic link to one is fine: the link is the administrator's
// choice, and what it points to is checked) owned by the user running
// claudeflare. It returns the directory's mode.
func CheckDir(dir string) (fs.FileMode, error) {
	fi, err := os.Stat(dir)
	if err != nil {
		return 0, fmt.Errorf("data dir: %w", err)
	}
	if !fi.IsDir() {
		return 0, &Error{Path: dir, Msg: fmt.Sprintf("data dir %s is not a directory", dir),
			Advice: "point --data-dir or CLAUDEFLARE_DATA_DIR at a directory"}
	}
	if err := checkOwner(dir, "the data dir", fi); err != nil {
		e := err.(*Error)
		e.Msg = "data dir " + e.Msg
		return 0, e
	}
	return fi.Mode().Perm(), nil
}

// EnsureDir creates the data directory with mode 0700 if needed, checks
// it (CheckDir) and tightens it to 0700 when it is more open: the
// directory is ours, and every state file in it is checked on its own.
func EnsureDir(dir string) error {
	if _, err := os.Lstat(dir); errors.Is(err, fs.ErrNotExist) {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return fmt.Errorf("create data dir: %w", err)
		}
	}
	mode, err := CheckDir(dir)
	if err != nil {
		return err
	}
	if mode&0o077 != 0 {
		if err := os.Chmod(dir, 0o700); err != nil {
			return fmt.Errorf("restrict data dir: %w", err)
		}
	}
	return nil
}

// Check checks the state file at path without opening it: a missing file
// is fine; otherwise it must be a regular file, not a symbolic link, owned
// by the user running claudeflare and not open to group or others.
func Check(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("check %s: %w", path, err)
	}
	return checkInfo(path, fi)
}

// Databases are the state files that the store checks when it opens a
// database (store.Open): a bad request log must not stop the daemon, which
// serves without one.
var Databases = map[string]bool{
	"vault.db": true, "vault.db-wal": true, "vault.db-shm": true,
	"log.db": true, "log.db-wal": true, "log.db-shm": true,
}

// CheckFiles checks the state files (Names) in dir with CheckIn, but for
// the Databases, which are checked as they are opened.
func CheckFiles(dir string) error {
	for _, n := range Names {
		if Databases[n] {
			continue
		}
		if err := CheckIn(dir, n); err != nil {
			return err
		}
	}
	return nil
}

// CheckIn checks the state file name in dir as Check does, except that
// the mode of identity.txt is left to the code that reads the key (it
// refuses a key file open to others in its own words, for any key file);
// its owner and type are checked here.
func CheckIn(dir, name string) error {
	path := filepath.Join(dir, name)
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("check %s: %w", path, err)
	}
	if name == IdentityName {
		return checkKind(path, fi)
	}
	return checkInfo(path, fi)
}

// IdentityName is the default master identity file in the data dir.
const IdentityName = "identity.txt"

// checkKind checks that fi is a regular file (not a link) of ours.
func checkKind(path string, fi fs.FileInfo) error {
	name := filepath.Base(path)
	switch {
	case fi.Mode()&fs.ModeSymlink != 0:
		return &Error{Path: path,
			Msg:    fmt.Sprintf("%s is a symbolic link; claudeflare does not follow links for its state files", path),
			Advice: fmt.Sprintf("if you did not make it, someone else can write to the data dir; remove the link (rm %s) and put the file itself there", path)}
	case !fi.Mode().IsRegular():
		return &Error{Path: path, Msg: fmt.Sprintf("%s is not a regular file", path),
			Advice: fmt.Sprintf("move %s out of the data dir", path)}
	}
	return checkOwner(path, name, fi)
}

func checkInfo(path string, fi fs.FileInfo) error {
	if err := checkKind(path, fi); err != nil {
		return err
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return &Error{Path: path,
			Msg:    fmt.Sprintf("%s is open to group or others (mode %04o)", path, perm),
			Advice: fmt.Sprintf("chmod 600 %s", path)}
	}
	return nil
}

// OpenFile opens the state file at path as os.OpenFile does, but never
// through a symbolic link (O_NOFOLLOW), and checks what it opened as
// Check does. A file it creates gets perm (which should be 0600).
func OpenFile(path string, flag int, perm fs.FileMode) (*os.File, error) {
	f, err := os.OpenFile(path, flag|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, perm)
	if err != nil {
		if errors.Is(err, syscall.ELOOP) {
			if fi, lerr := os.Lstat(path); lerr == nil {
				return nil, checkInfo(path, fi)
			}
		}
		return nil, err
	}
	fi, err := f.Stat()
	if err == nil {
		err = checkInfo(path, fi)
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}
