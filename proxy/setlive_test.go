package proxy

import (
	"bufio"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/claudeflare/claudeflare/config"
)

// SetLive's server.shutdown_grace is the one a later shutdown uses: with
// the grace lowered to zero by a reload, a stream in flight at SIGTERM is
// cut at once instead of running to its end within the configured 30s.
func TestSetLiveShutdownGrace(t *testing.T) {
	h := newHarness(t)
	h.addOAuth("work", 0, false)
	h.reload()
	h.api.SetStreamShape(50, 16)
	h.api.SetEventDelay(100 * time.Millisecond) // 5s of stream
	live := *h.cfg
	live.Server.ShutdownGrace = config.Duration(0)
	h.srv.SetLive(&live)
	resp, err := http.Post(h.url+"/v1/messages", "application/json", strings.NewReader(streamBody))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	if line, _ := br.ReadString('\n'); line != "event: message_start\n" {
		t.Fatalf("first line %q", line)
	}
	h.cancel()
	rest, _ := io.ReadAll(br)
	if strings.Contains(string(rest), "message_stop") {
		t.Fatal("the stream ran to its end: the reloaded shutdown_grace of 0 was not used")
	}
	<-h.served
	h.cancel = nil
}

// SetLive applies ratelimit.recheck_interval: a quarantine is re-checked
// on the reloaded interval.
func TestSetLiveRecheckInterval(t *testing.T) {
	h := newHarness(t)
	h.addOAuth("a", 0, false)
	h.reload()
	live := *h.cfg
	live.RateLimit.RecheckInterval = config.Duration(time.Hour)
	h.srv.SetLive(&live)
	a := h.srv.pool.byID[h.account("a").ID]
	h.srv.pool.setStatusOnce(a, "quarantined", "test")
	h.srv.pool.dueForRecheck(h.clock.Now())
	h.clock.Add(30 * time.Minute) // the default 5 min passed, the reloaded hour not
	if due := h.srv.pool.dueForRecheck(h.clock.Now()); len(due) != 0 {
		t.Fatalf("due after 30 min with a 1 h interval: %d", len(due))
	}
	h.clock.Add(30 * time.Minute)
	if due := h.srv.pool.dueForRecheck(h.clock.Now()); len(due) != 1 {
		t.Fatalf("not due after the interval: %d", len(due))
	}
}
