package commands_test

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/claudeflare/claudeflare/store"
)

// cleanup runs at nice 10 on every thread, so that a cron cleanup yields
// the CPU to the daemon. The test holds the log's write lock so that the
// cleanup process waits, and reads its threads' nice values meanwhile.
func TestCleanupRunsAtLowPriority(t *testing.T) {
	c := newCLI(t)
	c.MustRun("", "init")
	db, err := store.OpenLog(filepath.Join(c.dir, "data"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	tx, err := db.W.Begin() // BEGIN IMMEDIATE: the write lock
	if err != nil {
		t.Fatal(err)
	}
	cmd := c.Cmd("", "cleanup", "--older-than", "1d")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	deadline := time.Now().Add(8 * time.Second)
	var nices []int
	for time.Now().Before(deadline) {
		nices = threadNices(cmd.Process.Pid)
		if len(nices) > 0 && allEqual(nices, 10) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	tx.Rollback()
	if err := <-done; err != nil {
		t.Fatalf("cleanup: %v", err)
	}
	if len(nices) == 0 || !allEqual(nices, 10) {
		t.Fatalf("cleanup threads' nice values %v, want all 10", nices)
	}
}

// threadNices reads field 19 (nice) of /proc/PID/task/*/stat.
func threadNices(pid int) []int {
	dir := filepath.Join("/proc", strconv.Itoa(pid), "task")
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	var out []int
	for _, ent := range entries {
		b, err := os.ReadFile(filepath.Join(dir, ent.Name(), "stat"))
		if err != nil {
			continue
		}
		// The command name (field 2) may hold spaces; fields after ")" are plain.
		rest := string(b[strings.LastIndexByte(string(b), ')')+2:])
		f := strings.Fields(rest)
		if len(f) > 16 {
			if n, err := strconv.Atoi(f[16]); err == nil {
				out = append(out, n)
			}
		}
	}
	return out
}

func allEqual(xs []int, v int) bool {
	for _, x := range xs {
		if x != v {
			return false
		}
	}
	return true
}
