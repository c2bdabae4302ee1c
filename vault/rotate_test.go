package vault

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"filippo.io/age"

	"github.com/claudeflare/claudeflare/store"
)

func TestMain(m *testing.M) {
	passphraseRootLogN = 10 // part of the key derivation: the same in child processes
	if dir := os.Getenv("VAULT_TEST_ROTATE_CHILD"); dir != "" {
		rotateChild(dir, os.Getenv("VAULT_TEST_ROTATE_STEP"), os.Getenv("VAULT_TEST_ROTATE_READY"))
		return
	}
	// Fast passphrases (age's default takes a second per wrap) and a daemon
	// that checks for new data keys often.
	scryptWorkFactor = 10
	keyCheckInterval = 20 * time.Millisecond
	keyRetryAfter = 20 * time.Millisecond
	os.Exit(m.Run())
}

// world is a data dir with a vault holding three accounts and a request
// log holding one sealed payload, and what they should contain.
type world struct {
	t        *testing.T
	dir      string
	want     map[int64]Secrets
	payloads []sealedPayload
}

type sealedPayload struct {
	keyID  int64
	sealed []byte
	plain  string
	id     string // the request it was sealed for
}

var ctx = context.Background()

func newWorld(t *testing.T, ks KeySource) *world {
	t.Helper()
	w := &world{t: t, dir: filepath.Join(t.TempDir(), "data"), want: map[int64]Secrets{}}
	if err := EnsureDataDir(w.dir); err != nil {
		t.Fatal(err)
	}
	v, db := w.mustOpenDB(ks, Options{Create: true})
	for i, name := range []string{"a", "b", "c"} {
		s := Secrets{AccessToken: "at-" + name, RefreshToken: "rt-" + name, ExpiresAt: time.UnixMilli(1700000000000 + int64(i)).UTC()}
		id, err := v.AddAccount(ctx, NewAccount{Name: name, Kind: store.KindOAuth, Mode: "max", Tier: 1}, s)
		if err != nil {
			t.Fatal(err)
		}
		w.want[id] = s
	}
	w.addPayload(v, "payload before rotation")
	db.Close()
	return w
}

func (w *world) ks(ks KeySource) KeySource {
	ks.DataDir = w.dir
	return ks
}

func (w *world) open(ks KeySource) (*Vault, *store.DB, error) {
	db, err := store.OpenVault(w.dir)
	if err != nil {
		w.t.Fatal(err)
	}
	w.t.Cleanup(func() { db.Close() })
	v, err := Open(ctx, db, w.ks(ks), Options{})
	if err != nil {
		db.Close()
		return nil, nil, err
	}
	return v, db, nil
}

func (w *world) mustOpenDB(ks KeySource, opts Options) (*Vault, *store.DB) {
	w.t.Helper()
	db, err := store.OpenVault(w.dir)
	if err != nil {
		w.t.Fatal(err)
	}
	w.t.Cleanup(func() { db.Close() })
	v, err := Open(ctx, db, w.ks(ks), opts)
	if err != nil {
		w.t.Fatalf("open vault: %v", err)
	}
	return v, db
}

func (w *world) mustOpen(ks KeySource) *Vault {
	w.t.Helper()
	v, _ := w.mustOpenDB(ks, Options{})
	return v
}

func (w *world) logDB() *store.DB {
	w.t.Helper()
	db, err := store.OpenLog(w.dir)
	if err != nil {
		w.t.Fatal(err)
	}
	w.t.Cleanup(func() { db.Close() })
	return db
}

func (w *world) addPayload(v *Vault, plain string) {
	w.t.Helper()
	id := fmt.Sprintf("req-%d", len(w.payloads))
	kid, sealed, err := v.SealPayload(id, []byte(plain))
	if err != nil {
		w.t.Fatal(err)
	}
	logDB := w.logDB()
	err = store.InsertRequests(ctx, logDB, []store.Request{{ID: id, TS: 1, Method: "POST", Path: "/v1/messages"}},
		[]store.Payload{{RequestID: id, TS: 1, KeyID: kid, Sealed: sealed}})
	if err != nil {
		w.t.Fatal(err)
	}
	logDB.Close()
	w.payloads = append(w.payloads, sealedPayload{kid, sealed, plain, id})
}

// check asserts that v opens every account's tokens and every payload.
func (w *world) check(v *Vault) {
	w.t.Helper()
	for id, want := range w.want {
		got, err := v.Secrets(ctx, id)
		if err != nil {
			w.t.Fatalf("account %d: %v", id, err)
		}
		if got.AccessToken != want.AccessToken || got.RefreshToken != want.RefreshToken || !got.ExpiresAt.Equal(want.ExpiresAt) {
			w.t.Fatalf("account %d: tokens changed", id)
		}
	}
	for _, p := range w.payloads {
		got, err := v.OpenPayload(p.keyID, p.id, p.sealed)
		if err != nil || string(got) != p.plain {
			w.t.Fatalf("payload under key %d: %v", p.keyID, err)
		}
	}
}

