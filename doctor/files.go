package doctor

import (
	"errors"
	"os"

	"github.com/claudeflare/claudeflare/internal/statefile"
)

// files checks, as ssh checks ~/.ssh, that the data dir and every state
// file in it (vault.db, log.db and their -wal and -shm, identity.txt,
// daemon.lock) belong to the user running claudeflare, that no state file
// is a symbolic link or other non-regular file, and that none is open to
// group or others. Each problem is one Error result; the commands that
// open these files refuse them the same way.
func (d *doctor) files() {
	dir := d.opts.DataDir
	if _, err := os.Stat(dir); err != nil {
		return // dataDir reported it
	}
	bad := false
	report := func(err error) {
		bad = true
		var se *statefile.Error
		if errors.As(err, &se) {
			d.add("files", Error, se.Advice, "%s", se.Msg)
			return
		}
		d.add("files", Error, "check the data dir's permissions", "%v", err)
	}
	if _, err := statefile.CheckDir(dir); err != nil {
		report(err)
	}
	for _, name := range statefile.Names {
		// The key check reports the mode of identity.txt.
		if err := statefile.CheckIn(dir, name); err != nil {
			report(err)
		}
	}
	if !bad {
		d.add("files", OK, "", "the data dir and its state files are yours, not links, not open to others")
	}
}
