package proxy

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"sync"
	"testing"

	"github.com/claudeflare/claudeflare/internal/fakeapi"
	"github.com/claudeflare/claudeflare/internal/testutil"
	"github.com/claudeflare/claudeflare/store"
)

func TestBufPoolSizeClasses(t *testing.T) {
	for _, c := range []struct{ n, cap int }{
		{0, 4 << 10}, {1, 4 << 10}, {4 << 10, 4 << 10}, {4<<10 + 1, 8 << 10},
		{200 << 10, 256 << 10}, {1 << 20, 1 << 20}, {8 << 20, 8 << 20}, {8<<20 + 1, 8<<20 + 1},
	} {
		if got := cap(*getBuf(c.n)); got != c.cap || bufCap(c.n) != c.cap {
			t.Errorf("getBuf(%d): capacity %d, bufCap %d, want %d", c.n, got, bufCap(c.n), c.cap)
		}
	}
	// A buffer goes back to its own class only: a 1 MiB one never serves
	// a 200 KB body, and one of a capacity no class has is not kept.
	for range 100 {
		big := getBuf(1 << 20)
		putBuf(big)
		odd := make([]byte, 0, 300<<10)
		putBuf(&odd)
		if b := getBuf(200 << 10); cap(*b) != 256<<10 {
			t.Fatalf("a 200 KB get gave a buffer of %d bytes", cap(*b))
		}
		if b := getBuf(300 << 10); cap(*b) != 512<<10 {
			t.Fatalf("a 300 KB get gave a buffer of %d bytes", cap(*b))
		}
	}
}

func TestBodyBufReferences(t *testing.T) {
	box := getBuf(10)
	*box = append(*box, "hello"...)
	buf := newBodyBuf(box)
	r := newBodyReader(buf, (*box)[:5])
	got, err := io.ReadAll(r)
	if string(got) != "hello" || err != nil {
		t.Fatalf("read %q, %v", got, err)
	}
	buf.release() // the exchange lets go: the reader still holds it
	if buf.box == nil {
		t.Fatal("buffer given back while a reader holds it")
	}
	r.Close()
	r.Close() // twice: released once
	if buf.box != nil {
		t.Fatal("buffer not given back after the last reference")
	}
	if n, err := r.Read(make([]byte, 1)); n != 0 || err != errBodyClosed {
		t.Fatalf("read after close: %d, %v", n, err)
	}
	defer func() {
		if recover() == nil {
			t.Fatal("releasing once too often did not panic")
		}
	}()
	buf.release()
}

// Many requests at once, bodies of every size class, some tried twice:
// every body reaches the upstream and the payload log byte for byte,
// although the buffers they were read into are reused all the time. A
// buffer given back while a try or the capture still reads it shows here
// as a body with another request's bytes.
func TestPooledBodiesStayIntact(t *testing.T) {
	h := newHarness(t)
	h.addOAuth("a", 0, false)
	h.addOAuth("b", 0, false)
	h.reload()
	h.api.SetMaxRecorded(1 << 20)
	// A third of the tries fail: the request goes on to the other
	// account with the same buffer.
	h.api.Inject(fakeapi.Fault{Kind: fakeapi.FaultStatus, Status: 500, Count: -1, Rate: 0.3, Path: "/v1/messages"})

	const n = 60
	sizes := []int{100, 3 << 10, 5 << 10, 40 << 10, 70 << 10, 200 << 10, 300 << 10}
	sent := map[string]bool{}
	bodies := make([]string, n)
	for i := range bodies {
		marker := fmt.Sprintf("request %d of the test\n", i)
		bodies[i] = string(testutil.ClaudeCodeBody(sizes[i%len(sizes)], func(int) string { return marker }))
		sent[bodies[i]] = true
	}
	var wg sync.WaitGroup
	sem := make(chan struct{}, 12)
	for _, body := range bodies {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			rep := h.do(context.Background(), http.MethodPost, "/v1/messages", body, nil)
			if rep.err != nil {
				t.Error(rep.err)
			}
		})
	}
	wg.Wait()

	var upstream int
	for _, r := range h.apiRequests() {
		if !sent[string(r.Body)] {
			t.Fatalf("the upstream got a body no client sent (%d bytes)", len(r.Body))
		}
		upstream++
	}
	if upstream < n {
		t.Fatalf("the upstream saw %d requests, want at least %d", upstream, n)
	}
	h.rows() // flushes the recorder
	var pays []struct {
		ID     string `db:"request_id"`
		KeyID  int64  `db:"key_id"`
		Sealed []byte `db:"sealed"`
	}
	if err := h.ldb.R.Select(&pays, `SELECT r.id AS request_id, p.key_id, p.sealed FROM payloads p JOIN requests r ON r.seq = p.request_seq`); err != nil {
		t.Fatal(err)
	}
	if len(pays) != n {
		t.Fatalf("%d payloads, want %d", len(pays), n)
	}
	seen := map[string]bool{}
	for _, p := range pays {
		plain, err := h.vault.OpenPayload(p.KeyID, p.ID, p.Sealed)
		if err != nil {
			t.Fatal(err)
		}
		c, err := store.UnmarshalCapture(plain)
		if err != nil {
			t.Fatal(err)
		}
		b := string(c.Request.Body)
		if !sent[b] || seen[b] {
			t.Fatalf("payload %s: a request body no client sent, or twice (%d bytes)", p.ID, len(b))
		}
		seen[b] = true
	}
}