// keyFiles lists the files in the data dir other than the databases and
// the rotation lock.
func (w *world) keyFiles() []string {
	var out []string
	entries, _ := os.ReadDir(w.dir)
	for _, e := range entries {
		n := e.Name()
		if strings.HasPrefix(n, store.VaultFile) || strings.HasPrefix(n, store.LogFile) || n == LockFileName {
			continue
		}
		out = append(out, n)
	}
	return out
}

func readKey(t *testing.T, path string) KeySource {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return KeySource{EncryptionKey: string(b)}
}

func writeKeyFile(t *testing.T, path, text string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestRotateMasterOldKeyFailsNewWorks(t *testing.T) {
	w := newWorld(t, KeySource{})
	idPath := filepath.Join(w.dir, IdentityFileName)
	oldKey := readKey(t, idPath)
	v := w.mustOpen(KeySource{})
	_, before, _ := v.Recipients(ctx)
	res, err := v.Rotate(ctx, RotateOptions{Master: true})
	if err != nil {
		t.Fatal(err)
	}
	if res.Kind != MasterIdentity || len(res.Recipients) != 1 || res.Recipients[0] == before[0] || res.IdentityFile != idPath {
		t.Fatalf("result %+v", res)
	}
	if !strings.HasPrefix(res.Recipients[0], "age1") || strings.HasPrefix(res.Recipients[0], "age1pq") {
		t.Fatalf("recipient %q", res.Recipients[0])
	}
	// The vault that rotated keeps working, and so does a fresh open.
	w.check(v)
	w.check(w.mustOpen(KeySource{}))
	newKey := readKey(t, idPath)
	w.check(w.mustOpen(newKey))
	if st, _ := os.Stat(idPath); st.Mode().Perm() != 0o600 {
		t.Fatalf("identity mode %04o", st.Mode().Perm())
	}
	if files := w.keyFiles(); !slices.Equal(files, []string{IdentityFileName}) {
		t.Fatalf("files left: %v", files)
	}
	if !bytes.Contains([]byte(newKey.EncryptionKey), []byte(res.Recipients[0])) {
		t.Fatal("identity file does not name its recipient")
	}
	_, _, err = w.open(oldKey)
	if !errors.Is(err, ErrWrongKey) {
		t.Fatalf("old key: got %v, want ErrWrongKey", err)
	}
	if strings.Contains(err.Error(), "AGE-SECRET-KEY") {
		t.Fatal("error names the key")
	}
	// Same through a file given with --identity.
	oldFile := filepath.Join(t.TempDir(), "old.txt")
	writeKeyFile(t, oldFile, oldKey.EncryptionKey)
	if _, _, err := w.open(KeySource{IdentityFile: oldFile}); !errors.Is(err, ErrWrongKey) {
		t.Fatalf("old identity file: got %v", err)
	}
	if info, _ := ReadMaster(ctx, v.DB()); info.Pending || info.Kind != MasterIdentity || info.Recipients[0] != res.Recipients[0] {
		t.Fatalf("master record %+v", info)
	}
}

// scenario is one way of moving the master key.
type scenario struct {
	name  string
	old   func(w *world) KeySource                 // the key the vault is made and opened with
	opts  func(w *world) RotateOptions             // the rotation
	next  func(w *world) KeySource                 // the key that opens it after the commit
	again func(w *world, opened int) RotateOptions // a second rotation, from the old (0) or new (1) key
	steps []string
}

var envKey = func() string {
	id, _ := age.GenerateX25519Identity()
	return id.String()
}()

var scenarios = []scenario{
	{
		name:  "identity in place",
		old:   func(w *world) KeySource { return KeySource{} },
		opts:  func(w *world) RotateOptions { return RotateOptions{Master: true, Data: true, LogDB: w.logDB()} },
		next:  func(w *world) KeySource { return KeySource{} },
		again: func(w *world, _ int) RotateOptions { return RotateOptions{Master: true, Data: true, LogDB: w.logDB()} },
		steps: []string{stepNewKey, stepWrappedBoth, stepOldKept, stepRenamed, stepCommitted, stepCleaned, stepDataKey, stepResealedOne, stepResealed, stepPruned},
	},
	{
		name: "environment to identity file",
		old:  func(w *world) KeySource { return KeySource{EncryptionKey: envKey} },
		opts: func(w *world) RotateOptions {
			return RotateOptions{Master: true, IdentityFile: filepath.Join(filepath.Dir(w.dir), "new.txt")}
		},
		next: func(w *world) KeySource {
			return KeySource{IdentityFile: filepath.Join(filepath.Dir(w.dir), "new.txt")}
		},
		again: func(w *world, opened int) RotateOptions {
			if opened == 0 {
				return RotateOptions{Master: true, IdentityFile: filepath.Join(filepath.Dir(w.dir), "new2.txt")}
			}
			return RotateOptions{Master: true}
		},
		steps: []string{stepNewKey, stepWrappedBoth, stepCommitted, stepCleaned},
	},
	{
		name: "identity file to passphrase",
		old:  func(w *world) KeySource { return KeySource{} },
		opts: func(w *world) RotateOptions { return RotateOptions{Master: true, Passphrase: "new passphrase"} },
		next: func(w *world) KeySource { return KeySource{Passphrase: "new passphrase"} },
		again: func(w *world, _ int) RotateOptions {
			return RotateOptions{Master: true, Passphrase: "newer passphrase"}
		},
		steps: []string{stepNewKey, stepWrappedBoth, stepCommitted, stepCleaned},
	},
	{
		name: "passphrase to identity file",
		old:  func(w *world) KeySource { return KeySource{Passphrase: "old passphrase"} },
		opts: func(w *world) RotateOptions {
			return RotateOptions{Master: true, Data: true, IdentityFile: filepath.Join(filepath.Dir(w.dir), "new.txt")}
		},
		next: func(w *world) KeySource {
			return KeySource{IdentityFile: filepath.Join(filepath.Dir(w.dir), "new.txt")}
		},
		again: func(w *world, opened int) RotateOptions {
			if opened == 0 {
				return RotateOptions{Master: true, IdentityFile: filepath.Join(filepath.Dir(w.dir), "new2.txt")}
			}
			return RotateOptions{Master: true}
		},
		steps: []string{stepNewKey, stepWrappedBoth, stepCommitted, stepCleaned, stepDataKey, stepResealedOne, stepResealed},
	},
}

// keyMaterial captures a key source's key itself, so that it can be
// tried after its file changed.
func keyMaterial(t *testing.T, w *world, ks KeySource) KeySource {
	switch {
	case ks.EncryptionKey != "" || ks.Passphrase != "":
		return ks
	case ks.IdentityFile != "":
		return readKey(t, ks.IdentityFile)
	default:
		return readKey(t, filepath.Join(w.dir, IdentityFileName))
	}
}

// TestRotateInterruptedAtEveryStep stops a rotation after each step, as a
// crash would: the vault then opens with the keys left on disk, every
// account's tokens and every payload intact, and the next rotation
// finishes cleanly.
func TestRotateInterruptedAtEveryStep(t *testing.T) {
	t.Cleanup(func() { rotateHook = nil })
	for _, sc := range scenarios {
		for i, step := range sc.steps {
			t.Run(sc.name+"/"+step, func(t *testing.T) {
				w := newWorld(t, sc.old(nil))
				oldKey := keyMaterial(t, w, w.ks(sc.old(w)))
				v, db := w.mustOpenDB(sc.old(w), Options{})
				crash := errors.New("crash")
				rotateHook = func(s string) error {
					if s == step {
						return crash
					}
					return nil
				}
				_, err := v.Rotate(ctx, sc.opts(w))
				rotateHook = nil
				if !errors.Is(err, crash) {
					t.Fatalf("rotation: got %v, want the crash after %s", err, step)
				}
				db.Close()

				committed := i >= slices.Index(sc.steps, stepCommitted)
				// The old key opens the vault before the commit, the new
				// one at and after it.
				want, other := sc.old(w), sc.next(w)
				opened := 0
				if committed {
					want, other, opened = other, want, 1
				}
				v2, db2, err := w.open(want)
				if err != nil {
					t.Fatalf("open after a crash after %s: %v", step, err)
				}
				w.check(v2)
				if sc.name != "identity in place" {
					_, _, err := w.open(other)
					switch {
					case committed && err == nil:
						t.Fatal("the old key still opens the vault after the commit")
					case !committed && i >= slices.Index(sc.steps, stepWrappedBoth) && err != nil:
						t.Fatalf("the new key does not open the vault after %s: %v", step, err)
					case !committed && i < slices.Index(sc.steps, stepWrappedBoth) && !errors.Is(err, ErrWrongKey):
						t.Fatalf("the new key opens the vault before it was wrapped to: %v", err)
					}
				}
				// The next rotation finishes (or undoes) the interrupted
				// one, and completes.
				again := sc.again(w, opened)
				res, err := v2.Rotate(ctx, again)
				if err != nil {
					t.Fatalf("rotation after the crash: %v", err)
				}
				db2.Close()
				final := w.ks(sc.next(w))
				switch {
				case again.Passphrase != "":
					final = w.ks(KeySource{Passphrase: again.Passphrase})
				case again.IdentityFile != "":
					final = w.ks(KeySource{IdentityFile: again.IdentityFile})
				}
				v3 := w.mustOpen(final)
				w.check(v3)
				info, err := ReadMaster(ctx, v3.DB())
				if err != nil || info.Pending {
					t.Fatalf("master record after finishing: %+v %v", info, err)
				}
				if !slices.Equal(info.Recipients, res.Recipients) {
					t.Fatalf("recipients %v, result %v", info.Recipients, res.Recipients)
				}
				if _, _, err := w.open(oldKey); !errors.Is(err, ErrWrongKey) {
					t.Fatalf("the original key after two rotations: %v", err)
				}
				for _, f := range w.keyFiles() {
					if f != IdentityFileName || final.IdentityFile != "" || final.Passphrase != "" {
						t.Errorf("left in the data dir: %s", f)
					}
				}
			})
		}
	}
}

// TestRotateKilledMidway rotates in a child process that is killed with
// SIGKILL after a step: the files on disk open the vault, tokens intact.
func TestRotateKilledMidway(t *testing.T) {
	for _, step := range []string{stepWrappedBoth, stepOldKept, stepRenamed, stepResealedOne} {
		t.Run(step, func(t *testing.T) {
			w := newWorld(t, KeySource{})
			oldKey := readKey(t, filepath.Join(w.dir, IdentityFileName))
			ready := filepath.Join(t.TempDir(), "ready")
			cmd := exec.Command(os.Args[0], "-test.run=^$")
			cmd.Env = append(os.Environ(), "VAULT_TEST_ROTATE_CHILD="+w.dir, "VAULT_TEST_ROTATE_STEP="+step, "VAULT_TEST_ROTATE_READY="+ready)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			deadline := time.Now().Add(60 * time.Second)
			for !fileExists(ready) {
				if time.Now().After(deadline) {
					cmd.Process.Kill()
					cmd.Wait()
					t.Fatalf("child never reached %s: %s", step, stderr.String())
				}
				time.Sleep(10 * time.Millisecond) // paces the poll
			}
			if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			err := cmd.Wait()
			if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
				t.Fatalf("child did not die of SIGKILL: %v %s", err, stderr.String())
			}
			v, _ := w.mustOpenDB(KeySource{}, Options{})
			w.check(v)
			if _, err := v.Rotate(ctx, RotateOptions{Master: true, Data: true}); err != nil {
				t.Fatal(err)
			}
			w.check(w.mustOpen(KeySource{}))
			if files := w.keyFiles(); !slices.Equal(files, []string{IdentityFileName}) {
				t.Fatalf("files left: %v", files)
			}
			if _, _, err := w.open(oldKey); !errors.Is(err, ErrWrongKey) {
				t.Fatalf("old key: %v", err)
			}
		})
	}
}

