package proxy

import (
	"errors"
	"io"
	"math/bits"
	"sync"
	"sync/atomic"
)

// Buffers for request bodies and response captures, pooled by size
// class: powers of two from 4 KiB to 8 MiB, one sync.Pool each. A buffer
// goes back only to the class of its own capacity, so a 200 KB body holds
// a 256 KiB buffer, never one a 1 MiB body grew; a buffer of any other
// capacity (over 8 MiB, or not from here) is left to the garbage
// collector. Reused buffers are neither zeroed nor faulted in again,
// which fresh large allocations are.

const (
	minBufShift = 12 // 4 KiB
	maxBufShift = 23 // 8 MiB
)

var bufPools [maxBufShift - minBufShift + 1]sync.Pool

// bufClass is the index of the smallest class holding n bytes, or -1
// when n is over the largest.
func bufClass(n int) int {
	if n <= 1<<minBufShift {
		return 0
	}
	c := bits.Len(uint(n-1)) - minBufShift
	if c >= len(bufPools) {
		return -1
	}
	return c
}

// bufCap is the capacity getBuf(n) gives.
func bufCap(n int) int {
	if c := bufClass(n); c >= 0 {
		return 1 << (c + minBufShift)
	}
	return n
}

// getBuf returns an empty buffer of capacity bufCap(n) (its box, to hand
// back to putBuf): from its class's pool, or new.
func getBuf(n int) *[]byte {
	c := bufClass(n)
	if c < 0 {
		b := make([]byte, 0, n)
		return &b
	}
	if p, ok := bufPools[c].Get().(*[]byte); ok {
		*p = (*p)[:0]
		return p
	}
	b := make([]byte, 0, 1<<(c+minBufShift))
	return &b
}

// putBuf gives a buffer back to the pool of its class; nothing else may
// use it afterwards. A buffer whose capacity is not a class's is dropped.
func putBuf(p *[]byte) {
	if p == nil {
		return
	}
	n := cap(*p)
	if c := bufClass(n); c >= 0 && n == 1<<(c+minBufShift) {
		*p = (*p)[:0]
		bufPools[c].Put(p)
	}
}

// bodyBuf is a request body's buffer and the count of those still
// reading it: the exchange, each upstream request body made of it until
// the transport closes it, and the payload capture until the recorder is
// done with it. The last to let go gives it back to its pool.
type bodyBuf struct {
	box  *[]byte
	refs atomic.Int32
}

// newBodyBuf wraps a pooled buffer; the caller holds the one reference.
func newBodyBuf(box *[]byte) *bodyBuf {
	b := &bodyBuf{box: box}
	b.refs.Store(1)
	return b
}

func (b *bodyBuf) acquire() { b.refs.Add(1) }

// release lets go of one reference; nil is a no-op.
func (b *bodyBuf) release() {
	if b == nil {
		return
	}
	switch n := b.refs.Add(-1); {
	case n == 0:
		box := b.box
		b.box = nil
		putBuf(box)
	case n < 0:
		panic("proxy: request body buffer released once too often")
	}
}

// errBodyClosed is a read of an upstream request body after the
// transport closed it.
var errBodyClosed = errors.New("proxy: read of a closed request body")

// bodyReader is an upstream request's body: b, read from a buffer it
// holds a reference to until Close. Read and Close exclude each other:
// the HTTP/2 transport may close a body from another goroutine while
// its writer reads it, and the buffer must not go to another request
// while a read still copies from it.
type bodyReader struct {
	mu  sync.Mutex
	buf *bodyBuf
	b   []byte
}

// newBodyReader is a reader of b, a body held in buf (nil: not pooled).
func newBodyReader(buf *bodyBuf, b []byte) *bodyReader {
	if buf != nil {
		buf.acquire()
	}
	return &bodyReader{buf: buf, b: b}
}

func (r *bodyReader) Read(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.b == nil {
		return 0, errBodyClosed
	}
	if len(r.b) == 0 {
		return 0, io.EOF
	}
	n := copy(p, r.b)
	r.b = r.b[n:]
	return n, nil
}

// Close lets go of the buffer; later reads fail.
func (r *bodyReader) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.b = nil
	if r.buf != nil {
		r.buf.release()
		r.buf = nil
	}
	return nil
}
