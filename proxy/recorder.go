package proxy

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/claudeflare/claudeflare/config"
	"github.com/claudeflare/claudeflare/store"
	"github.com/claudeflare/claudeflare/vault"
)

// capBuf keeps at most max bytes of what is written to it, in a buffer
// from the size-class pools (bufpool.go) that doubles as it fills: a
// small answer holds 4 KiB, a 200 KB one 256 KiB.
type capBuf struct {
	b         []byte
	box       *[]byte // b's buffer, for putBuf
	max       int
	truncated bool
}

func (c *capBuf) Write(p []byte) (int, error) {
	n := len(p)
	if room := c.max - len(c.b); len(p) > room {
		p = p[:max(room, 0)]
		c.truncated = true
	}
	if need := len(c.b) + len(p); need > cap(c.b) {
		box := getBuf(min(max(need, 2*cap(c.b)), c.max))
		b := append((*box)[:0], c.b...)
		putBuf(c.box)
		c.box, c.b = box, b
	}
	c.b = append(c.b, p...)
	return n, nil
}

// getCapBuf returns a buffer for a response body that keeps max bytes
// and redactSlack more: the recorder redacts before it cuts at max, so
// that a secret straddling the cut is redacted whole.
func getCapBuf(max int) *capBuf {
	return &capBuf{max: max + redactSlack}
}

// putCapBuf gives the buffer back to its pool; c is not used afterwards.
func putCapBuf(c *capBuf) {
	if c != nil {
		putBuf(c.box)
		c.box, c.b = nil, nil
	}
}

// capture is what a request hands the recorder for its payload. The maps
// and slices are not touched by the request goroutine after submit;
// copying, redacting and sealing happen in the recorder goroutine.
type capture struct {
	method, path string
	reqHeader    http.Header
	reqBody      []byte   // the replay buffer, not copied
	reqBuf       *bodyBuf // reqBody's pooled buffer, held until release
	status       int
	respHeader   http.Header
	respBody     *capBuf // nil when bodies are not kept
	size         int64   // the bytes it holds, counted in recorder.queuedBytes
	// redactedPath is path redacted, once the row's path (the same
	// text) has been: each text of a record is redacted once.
	redactedPath string
}

// record is one request for the log.
type record struct {
	row  store.Request
	pay  *capture
	size int64 // the bytes the row holds, counted in recorder.queuedBytes
}

// recordOverhead approximates what a queued record holds besides its
// strings and bodies: the record, its row and the channel's slot.
const recordOverhead = 256

// rowBytes approximates the memory a queued row holds.
func rowBytes(row *store.Request) int64 {
	n := len(row.ID) + len(row.Method) + len(row.Path) + len(row.Model) + len(row.Account) +
		len(row.EndState) + len(row.Error) + len(row.Client) + len(row.UpstreamRequestID) + len(row.Session)
	if row.ServerToolUse != nil {
		n += len(*row.ServerToolUse)
	}
	for _, a := range row.AccountsTried {
		n += len(a) + 16
	}
	return recordOverhead + int64(n)
}

// captureBytes approximates the memory a queued payload holds: its
// buffers by their capacity (what they pin, not what they use) and its
// headers.
func captureBytes(c *capture) int64 {
	n := int64(cap(c.reqBody)+len(c.method)+len(c.path)) + headerBytes(c.reqHeader) + headerBytes(c.respHeader)
	if c.respBody != nil {
		n += int64(cap(c.respBody.b))
	}
	return n
}

// headerBytes approximates the memory h holds, with the map's and the
// slices' overhead.
func headerBytes(h http.Header) int64 {
	var n int64
	for k, vs := range h {
		n += int64(len(k)) + 48
		for _, v := range vs {
			n += int64(len(v)) + 16
		}
	}
	return n
}

// recorderOptions configure a recorder.
type recorderOptions struct {
	Payloads      string // config.PayloadsFull, PayloadsHeaders or PayloadsOff
	MaxBytes      int64
	BodyPaths     []string
	Redact        []*regexp.Regexp
	QueueSize     int
	QueueBytes    int64 // log.queue_bytes
	BatchSize     int
	FlushInterval time.Duration
}

