package access

import (
	"fmt"
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
