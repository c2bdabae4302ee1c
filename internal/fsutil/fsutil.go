// Package fsutil writes files that must survive a crash, the one way
// claudeflare does it everywhere: a temp file in the same directory,
// written, fsynced, renamed (or hard-linked, to refuse an existing file)
// into place, then the directory fsynced. A crash or an error leaves the
// target untouched. It also holds the non-blocking flock every lock of
// claudeflare's is taken with.
package fsutil

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// File is a file being written through a temp file in the directory of
// its target. Commit puts it in place; Abort (safe after Commit, so it
// can be deferred) removes the temp file.
type File struct {
	*os.File
	path string
	done bool
}

// Create starts writing path through a temp file with mode perm.
func Create(path string, perm fs.FileMode) (*File, error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return nil, fmt.Errorf("create %s: %w", path, err)
	}
	if err := f.Chmod(perm); err != nil {
		f.Close()
		os.Remove(f.Name())
		return nil, fmt.Errorf("create %s: %w", path, err)
	}
	return &File{File: f, path: path}, nil
}

// finish fsyncs and closes the temp file.
func (f *File) finish() error {
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", f.path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("close %s: %w", f.path, err)
	}
	return nil
}

// Commit fsyncs the file, renames it over its target and fsyncs the
// directory. On an error before the rename the target is untouched and
// the temp file removed.
func (f *File) Commit() error {
	defer f.Abort()
	if err := f.finish(); err != nil {
		return err
	}
	if err := os.Rename(f.Name(), f.path); err != nil {
		return fmt.Errorf("rename into %s: %w", f.path, err)
	}
	f.done = true
	return SyncDir(filepath.Dir(f.path))
}

// CommitExclusive is Commit that refuses to replace an existing target:
// the file is hard-linked into place (atomic and exclusive), so an error
// says "<path> already exists" if one is there.
func (f *File) CommitExclusive() error {
	defer f.Abort()
	if err := f.finish(); err != nil {
		return err
	}
	if err := os.Link(f.Name(), f.path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("%s already exists", f.path)
		}
		return fmt.Errorf("create %s: %w", f.path, err)
	}
	return SyncDir(filepath.Dir(f.path))
}

// Abort removes the temp file unless Commit renamed it into place.
func (f *File) Abort() {
	if f.done {
		return
	}
	f.Close()
	os.Remove(f.Name())
	f.done = true
}

// WriteFile writes data to path atomically (Create, Write, Commit).
func WriteFile(path string, data []byte, perm fs.FileMode) error {
	return write(path, data, perm, (*File).Commit)
}

// WriteFileExclusive writes data to path atomically, failing if path
// exists (Create, Write, CommitExclusive).
func WriteFileExclusive(path string, data []byte, perm fs.FileMode) error {
	return write(path, data, perm, (*File).CommitExclusive)
}

func write(path string, data []byte, perm fs.FileMode, commit func(*File) error) error {
	f, err := Create(path, perm)
	if err != nil {
		return err
	}
	defer f.Abort()
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return commit(f)
}

// SyncDir fsyncs the directory dir, so that a file created, renamed or
// removed in it stays so after a crash.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}