// rotateChild runs in the child process of TestRotateKilledMidway: it
// rotates and blocks after step until it is killed.
func rotateChild(dir, step, ready string) {
	db, err := store.OpenVault(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		os.Exit(2)
	}
	v, err := Open(ctx, db, KeySource{DataDir: dir}, Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		os.Exit(2)
	}
	rotateHook = func(s string) error {
		if s == step {
			os.WriteFile(ready, nil, 0o600)
			time.Sleep(time.Hour) // blocks until the test kills this process
		}
		return nil
	}
	_, err = v.Rotate(ctx, RotateOptions{Master: true, Data: true})
	fmt.Fprintln(os.Stderr, "child: rotation ended without being killed:", err)
	os.Exit(3)
}

func TestRotateDataRetiresOldKey(t *testing.T) {
	w := newWorld(t, KeySource{})
	v, db := w.mustOpenDB(KeySource{}, Options{})
	oldKey := v.currentKey()
	res, err := v.Rotate(ctx, RotateOptions{Data: true, LogDB: w.logDB()})
	if err != nil {
		t.Fatal(err)
	}
	if res.DataKeyID == oldKey.id || res.Resealed != len(w.want) || res.StillRetired != 0 || len(res.DeletedKeys) != 0 {
		t.Fatalf("result %+v", res)
	}
	// No account secret opens with the retired key; all open with the new.
	var rows []store.SealedSecret
	if err := db.R.Select(&rows, `SELECT key_id, secret, token_version, token_expires_at FROM accounts`); err != nil {
		t.Fatal(err)
	}
	for _, r := range rows {
		if r.KeyID != res.DataKeyID {
			t.Fatalf("account under key %d", r.KeyID)
		}
		if _, err := decrypt(r.Sealed, oldKey.identity); err == nil {
			t.Fatal("a secret still opens with the retired data key")
		}
		if r.Version != 1 {
			t.Fatalf("re-sealing changed the token version to %d", r.Version)
		}
	}
	w.check(w.mustOpen(KeySource{}))
	// New payloads use the new key; the old one is kept for the old payload.
	if kid, _, _ := v.SealPayload("x", []byte("x")); kid != res.DataKeyID {
		t.Fatalf("payload sealed with key %d", kid)
	}
	later := time.Now().Add(2 * RetiredKeyGrace)
	if deleted, err := PruneDataKeys(ctx, db, w.logDB(), later); err != nil || len(deleted) != 0 {
		t.Fatalf("pruned a key a payload uses: %v %v", deleted, err)
	}
	logDB := w.logDB()
	if _, err := logDB.W.Exec(`DELETE FROM requests`); err != nil {
		t.Fatal(err)
	}
	w.payloads = nil
	// Within the grace period a retired key stays.
	if deleted, err := PruneDataKeys(ctx, db, logDB, time.Now()); err != nil || len(deleted) != 0 {
		t.Fatalf("pruned within the grace period: %v %v", deleted, err)
	}
	deleted, err := PruneDataKeys(ctx, db, logDB, later)
	if err != nil || !slices.Equal(deleted, []int64{oldKey.id}) {
		t.Fatalf("prune: %v %v", deleted, err)
	}
	var n int
	db.R.Get(&n, `SELECT count(*) FROM data_keys`)
	if n != 1 {
		t.Fatalf("%d data keys left", n)
	}
	w.check(w.mustOpen(KeySource{}))
}