// recorder writes request rows and sealed payloads in batches from one
// goroutine. submit never blocks. The queue is bounded by count
// (log.queue_size) and by the memory its records hold (log.queue_bytes,
// counted from submit until the record's batch is written). Under
// pressure a record loses its payload first, keeping its row: when the
// queue is three-quarters full by count or seven eighths by bytes. Only
// when even the row does not fit is the record dropped. Both are counted
// (metrics, /health) and logged at most once a minute.
type recorder struct {
	db    *store.DB
	vault *vault.Vault
	log   *slog.Logger
	now   func() time.Time
	opt   recorderOptions
	red   *redactor
	enc   store.CaptureEncoder // the writer goroutine's, reused from one payload to the next

	ch      chan *record
	syncReq chan chan struct{}
	done    chan struct{}

	mu     sync.RWMutex // guards closed against submit
	closed bool

	// file is the log's file as opened, to notice it deleted or
	// replaced; goneLogged is set once that has been logged (both only
	// used by the writer goroutine).
	file       os.FileInfo
	goneLogged bool

	queuedBytes  atomic.Int64 // held by the queued records, rows and payloads
	queueBytes   int64        // log.queue_bytes: no record is queued past it
	payloadBytes int64        // no payload is queued past it (7/8 of queueBytes)

	// onRecord are called with each request's row as it is submitted
	// (before redaction and before it is written); set before Serve.
	onRecord []func(store.Request)

	droppedPayloads atomic.Int64
	droppedRecords  atomic.Int64
	failedRecords   atomic.Int64
	lastDropLog     atomic.Int64 // unix ms
	lastFailLog     atomic.Int64 // unix ms
}

// newRecorder makes a recorder; the [log] defaults fill what opt leaves
// zero.
func newRecorder(db *store.DB, v *vault.Vault, log *slog.Logger, now func() time.Time, opt recorderOptions) *recorder {
	def := config.Default().Log
	if opt.QueueSize <= 0 {
		opt.QueueSize = def.QueueSize
	}
	if opt.BatchSize <= 0 {
		opt.BatchSize = def.BatchSize
	}
	if opt.FlushInterval <= 0 {
		opt.FlushInterval = def.FlushInterval.Std()
	}
	if opt.QueueBytes <= 0 {
		opt.QueueBytes = def.QueueBytes
	}
	var file os.FileInfo
	if db != nil && db.Path != "" {
		file, _ = os.Stat(db.Path)
	}
	return &recorder{
		db: db, vault: v, log: log, now: now, opt: opt, file: file, red: newRedactor(opt.Redact),
		queueBytes: opt.QueueBytes, payloadBytes: opt.QueueBytes - opt.QueueBytes/8,
		ch:      make(chan *record, opt.QueueSize),
		syncReq: make(chan chan struct{}),
		done:    make(chan struct{}),
	}
}

// wantPayload reports whether a request to path gets a payload at all.
func (r *recorder) wantPayload() bool { return r.opt.Payloads != config.PayloadsOff && r.vault != nil }

// wantBodies reports whether bodies of a request to path (canonical,
// escaped; a query string is not part of it) are kept.
func (r *recorder) wantBodies(path string) bool {
	path, _, _ = strings.Cut(path, "?")
	if r.opt.Payloads != config.PayloadsFull && r.opt.Payloads != "" {
		return false
	}
	if len(r.opt.BodyPaths) == 0 {
		return true
	}
	for _, p := range r.opt.BodyPaths {
		if strings.HasPrefix(path, p) {
			return true
		}
	}
	return false
}

