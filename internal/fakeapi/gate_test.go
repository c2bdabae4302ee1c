package fakeapi

import (
	"bufio"
	"io"
	"strings"
	"testing"
	"time"
)

// wait fails the test unless ch is closed within a generous deadline.
func waitClosed(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(20 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
	}
}

// TestHoldToken: the held refresh has already spent the old refresh token
// and issued the new pair when the gate reports arrival; the answer comes
// after Release; the next request is not held.
func TestHoldToken(t *testing.T) {
	s := newServer(t)
	rt := s.NewOAuthAccount("a")
	g := s.HoldToken()
	type res struct {
		status int
		tok    tokenResp
	}
	done := make(chan res, 1)
	go func() {
		st, tr := refresh(t, s, rt)
		done <- res{st, tr}
	}()
	waitClosed(t, g.Arrived(), "the refresh to reach the gate")
	if s.RefreshLive(rt) {
		t.Fatal("held refresh has not spent its token yet")
	}
	issued := s.CurrentRefreshToken("a")
	select {
	case r := <-done:
		t.Fatalf("answered while held: %d", r.status)
	default:
	}
	g.Release()
	r := <-done
	if r.status != 200 || r.tok.RefreshToken != issued {
		t.Fatalf("after release: %d %+v", r.status, r.tok)
	}
	// Not held any more.
	if st, _ := refresh(t, s, issued); st != 200 {
		t.Fatalf("second refresh: %d", st)
	}
	g.Release() // twice is fine
}

// TestHoldStream: the first events reach the client while the stream is
// held; the rest follow the release.
func TestHoldStream(t *testing.T) {
	s := newServer(t)
	access := s.NewAccessToken("a")
	g := s.HoldStream(1)
	resp, err := s.Client().Do(msgReq(t, s, streamBody, bearer(access)))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	waitClosed(t, g.Arrived(), "the stream to reach the gate")
	br := bufio.NewReader(resp.Body)
	for _, want := range []string{"event: message_start\n"} {
		if line, err := br.ReadString('\n'); err != nil || line != want {
			t.Fatalf("line %q, %v", line, err)
		}
	}
	if _, err := br.ReadString('\n'); err != nil { // the data line
		t.Fatal(err)
	}
	g.Release()
	rest, err := io.ReadAll(br)
	if err != nil || !strings.Contains(string(rest), "message_stop") {
		t.Fatalf("rest of the stream: %v %q", err, rest)
	}
}

// TestCloseReleasesGates: a test that fails while a request is held
// still shuts the fake down.
func TestCloseReleasesGates(t *testing.T) {
	s := New()
	access := s.NewAccessToken("a")
	g := s.HoldStream(2)
	resp, err := s.Client().Do(msgReq(t, s, streamBody, bearer(access)))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	waitClosed(t, g.Arrived(), "the stream to reach the gate")
	closed := make(chan struct{})
	go func() { s.Close(); close(closed) }()
	waitClosed(t, closed, "Close")
}

// TestFaultEndStreamEarly: the stream ends cleanly after AfterEvents
// events, without message_stop; a non-streamed request is not affected.
func TestFaultEndStreamEarly(t *testing.T) {
	s := newServer(t)
	a := s.NewAPIKey("a")
	evs, err := faultedStream(t, s, a, Fault{Kind: FaultEndStreamEarly, AfterEvents: 3})
	if err != nil {
		t.Fatalf("the stream should end cleanly: %v", err)
	}
	if len(evs) != 3 || evs[2].name != "ping" {
		t.Fatalf("events %v", evs)
	}
	s.Inject(Fault{Kind: FaultEndStreamEarly})
	if resp, b := do(t, s, msgReq(t, s, msgBody, apiKey(a))); resp.StatusCode != 200 || !strings.Contains(string(b), `"end_turn"`) {
		t.Fatalf("non-streamed: %d %s", resp.StatusCode, b)
	}
	if FaultEndStreamEarly.String() != "end-stream-early" {
		t.Fatal(FaultEndStreamEarly.String())
	}
}