// TestRotateOnlineWhileDaemonRefreshes rotates master and data keys while
// a daemon-like vault (its own connections) refreshes tokens and seals
// payloads in a loop: no refresh fails, none is lost, and the daemon
// moves to each new data key without a restart.
func TestRotateOnlineWhileDaemonRefreshes(t *testing.T) {
	w := newWorld(t, KeySource{})
	daemon := w.mustOpen(KeySource{})
	var (
		stop     atomic.Bool
		wg       sync.WaitGroup
		errs     []error
		last     = map[int64]Secrets{}
		payloads []sealedPayload
		swaps    atomic.Int64
		done     = make(chan struct{}) // closed when the daemon's loop ends
	)
	ids := make([]int64, 0, len(w.want))
	for id := range w.want {
		ids = append(ids, id)
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(done)
		for i := 0; !stop.Load() && len(errs) == 0; i++ {
			for _, id := range ids {
				s, err := daemon.Secrets(ctx, id)
				if err != nil {
					errs = append(errs, fmt.Errorf("read tokens: %w", err))
					return
				}
				next := Secrets{AccessToken: fmt.Sprintf("at-%d-%d", id, i), RefreshToken: fmt.Sprintf("rt-%d-%d", id, i), ExpiresAt: time.UnixMilli(int64(i)).UTC()}
				if _, err := daemon.SwapTokens(ctx, id, s.Version, next); err != nil {
					errs = append(errs, fmt.Errorf("save refreshed tokens: %w", err))
					return
				}
				last[id] = next
				swaps.Add(1)
			}
			plain := fmt.Sprintf("payload %d", i)
			kid, sealed, err := daemon.SealPayload(plain, []byte(plain))
			if err != nil {
				errs = append(errs, err)
				return
			}
			payloads = append(payloads, sealedPayload{kid, sealed, plain, plain})
		}
	}()
	cli := w.mustOpen(KeySource{})
	for round := 0; round < 3; round++ {
		res, err := cli.Rotate(ctx, RotateOptions{Master: true, Data: true})
		if err != nil {
			stop.Store(true)
			wg.Wait()
			t.Fatal(err)
		}
		deadline := time.Now().Add(20 * time.Second)
		for {
			kid, _, _ := daemon.SealPayload("probe", nil)
			if kid == res.DataKeyID {
				break
			}
			if time.Now().After(deadline) {
				stop.Store(true)
				wg.Wait()
				t.Fatalf("round %d: the daemon still seals with key %d, not %d", round, kid, res.DataKeyID)
			}
			time.Sleep(5 * time.Millisecond) // paces the poll
		}
	}
	// The daemon goes on refreshing under the last data key: wait for a
	// full round of refreshes after the last rotation.
	mark := swaps.Load()
	deadline := time.Now().Add(20 * time.Second)
	for swaps.Load() < mark+int64(len(ids)) {
		select {
		case <-done:
			wg.Wait()
			if len(errs) > 0 {
				t.Fatal(errs[0])
			}
			t.Fatalf("the daemon stopped refreshing after the last rotation (%d refreshes after it)", swaps.Load()-mark)
		case <-time.After(5 * time.Millisecond): // paces the poll
		}
		if time.Now().After(deadline) {
			stop.Store(true)
			wg.Wait()
			t.Fatalf("only %d refreshes after the last rotation", swaps.Load()-mark)
		}
	}
	stop.Store(true)
	wg.Wait()
	if len(errs) > 0 {
		t.Fatal(errs[0])
	}
	if n := swaps.Load(); n < int64(len(ids))*2 {
		t.Fatalf("only %d refreshes happened", n)
	}
	fresh := w.mustOpen(KeySource{})
	w.want, w.payloads = last, payloads
	w.check(fresh)
	var stale int
	fresh.DB().R.Get(&stale, `SELECT count(*) FROM accounts WHERE key_id != ?`, fresh.currentKey().id)
	if stale != 0 {
		t.Fatalf("%d secrets left under a retired data key", stale)
	}
}