// submit queues rec without ever blocking: its row if it fits in the
// queue, its payload only if that fits too, with room left for rows.
func (r *recorder) submit(rec *record) {
	for _, fn := range r.onRecord {
		fn(rec.row)
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	if r.closed {
		r.dropped(rec, true)
		return
	}
	if size := rowBytes(&rec.row); r.reserve(size, r.queueBytes) {
		rec.size = size // counted from here: released once written or dropped
	} else {
		r.dropped(rec, true)
		return
	}
	if p := rec.pay; p != nil {
		if !r.wantBodies(p.path) {
			p.reqBody = nil // not stored: not held in the queue either
			p.reqBuf.release()
			p.reqBuf = nil
		}
		if size := captureBytes(p); len(r.ch) < cap(r.ch)*3/4 && r.reserve(size, r.payloadBytes) {
			p.size = size
		} else {
			r.dropped(rec, false)
		}
	}
	select {
	case r.ch <- rec:
	default:
		r.dropped(rec, true)
	}
}

// reserve counts n more bytes in the queue if that keeps it within limit.
func (r *recorder) reserve(n, limit int64) bool {
	for {
		cur := r.queuedBytes.Load()
		if cur+n > limit {
			return false
		}
		if r.queuedBytes.CompareAndSwap(cur, cur+n) {
			return true
		}
	}
}

// dropped drops rec's payload, or the whole record, and counts it.
func (r *recorder) dropped(rec *record, whole bool) {
	if rec.pay != nil {
		r.droppedPayloads.Add(1)
		r.release(rec.pay)
		rec.pay = nil
	}
	if whole {
		r.droppedRecords.Add(1)
		r.queuedBytes.Add(-rec.size)
		rec.size = 0
	}
	now := r.now().UnixMilli()
	last := r.lastDropLog.Load()
	if now-last >= time.Minute.Milliseconds() && r.lastDropLog.CompareAndSwap(last, now) {
		r.log.Warn("request log queue full: dropping",
			"payloads_dropped", r.droppedPayloads.Load(), "records_dropped", r.droppedRecords.Load())
	}
}

// release gives back what a payload written (or dropped) held.
func (r *recorder) release(c *capture) {
	r.queuedBytes.Add(-c.size)
	c.size = 0
	putCapBuf(c.respBody)
	c.respBody = nil
	c.reqBody = nil
	c.reqBuf.release() // the request body's buffer goes back to its pool
	c.reqBuf = nil
}

// run is the writer goroutine; it returns when the queue is closed and
// drained.
func (r *recorder) run() {
	defer close(r.done)
	// Tick at half the flush interval, so that a record waits at most
	// half of it for its batch to start and the other half is left for
	// the batch to commit: a record is on disk within FlushInterval of
	// its request's end, as the durability promise says.
	t := time.NewTicker(max(r.opt.FlushInterval/2, time.Millisecond))
	defer t.Stop()
	batch := make([]*record, 0, r.opt.BatchSize)
	var held int64 // by the batch's records
	flush := func() {
		if len(batch) > 0 {
			r.write(batch)
			clear(batch)
			batch, held = batch[:0], 0
		}
	}
	// add puts rec in the batch, and writes the batch when it is full by
	// count or holds a quarter of log.queue_bytes: sealing holds a
	// batch's payloads twice for a moment, and they should not wait for
	// the tick while submit drops payloads for want of room.
	add := func(rec *record) {
		batch = append(batch, rec)
		if held += rec.size; rec.pay != nil {
			held += rec.pay.size
		}
		if len(batch) >= r.opt.BatchSize || held >= r.queueBytes/4 {
			flush()
		}
	}
	for {
		select {
		case rec, ok := <-r.ch:
			if !ok {
				flush()
				return
			}
			add(rec)
		case <-t.C:
			flush()
		case done := <-r.syncReq:
			// Everything submitted before the sync is in the channel.
		drain:
			for {
				select {
				case rec, ok := <-r.ch:
					if !ok {
						break drain
					}
					add(rec)
				default:
					break drain
				}
			}
			flush()
			close(done)
		}
	}
}

// sync waits until every record submitted so far is written.
func (r *recorder) sync(ctx context.Context) {
	done := make(chan struct{})
	select {
	case r.syncReq <- done:
	case <-r.done:
		return
	case <-ctx.Done():
		return
	}
	select {
	case <-done:
	case <-ctx.Done():
	}
}

// close stops accepting records and waits (until ctx ends) for the queue
// to be written.
func (r *recorder) close(ctx context.Context) {
	r.mu.Lock()
	if !r.closed {
		r.closed = true
		close(r.ch)
	}
	r.mu.Unlock()
	select {
	case <-r.done:
	case <-ctx.Done():
		r.log.Warn("request log not fully flushed at shutdown", "queued", len(r.ch))
	}
}

// write writes batch; what its records held is released once written (or
// lost).
func (r *recorder) write(batch []*record) {
	defer func() {
		for _, rec := range batch {
			if rec.pay != nil {
				r.release(rec.pay)
				rec.pay = nil
			}
			r.queuedBytes.Add(-rec.size)
			rec.size = 0
		}
	}()
	if r.db == nil || r.logFileGone() {
		r.failedRecords.Add(int64(len(batch)))
		return
	}
	rows := make([]store.Request, 0, len(batch))
	var pays []store.Payload
	for _, rec := range batch {
		path := rec.row.Path
		r.redactRow(&rec.row)
		rows = append(rows, rec.row)
		if rec.pay == nil {
			continue
		}
		if rec.pay.path == path {
			rec.pay.redactedPath = rec.row.Path
		}
		p, err := r.seal(rec)
		putCapBuf(rec.pay.respBody) // sealed: the capture buffer is free again
		rec.pay.respBody = nil
		if err != nil {
			r.log.Warn("payload not stored", "request_id", rec.row.ID, "err", err)
			continue
		}
		pays = append(pays, p)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := store.InsertRequests(ctx, r.db, rows, pays)
	if store.IsBusy(err) {
		// Another process held the log's write lock past the busy
		// timeout (a long cleanup, a sqlite3 shell): try the batch once
		// more before counting it lost.
		err = store.InsertRequests(ctx, r.db, rows, pays)
	}
	if err != nil {
		failed := r.failedRecords.Add(int64(len(rows)))
		// A full or broken disk fails every batch, several a second:
		// say so at once, then at most once a minute.
		now := r.now().UnixMilli()
		if last := r.lastFailLog.Load(); last == 0 || now-last >= time.Minute.Milliseconds() {
			r.lastFailLog.Store(now)
			r.log.Error("write request log", "records", len(rows), "records_failed_total", failed, "err", err)
		}
	}
}

// logFileGone reports whether the request log's file was deleted or
// replaced since it was opened: SQLite would go on writing into the
// deleted file, where no one can ever read a record again, so the
// records count as failed instead. It says so in the log once.
func (r *recorder) logFileGone() bool {
	if r.file == nil {
		return false
	}
	st, err := os.Stat(r.db.Path)
	if err == nil && os.SameFile(r.file, st) {
		return false
	}
	if !r.goneLogged {
		r.goneLogged = true
		r.log.Error("request log file deleted or replaced under the running daemon: requests are no longer logged",
			"path", r.db.Path, "hint", "restart the daemon to start a new request log")
	}
	return true
}

// seal builds, redacts, encodes (compressed, store.CaptureEncoder) and
// seals one payload. Only the writer goroutine calls it.
func (r *recorder) seal(rec *record) (store.Payload, error) {
	c := rec.pay
	path := c.redactedPath
	if path == "" {
		path = r.red.string(c.path)
	}
	pr := store.Capture{
		Request:  store.CapturedMessage{Method: c.method, Path: path, Headers: r.red.header(c.reqHeader)},
		Response: store.CapturedMessage{Status: c.status, Headers: r.red.header(c.respHeader)},
	}
	if r.wantBodies(c.path) {
		pr.Request.Body, pr.Request.Truncated = r.body(c.reqBody, c.reqHeader, false)
		if c.respBody != nil {
			pr.Response.Body, pr.Response.Truncated = r.body(c.respBody.b, c.respHeader, c.respBody.truncated)
		}
	} else {
		pr.Request.BodyOmitted, pr.Response.BodyOmitted = true, true
	}
	// Encoded after redaction: what is compressed and sealed is the
	// redacted bodies, never the secrets.
	plain, err := r.enc.Encode(&pr)
	if err != nil {
		return store.Payload{}, fmt.Errorf("encode payload: %w", err)
	}
	keyID, sealed, err := r.vault.SealPayload(rec.row.ID, plain)
	if err != nil {
		return store.Payload{}, fmt.Errorf("seal payload: %w", err)
	}
	truncated := pr.Request.Truncated || pr.Response.Truncated
	return store.Payload{RequestID: rec.row.ID, TS: rec.row.TS, KeyID: keyID, Sealed: sealed, Truncated: truncated}, nil
}

// body is what is stored of a captured body: decoded from its content
// coding (stored decoded; the Content-Encoding header is kept as it was
// sent), redacted, then cut at log.payload_max_bytes. A body in a coding
// that cannot be decoded is replaced by a note saying so. capCut is set
// when the capture already lost the end of the body.
func (r *recorder) body(b []byte, h http.Header, capCut bool) ([]byte, bool) {
	if len(b) == 0 {
		return nil, capCut
	}
	maxBytes := int(min(r.opt.MaxBytes, 1<<30))
	dec, cut, bad := decodeBody(h.Values("Content-Encoding"), b, maxBytes+redactSlack)
	if bad != "" {
		return undecodableBody(bad), capCut
	}
	out := r.red.bytes(dec)
	if len(out) > maxBytes {
		out, cut = out[:maxBytes], true
	}
	return out, cut || capCut
}

// redactRow redacts the request row's free-text fields, which are stored
// unsealed: a secret in a query string, a model name, a client name or an
// error.
func (r *recorder) redactRow(row *store.Request) {
	row.Path = r.red.string(row.Path)
	row.Model = r.red.string(row.Model)
	row.Client = r.red.string(row.Client)
	row.Error = r.red.string(row.Error)
}
