package apierr

import (
	"crypto/rand"
	"encoding/binary"
	"sync"
	"time"
)

// crockford is the base32 alphabet of ULIDs: sortable, no I L O U.
const crockford = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

// IDs makes request ids: 26 characters, a 48-bit millisecond time then
// 80 bits that are random at each new millisecond and incremented within
// one, so ids sort in the order they were made (a monotonic ULID). The
// zero value is ready to use.
type IDs struct {
	mu   sync.Mutex
	last int64
	hi   uint16 // top 16 of the 80 bits
	lo   uint64 // low 64 of the 80 bits
}

// Next returns the id for a request made at now.
func (g *IDs) Next(now time.Time) string {
	ms := now.UnixMilli()
	g.mu.Lock()
	if ms <= g.last {
		ms = g.last
		g.lo++
		if g.lo == 0 {
			g.hi++
		}
	} else {
		var b [10]byte
		rand.Read(b[:])
		g.last = ms
		g.hi = binary.BigEndian.Uint16(b[:2]) & 0x7fff // leave room to count up
		g.lo = binary.BigEndian.Uint64(b[2:])
	}
	hi, lo := g.hi, g.lo
	g.mu.Unlock()

	var out [26]byte
	// 48-bit time: 10 characters (the first carries 3 bits).
	t := uint64(ms) & (1<<48 - 1)
	for i := 9; i >= 0; i-- {
		out[i] = crockford[t&31]
		t >>= 5
	}
	// 80 bits of entropy: 16 characters.
	for i := 25; i >= 10; i-- {
		out[i] = crockford[lo&31]
		lo = lo>>5 | uint64(hi&31)<<59
		hi >>= 5
	}
	return string(out[:])
}

// ids makes the ids of answers whose maker keeps no generator of its own
// (the guard's refusals, which are not in the request log).
var ids IDs

// NewID returns a request id made now.
func NewID() string { return ids.Next(time.Now()) }
