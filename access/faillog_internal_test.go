package access

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// The failed-auth aggregation holds bounded memory however many
// addresses fail and however long writes keep failing.
func TestFailLogBounded(t *testing.T) {
	f := failLog{m: map[failKey]*failCount{}}
	start := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	for m := range 100 {
		now := start.Add(time.Duration(m) * time.Minute)
		for i := range 10000 {
			f.add(fmt.Sprintf("10.%d.%d.%d", m, i/250, i%250), reasonNoKey, now)
		}
	}
	if n := len(f.perMin); n > maxHeldFailMinutes {
		t.Fatalf("%d minutes held", n)
	}
	entries, addrs := 0, 0
	for _, c := range f.m {
		entries++
		addrs += len(c.addrs)
	}
	if max := maxHeldFailMinutes * (maxFailAddrsPerMinute + 1); entries > max {
		t.Fatalf("%d entries held, want at most %d", entries, max)
	}
	if addrs > maxHeldFailMinutes*maxOtherAddrs {
		t.Fatalf("%d aggregated addresses held", addrs)
	}
	if f.dropped == 0 {
		t.Fatal("minutes past the bound were not counted as dropped")
	}
	// One minute: 32 rows of their own, one for the rest.
	ws := f.take(start.Add(time.Hour*3), true)
	first := ws[0].minute
	rows := 0
	for _, w := range ws {
		if w.minute == first {
			rows++
		}
	}
	if rows != maxFailAddrsPerMinute+1 {
		t.Fatalf("%d rows for a minute of 10000 addresses", rows)
	}
}

// Windows put back after a failed write merge into the aggregated row
// without losing the "more than" when the merged addresses pass the cap.
func TestFailLogPutBackKeepsAddressCap(t *testing.T) {
	f := failLog{m: map[failKey]*failCount{}}
	now := time.Date(2026, 3, 1, 12, 0, 30, 0, time.UTC)
	fill := func(net int) {
		for i := range maxFailAddrsPerMinute + maxOtherAddrs {
			f.add(fmt.Sprintf("10.%d.%d.%d", net, i/250, i%250), reasonNoKey, now)
		}
	}
	fill(1)
	failed := f.take(now, true) // a write that failed
	fill(2)
	f.putBack(failed)
	for _, w := range f.take(now, true) {
		if w.addr != otherAddrs {
			continue
		}
		want := fmt.Sprintf("from more than %d more addresses", maxOtherAddrs)
		if d := w.detail(); !strings.Contains(d, want) {
			t.Fatalf("aggregated row %q, want %q", d, want)
		}
		return
	}
	t.Fatal("no aggregated row")
}
