package e2e

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/claudeflare/claudeflare/internal/testutil"
	"github.com/claudeflare/claudeflare/store"
)

const storageConfig = `
log_level = "info"

[log]
flush_interval = "100ms"
`

// logFS puts the request log on a small tmpfs of its own, so that the
// log's disk can fill up or turn read-only while the vault's does not:
// log.db, log.db-wal and log.db-shm are files of the tmpfs, each
// bind-mounted over its name in the data dir (a symbolic link would be
// refused: claudeflare does not follow links for its state files). It
// needs the right to mount (root, or CAP_SYS_ADMIN); ok is false without
// it.
func logFS(t *testing.T, w *world, size string) (dir string, ok bool) {
	t.Helper()
	dir = filepath.Join(w.dir, "logfs")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if os.Getenv("CLAUDEFLARE_E2E_NO_MOUNT") != "" {
		t.Log("CLAUDEFLARE_E2E_NO_MOUNT: using the fallback")
		return dir, false
	}
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size="+size+",mode=0700"); err != nil {
		t.Logf("cannot mount a tmpfs (%v): using the fallback", err)
		return dir, false
	}
	t.Cleanup(func() { syscall.Unmount(dir, syscall.MNT_DETACH) })
	for _, suffix := range []string{"", "-wal", "-shm"} {
		src := filepath.Join(w.data, store.LogFile+suffix)
		b, err := os.ReadFile(src)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Fatal(err)
		}
		onFS := filepath.Join(dir, store.LogFile+suffix)
		if err := os.WriteFile(onFS, b, 0o600); err != nil {
			t.Fatal(err)
		}
		// The name in the data dir becomes the mount point.
		if err := os.WriteFile(src, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := syscall.Mount(onFS, src, "", syscall.MS_BIND, ""); err != nil {
			t.Fatalf("bind-mount %s: %v", src, err)
		}
		t.Cleanup(func() { syscall.Unmount(src, syscall.MNT_DETACH) })
	}
	return dir, true
}

// fill writes a file into dir until the file system is full.
func fill(t *testing.T, dir string) string {
	t.Helper()
	p := filepath.Join(dir, "filler")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 64<<10)
	for {
		if _, err := f.Write(buf); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("fill: %v", err)
			}
			break
		}
	}
	// The last partial pages too.
	for {
		if _, err := f.Write(buf[:512]); err != nil {
			break
		}
	}
	return p
}

// vaultFiles hashes what of the vault is on disk (the -shm index is
// shared memory that readers touch, so it is left out).
func vaultFiles(t *testing.T, w *world) map[string]string {
	h := hashFiles(t, w.data, store.VaultFile)
	delete(h, store.VaultFile+"-shm")
	return h
}

// steady sends n sequential requests (a third of them streams) and
// requires every one to complete; it returns their request ids and the
// slowest.
func steady(t *testing.T, d *daemon, n int, what string) ([]string, time.Duration) {
	t.Helper()
	c := newClient(20*time.Second, 1)
	defer c.CloseIdleConnections()
	var ids []string
	var slowest time.Duration
	for i := range n {
		r := send(context.Background(), c, d.url, i%3 == 0)
		if r.kind != kComplete {
			t.Fatalf("%s: request %d: %s %d %s\n%s", what, i, r.kind, r.status, r.detail, tail(d.logs(), 3000))
		}
		ids = append(ids, r.id)
		slowest = max(slowest, r.dur())
	}
	return ids, slowest
}

// lossReport is what the daemon says about records it could not write:
// the sum of the counters of whole records dropped or failed, from
// /health's recorder object or from /metrics, whichever says more, and
// for the report every such counter in either.
func lossReport(t *testing.T, d *daemon) (int64, string) {
	t.Helper()
	h := d.health(t)
	var total int64
	var parts []string
	for k := range h.Recorder {
		if strings.Contains(k, "drop") || strings.Contains(k, "fail") || strings.Contains(k, "lost") {
			n := h.recorderCount(k)
			if strings.Contains(k, "record") {
				total += n
			}
			parts = append(parts, fmt.Sprintf("health.recorder.%s=%d", k, n))
		}
	}
	var fromMetrics int64
	for k, v := range d.metrics() {
		// Every name here starts with "claudeflare_recorder": look for
		// "record" in the rest, or dropped payloads would count as records.
		if rest, ok := strings.CutPrefix(k, "claudeflare_recorder"); ok && (strings.Contains(rest, "drop") || strings.Contains(rest, "fail") || strings.Contains(rest, "lost")) {
			parts = append(parts, fmt.Sprintf("%s=%g", k, v))
			if strings.Contains(rest, "record") {
				fromMetrics += int64(v)
			}
		}
	}
	sort.Strings(parts)
	return max(total, fromMetrics), strings.Join(parts, " ")
}