// TestStaleDaemonLosesNothing: a daemon whose master key came from the
// environment cannot open a data key made after the master moved to a
// file. Its refreshed tokens are still saved (under the key it has), and
// the next rotation re-seals them.
func TestStaleDaemonLosesNothing(t *testing.T) {
	w := newWorld(t, KeySource{EncryptionKey: envKey})
	daemon := w.mustOpen(KeySource{EncryptionKey: envKey})
	newFile := filepath.Join(t.TempDir(), "new.txt")
	cli := w.mustOpen(KeySource{EncryptionKey: envKey})
	if _, err := cli.Rotate(ctx, RotateOptions{Master: true, IdentityFile: newFile}); err != nil {
		t.Fatal(err)
	}
	// Master rotation changes no data key: the daemon keeps working.
	w.check(daemon)
	cli2 := w.mustOpen(KeySource{IdentityFile: newFile})
	if _, err := cli2.Rotate(ctx, RotateOptions{Data: true}); err != nil {
		t.Fatal(err)
	}
	var id int64
	for id = range w.want {
		break
	}
	s, _ := store.GetSecret(ctx, daemon.DB(), id)
	next := Secrets{AccessToken: "at-new", RefreshToken: "rt-new"}
	if _, err := daemon.SwapTokens(ctx, id, s.Version, next); err != nil {
		t.Fatalf("a daemon with an old master key could not save tokens: %v", err)
	}
	w.want[id] = next
	res, err := cli2.Rotate(ctx, RotateOptions{Data: true})
	if err != nil {
		t.Fatal(err)
	}
	if res.StillRetired != 0 {
		t.Fatalf("%d secrets still under a retired key", res.StillRetired)
	}
	w.check(w.mustOpen(KeySource{IdentityFile: newFile}))
}