func countLines(logs, substr string) int {
	n := 0
	for _, l := range strings.Split(logs, "\n") {
		if strings.Contains(l, substr) {
			n++
		}
	}
	return n
}

// vaultSettled waits until the vault holds the rate-limit state the
// daemon has in memory (its /metrics): the daemon saves that state a
// moment after the answers that changed it, and from then on, with
// nothing new to save, the vault's files must not change.
func vaultSettled(t *testing.T, w *world, d *daemon) {
	t.Helper()
	var mem, disk map[string]float64
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		mem, disk = memoryUtil(d), vaultUtil(t, w)
		settled := len(mem) > 0
		for k, v := range mem {
			if dv, ok := disk[k]; !ok || dv != v {
				settled = false
			}
		}
		if settled {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the vault never caught up with the daemon's rate-limit state: daemon %v, vault %v", mem, disk)
		}
	}
}

// memoryUtil is each account's utilisation per window as the daemon
// holds it: "account/window" -> ratio (unknown ones are left out).
func memoryUtil(d *daemon) map[string]float64 {
	out := map[string]float64{}
	const prefix = `claudeflare_account_utilization_ratio{`
	for k, v := range d.metrics() {
		labels, ok := strings.CutPrefix(k, prefix)
		if !ok {
			continue
		}
		var account, window string
		for _, kv := range strings.Split(strings.TrimSuffix(labels, "}"), ",") {
			name, val, _ := strings.Cut(kv, "=")
			val = strings.Trim(val, `"`)
			switch name {
			case "account":
				account = val
			case "window":
				window = val
			}
		}
		out[account+"/"+window] = v
	}
	return out
}