// TestSwapRacingDataRotation: a daemon seals refreshed tokens with the
// current data key, a rotation retires that key and re-seals every
// account before the daemon saves: the save still succeeds, and the
// secret ends up under the new key.
func TestSwapRacingDataRotation(t *testing.T) {
	w := newWorld(t, KeySource{})
	daemon := w.mustOpen(KeySource{})
	cli := w.mustOpen(KeySource{})
	var id int64
	for id = range w.want {
		break
	}
	s, err := daemon.Secrets(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	var newKey int64
	swapHook = func() {
		swapHook = nil
		res, err := cli.Rotate(ctx, RotateOptions{Data: true})
		if err != nil {
			t.Error(err)
		}
		newKey = res.DataKeyID
	}
	t.Cleanup(func() { swapHook = nil })
	next := Secrets{AccessToken: "at-raced", RefreshToken: "rt-raced"}
	if _, err := daemon.SwapTokens(ctx, id, s.Version, next); err != nil {
		t.Fatalf("swap during rotation: %v", err)
	}
	w.want[id] = next
	ss, _ := store.GetSecret(ctx, daemon.DB(), id)
	if newKey == 0 || ss.KeyID != newKey {
		t.Fatalf("secret under key %d, want the new key %d", ss.KeyID, newKey)
	}
	w.check(w.mustOpen(KeySource{}))
}

func hashDir(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || strings.HasSuffix(p, "-shm") {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(b)
		out[p] = hex.EncodeToString(sum[:])
		return nil
	})
	return out
}

func sameFiles(t *testing.T, before, after map[string]string) {
	t.Helper()
	for p, h := range before {
		if after[p] != h {
			t.Errorf("%s changed", p)
		}
	}
	for p := range after {
		if _, ok := before[p]; !ok {
			t.Errorf("%s appeared", p)
		}
	}
}

// TestBadKeysChangeNothing: a wrong identity, a wrong key, a wrong
// passphrase, a truncated or group-readable identity file each give one
// clear error and leave every file byte-identical.
func TestBadKeysChangeNothing(t *testing.T) {
	w := newWorld(t, KeySource{})
	idPath := filepath.Join(w.dir, IdentityFileName)
	other, _ := age.GenerateX25519Identity()
	outside := t.TempDir()
	wrongFile := filepath.Join(outside, "wrong.txt")
	writeKeyFile(t, wrongFile, other.String()+"\n")
	good, _ := os.ReadFile(idPath)
	keyLine := string(good[bytes.Index(good, []byte("AGE-SECRET-KEY-")):])
	truncFile := filepath.Join(outside, "truncated.txt")
	writeKeyFile(t, truncFile, string(good[:len(good)-20]))

	type tc struct {
		name   string
		ks     KeySource
		prep   func()
		is     error
		substr string
	}
	cases := []tc{
		{name: "wrong identity file", ks: KeySource{IdentityFile: wrongFile}, is: ErrWrongKey, substr: "does not open this vault"},
		{name: "wrong environment key", ks: KeySource{EncryptionKey: other.String()}, is: ErrWrongKey, substr: "CLAUDEFLARE_ENCRYPTION_KEY"},
		{name: "truncated identity file", ks: KeySource{IdentityFile: truncFile}, substr: "not a valid age identity"},
		{name: "truncated default identity", prep: func() { writeKeyFile(t, idPath, string(good[:len(good)-20])) }, substr: "not a valid age identity"},
		{name: "group-readable identity", prep: func() { writeKeyFile(t, idPath, string(good)); os.Chmod(idPath, 0o640) }, is: ErrKeyFileMode, substr: "chmod 600"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.prep != nil {
				c.prep()
			}
			before := hashDir(t, filepath.Dir(w.dir))
			_, db, err := w.open(c.ks)
			if err == nil {
				db.Close()
				t.Fatal("opened")
			}
			if c.is != nil && !errors.Is(err, c.is) {
				t.Fatalf("got %v, want %v", err, c.is)
			}
			msg := err.Error()
			if !strings.Contains(msg, c.substr) || strings.Contains(msg, other.String()[20:]) || strings.Contains(msg, keyLine[20:50]) || strings.Count(msg, ":") > 2 {
				t.Fatalf("unclear error: %v", err)
			}
			sameFiles(t, before, hashDir(t, filepath.Dir(w.dir)))
		})
	}

	t.Run("wrong passphrase", func(t *testing.T) {
		pw := newWorld(t, KeySource{Passphrase: "the right passphrase"})
		before := hashDir(t, pw.dir)
		_, _, err := pw.open(KeySource{Passphrase: "wrong"})
		if !errors.Is(err, ErrWrongKey) || !strings.Contains(err.Error(), "CLAUDEFLARE_PASSPHRASE") {
			t.Fatalf("got %v", err)
		}
		_, _, err = pw.open(KeySource{})
		if !errors.Is(err, ErrNeedPassphrase) || !errors.Is(err, ErrNoKey) {
			t.Fatalf("no passphrase: got %v", err)
		}
		sameFiles(t, before, hashDir(t, pw.dir))
	})
}

func TestRotateRefusals(t *testing.T) {
	t.Run("environment key without a target", func(t *testing.T) {
		w := newWorld(t, KeySource{EncryptionKey: envKey})
		v := w.mustOpen(KeySource{EncryptionKey: envKey})
		before := hashDir(t, w.dir)
		if _, err := v.Rotate(ctx, RotateOptions{Master: true}); !errors.Is(err, ErrNoRotateTarget) {
			t.Fatalf("got %v", err)
		}
		sameFiles(t, before, hashDir(t, w.dir))
		// Data rotation needs no new master.
		if _, err := v.Rotate(ctx, RotateOptions{Data: true}); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("systemd credential without a target", func(t *testing.T) {
		w := newWorld(t, KeySource{})
		creds := t.TempDir()
		b, _ := os.ReadFile(filepath.Join(w.dir, IdentityFileName))
		writeKeyFile(t, filepath.Join(creds, CredentialName), string(b))
		v := w.mustOpen(KeySource{CredentialsDir: creds})
		if _, err := v.Rotate(ctx, RotateOptions{Master: true}); !errors.Is(err, ErrNoRotateTarget) {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("mixed post-quantum and classic", func(t *testing.T) {
		w := newWorld(t, KeySource{})
		v := w.mustOpen(KeySource{})
		classic, _ := age.GenerateX25519Identity()
		before := hashDir(t, w.dir)
		_, err := v.Rotate(ctx, RotateOptions{Master: true, PQ: true, AddRecipients: []string{classic.Recipient().String()}})
		if !errors.Is(err, ErrMixedRecipients) {
			t.Fatalf("got %v", err)
		}
		_, err = v.Rotate(ctx, RotateOptions{Master: true, Passphrase: "x", AddRecipients: []string{classic.Recipient().String()}})
		if err == nil || !strings.Contains(err.Error(), "sole recipient") {
			t.Fatalf("passphrase with recipients: %v", err)
		}
		_, err = v.Rotate(ctx, RotateOptions{Master: true, AddRecipients: []string{classic.String()}})
		if err == nil || strings.Contains(err.Error(), "AGE-SECRET") {
			t.Fatalf("a secret key as recipient: %v", err)
		}
		existing := filepath.Join(t.TempDir(), "exists.txt")
		writeKeyFile(t, existing, "x")
		if _, err := v.Rotate(ctx, RotateOptions{Master: true, IdentityFile: existing}); err == nil || !strings.Contains(err.Error(), "already exists") {
			t.Fatalf("existing file: %v", err)
		}
		sameFiles(t, before, hashDir(t, w.dir))
		w.check(w.mustOpen(KeySource{}))
	})
	t.Run("one rotation at a time", func(t *testing.T) {
		w := newWorld(t, KeySource{})
		v := w.mustOpen(KeySource{})
		unlock, err := lockRotation(w.dir)
		if err != nil {
			t.Fatal(err)
		}
		defer unlock()
		if _, err := v.Rotate(ctx, RotateOptions{Master: true}); !errors.Is(err, ErrRotationRunning) {
			t.Fatalf("got %v", err)
		}
	})
}

// TestUserFilesNextToIdentityAreLeftAlone: a user's own FILE.old or
// FILE.next next to an identity file given with --identity is neither
// read, nor overwritten, nor removed.
func TestUserFilesNextToIdentityAreLeftAlone(t *testing.T) {
	keys := t.TempDir()
	file := filepath.Join(keys, "mine.txt")
	w := newWorld(t, KeySource{IdentityFile: file, DataDir: "unused"})
	// Not claudeflare's, and readable by others: ignored when opening.
	other, _ := age.GenerateX25519Identity()
	os.WriteFile(file+OldSuffix, []byte(other.String()+"\n"), 0o644)
	os.WriteFile(file+NextSuffix, []byte("my notes\n"), 0o600)
	before := hashDir(t, keys)
	v := w.mustOpen(KeySource{IdentityFile: file})
	w.check(v)
	if _, err := v.Rotate(ctx, RotateOptions{Master: true}); err == nil || !strings.Contains(err.Error(), "not written by claudeflare") {
		t.Fatalf("got %v", err)
	}
	sameFiles(t, before, hashDir(t, keys))
	os.Remove(file + NextSuffix)
	os.Remove(file + OldSuffix)
	res, err := v.Rotate(ctx, RotateOptions{Master: true})
	if err != nil {
		t.Fatal(err)
	}
	if res.IdentityFile != file {
		t.Fatalf("identity written to %s", res.IdentityFile)
	}
	w.check(w.mustOpen(KeySource{IdentityFile: file}))
	if entries, _ := os.ReadDir(keys); len(entries) != 1 {
		t.Fatalf("files left next to the identity: %v", entries)
	}
}

// TestRotateAfterAnotherRotation: a vault opened before another process
// rotated both keys can still rotate.
func TestRotateAfterAnotherRotation(t *testing.T) {
	w := newWorld(t, KeySource{})
	a, b := w.mustOpen(KeySource{}), w.mustOpen(KeySource{})
	if _, err := a.Rotate(ctx, RotateOptions{Data: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Rotate(ctx, RotateOptions{Master: true, Data: true}); err != nil {
		t.Fatal(err)
	}
	w.check(w.mustOpen(KeySource{}))
}

func TestRotatePostQuantumAndBreakGlass(t *testing.T) {
	w := newWorld(t, KeySource{})
	v := w.mustOpen(KeySource{})
	res, err := v.Rotate(ctx, RotateOptions{Master: true, Data: true, PQ: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Recipients) != 1 || !strings.HasPrefix(res.Recipients[0], "age1pq1") || !v.PostQuantum() {
		t.Fatalf("recipients %v", res.Recipients)
	}
	b, _ := os.ReadFile(filepath.Join(w.dir, IdentityFileName))
	if !bytes.Contains(b, []byte("AGE-SECRET-KEY-PQ-1")) {
		t.Fatal("identity is not post-quantum")
	}
	if _, ok := v.currentKey().recipient.(*age.HybridRecipient); !ok {
		t.Fatal("new data key is not post-quantum")
	}
	w.check(w.mustOpen(KeySource{}))

	// Back to classic, with an offline break-glass recipient.
	glass, _ := age.GenerateX25519Identity()
	v = w.mustOpen(KeySource{})
	res, err = v.Rotate(ctx, RotateOptions{Master: true, AddRecipients: []string{glass.Recipient().String()}})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Recipients) != 2 || res.Recipients[1] != glass.Recipient().String() {
		t.Fatalf("recipients %v", res.Recipients)
	}
	// The break-glass key opens the data keys, for a recovery (it cannot
	// check the vault's MACs, so only to replace the master key).
	glassKS := KeySource{EncryptionKey: glass.String()}
	recover := func() *Vault { v, _ := w.mustOpenDB(glassKS, Options{Recovery: true}); return v }
	w.check(recover())
	// A later data key is wrapped to the break-glass key too.
	if _, err := v.Rotate(ctx, RotateOptions{Data: true}); err != nil {
		t.Fatal(err)
	}
	w.check(recover())
	w.check(w.mustOpen(KeySource{}))
}

// TestBreakGlassRecovery: a break-glass key cannot open the vault for
// everyday use (it cannot check the MACs) nor make a data key, but it can
// replace a lost master key; the vault is then fully checked again.
func TestBreakGlassRecovery(t *testing.T) {
	w := newWorld(t, KeySource{})
	glass, _ := age.GenerateX25519Identity()
	if _, err := w.mustOpen(KeySource{}).Rotate(ctx, RotateOptions{Master: true, AddRecipients: []string{glass.Recipient().String()}}); err != nil {
		t.Fatal(err)
	}
	glassKS := KeySource{EncryptionKey: glass.String()}
	if _, _, err := w.open(glassKS); !errors.Is(err, ErrBreakGlass) {
		t.Fatalf("everyday open with the break-glass key: %v", err)
	}
	v, _ := w.mustOpenDB(glassKS, Options{Recovery: true})
	if _, _, err := v.Recipients(ctx); err == nil {
		t.Fatal("the unchecked recipient list was handed out")
	}
	if _, err := v.Rotate(ctx, RotateOptions{Data: true}); err == nil {
		t.Fatal("a data key was made on unchecked metadata")
	}
	// The master identity is lost: recover to a new one.
	os.Remove(filepath.Join(w.dir, IdentityFileName))
	newFile := filepath.Join(t.TempDir(), "new.txt")
	if _, err := v.Rotate(ctx, RotateOptions{Master: true, Data: true, IdentityFile: newFile}); err != nil {
		t.Fatal(err)
	}
	nv := w.mustOpen(KeySource{IdentityFile: newFile})
	w.check(nv)
	if err := nv.CheckMAC(ctx); err != nil {
		t.Fatal(err)
	}
}