// vaultUtil is each account's utilisation per window as the vault holds
// it, read without writing.
func vaultUtil(t *testing.T, w *world) map[string]float64 {
	t.Helper()
	db, err := sql.Open("sqlite3", "file:"+filepath.Join(w.data, store.VaultFile)+"?mode=ro&_busy_timeout=10000")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rows, err := db.Query(`SELECT name, util_5h, util_7d FROM accounts`)
	if err != nil {
		t.Fatalf("read the vault's rate-limit state: %v", err)
	}
	defer rows.Close()
	out := map[string]float64{}
	for rows.Next() {
		var name string
		var u5, u7 sql.NullFloat64
		if err := rows.Scan(&name, &u5, &u7); err != nil {
			t.Fatal(err)
		}
		if u5.Valid {
			out[name+"/5h"] = u5.Float64
		}
		if u7.Valid {
			out[name+"/7d"] = u7.Float64
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// lossAtLeast waits until the daemon reports at least n records lost
// (or the deadline passes) and returns its last report.
func lossAtLeast(t *testing.T, d *daemon, n int64, also func() bool) (int64, string) {
	t.Helper()
	var lost int64
	var report string
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		lost, report = lossReport(t, d)
		if (lost >= n && (also == nil || also())) || time.Now().After(deadline) {
			return lost, report
		}
	}
}

// storageWorld is a world with two accounts and a warmed-up daemon.
func storageWorld(t *testing.T) *world {
	w := newWorld(t, storageConfig, "")
	w.fake.SetMaxRecorded(0)
	w.addOAuth("one")
	w.addAPIKey("two")
	return w
}

// TestLogDiskFull: the log's file system fills up under the running
// daemon. Requests keep being served as fast as before, the daemon
// reports the records it could not write, the vault is not touched, and
// logging resumes once there is room again.
func TestLogDiskFull(t *testing.T) {
	w := storageWorld(t)
	dir, mounted := logFS(t, w, "2m")
	d := w.start()
	_, before := steady(t, d, 30, "before")
	vaultSettled(t, w, d)
	vaultBefore := vaultFiles(t, w)

	var filler string
	if mounted {
		filler = fill(t, dir)
	} else {
		// No tmpfs: cap the size of any file the daemon grows, at the
		// log's current size (the vault does not grow while serving).
		st, err := os.Stat(filepath.Join(w.data, store.LogFile+"-wal"))
		if err != nil {
			t.Fatal(err)
		}
		lim := uint64(st.Size())
		if err := unix.Prlimit(d.pid, unix.RLIMIT_FSIZE, &unix.Rlimit{Cur: lim, Max: unix.RLIM_INFINITY}, nil); err != nil {
			t.Fatalf("prlimit: %v", err)
		}
	}
	ids, during := steady(t, d, 200, "disk full")
	// The records fail at the recorder's next writes, a flush interval on.
	lost, report := lossAtLeast(t, d, int64(len(ids))/2, func() bool { return countLines(d.logs(), "write request log") > 0 })
	errLines := countLines(d.logs(), "write request log")
	t.Logf("disk full: 200 requests served, slowest %s (before: %s); daemon reports %q; %d error lines in its log",
		during.Round(time.Millisecond), before.Round(time.Millisecond), report, errLines)
	if errLines == 0 || errLines > 2 {
		t.Errorf("write errors logged %d times in a second of a full disk: want once (then at most once a minute)", errLines)
	}
	if lost < int64(len(ids))/2 {
		t.Errorf("the daemon does not report the records it lost to a full disk: /health recorder = %v; %s",
			d.health(t).Recorder, report)
	}
	if got := vaultFiles(t, w); !maps.Equal(got, vaultBefore) {
		t.Errorf("vault files changed while the log's disk was full: %v -> %v", vaultBefore, got)
	}

	// Room again: new records are written.
	if mounted {
		os.Remove(filler)
	} else {
		unix.Prlimit(d.pid, unix.RLIMIT_FSIZE, &unix.Rlimit{Cur: unix.RLIM_INFINITY, Max: unix.RLIM_INFINITY}, nil)
	}
	after, _ := steady(t, d, 20, "after")
	if err := d.stop(t); err != nil {
		t.Errorf("daemon exit: %v", err)
	}
	logged, err := loggedIDs(filepath.Join(w.data, store.LogFile))
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range after {
		if !logged[id] {
			t.Errorf("request %s, sent after the disk had room again, is not in the log", id)
			break
		}
	}
	if err := integrity(filepath.Join(w.data, store.LogFile)); err != nil {
		t.Error(err)
	}
}

// TestLogDeleted: log.db (and its -wal and -shm) is deleted under the
// running daemon, as a careless `rm` or a cleanup script would. The proxy
// keeps serving and the vault is not touched; the requests served after
// the deletion must either reach a log file that `claudeflare requests
// list` can read, or be reported as lost.
func TestLogDeleted(t *testing.T) {
	w := storageWorld(t)
	d := w.start()
	steady(t, d, 20, "before")
	vaultSettled(t, w, d)
	vaultBefore := vaultFiles(t, w)
	for _, s := range []string{"", "-wal", "-shm"} {
		os.Remove(filepath.Join(w.data, store.LogFile+s))
	}
	ids, _ := steady(t, d, 100, "after delete")
	// Wait until every request is accounted for: in a log file on disk
	// or reported lost (the recorder writes a flush interval on).
	inLog := func() (int, error) {
		logged, err := loggedIDs(filepath.Join(w.data, store.LogFile))
		found := 0
		for _, id := range ids {
			if logged[id] {
				found++
			}
		}
		return found, err
	}
	var lost int64
	var report string
	var found int
	var statErr, logErr error
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		lost, report = lossReport(t, d)
		found, logErr = 0, nil
		if _, statErr = os.Stat(filepath.Join(w.data, store.LogFile)); statErr == nil {
			found, logErr = inLog()
		}
		if (logErr == nil && int64(found)+lost >= int64(len(ids))) || time.Now().After(deadline) {
			break
		}
	}
	if logErr != nil {
		t.Fatal(logErr)
	}
	if got := vaultFiles(t, w); !maps.Equal(got, vaultBefore) {
		t.Errorf("vault files changed: %v -> %v", vaultBefore, got)
	}
	t.Logf("log deleted: 100 requests served; %d of them in a log file on disk (log.db exists: %v); daemon reports %q",
		found, statErr == nil, report)
	if found < len(ids) && lost < int64(len(ids)-found) {
		t.Errorf("after log.db was deleted, %d of %d served requests went to the deleted file: not in any log on disk and not reported as lost (/health recorder = %v)",
			len(ids)-found, len(ids), d.health(t).Recorder)
	}
	if err := d.stop(t); err != nil {
		t.Errorf("daemon exit: %v", err)
	}
}

// TestLogReadOnlyAtStart: the log's file system is read-only when the
// daemon starts (a read-only mount; without the right to mount, log.db
// chmod 0400, or for root, which ignores modes, log.db a directory). The
// vault is fine, so the daemon serves, says on stderr that it cannot log,
// and counts what it loses; the vault is not touched.
func TestLogReadOnlyAtStart(t *testing.T) {
	w := storageWorld(t)
	dir, mounted := logFS(t, w, "4m")
	w.MustRun("", "requests", "list", "--json") // log.db exists, migrated
	var vaultBefore map[string]string
	switch {
	case mounted:
		if err := syscall.Mount("", dir, "", syscall.MS_REMOUNT|syscall.MS_RDONLY, ""); err != nil {
			t.Fatalf("remount read-only: %v", err)
		}
	case os.Geteuid() != 0:
		for _, s := range []string{"", "-wal", "-shm"} {
			os.Chmod(filepath.Join(w.data, store.LogFile+s), 0o400)
		}
	default:
		// Root ignores file modes: make log.db a directory instead, a
		// log that cannot be opened for writing either.
		for _, s := range []string{"", "-wal", "-shm"} {
			os.Remove(filepath.Join(w.data, store.LogFile+s))
		}
		if err := os.Mkdir(filepath.Join(w.data, store.LogFile), 0o500); err != nil {
			t.Fatal(err)
		}
	}
	cmd := w.Cmd("", "daemon", "--port", "0")
	stderr := &testutil.Buffer{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	deadline := time.After(15 * time.Second)
	var served bool
wait:
	for {
		select {
		case err := <-exited:
			t.Fatalf("with a read-only request log the daemon exited (%v) instead of serving: %s", err, strings.TrimSpace(stderr.String()))
		case <-deadline:
			t.Fatalf("daemon neither served nor exited: %s", stderr.String())
		case <-time.After(100 * time.Millisecond):
			if m := listenRE.FindStringSubmatch(stderr.String()); m != nil {
				d := &daemon{url: m[1], pid: cmd.Process.Pid}
				// The vault settles (rate-limit state) after the first
				// answers; from then on serving must not touch it.
				steady(t, d, 3, "read-only log, warm-up")
				vaultSettled(t, w, d)
				vaultBefore = vaultFiles(t, w)
				steady(t, d, 17, "read-only log")
				served = true
				// Records fail at the recorder's next write, within a flush interval.
				lost, report := lossAtLeast(t, d, 20, nil)
				t.Logf("with a read-only log the daemon serves; it reports %q", report)
				if lost < 20 {
					t.Errorf("20 requests served without a log, %d reported lost: %s", lost, report)
				}
				if !strings.Contains(stderr.String(), "serving without a request log") {
					t.Errorf("the daemon did not say it cannot log: %s", stderr.String())
				}
				// Compared while it runs: stopping checkpoints the vault's
				// WAL into vault.db, the same data in other bytes.
				if got := vaultFiles(t, w); !maps.Equal(got, vaultBefore) {
					t.Errorf("vault files changed: %v -> %v", vaultBefore, got)
				}
				cmd.Process.Signal(syscall.SIGTERM)
				<-exited
				break wait
			}
		}
	}
	if !served {
		t.Fatal("the daemon never served")
	}
}
