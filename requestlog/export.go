package requestlog

import (
	"bytes"
	"compress/flate"
	"compress/gzip"
	"compress/zlib"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/textproto"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/claudeflare/claudeflare/store"
)

// Opener opens a sealed payload: (*vault.Vault).OpenPayload.
type Opener func(keyID int64, requestID string, sealed []byte) ([]byte, error)

// Row is one line of payload export.
type Row struct {
	ID        string  `json:"id"`
	Timestamp string  `json:"timestamp"`
	Account   string  `json:"account"`
	Status    int     `json:"status"`
	Request   Message `json:"request"`
	Response  Message `json:"response"`
	Truncated bool    `json:"truncated"`
}

// Message is one side of an exported request.
type Message struct {
	Method string `json:"method,omitempty"`
	Path   string `json:"path,omitempty"`
	Status int    `json:"status,omitempty"`
	// Headers have lower-case names; repeated values are joined with ", ".
	Headers map[string]string `json:"headers"`
	// Body is JSON when the body was JSON, a string for text (SSE
	// streams, truncated JSON), a base64 string when BodyEncoding is
	// "base64", and null when there was none.
	Body         json.RawMessage `json:"body"`
	BodyEncoding string          `json:"body_encoding,omitempty"`
	// BodyOmitted is set when the body was not captured (log.payloads =
	// "headers", or a path outside log.body_paths).
	BodyOmitted bool `json:"body_omitted,omitempty"`
	// Truncated is set when the body was cut at log.payload_max_bytes.
	Truncated bool `json:"truncated,omitempty"`
	// Final is the response's final message (FinalMessage), "null" when
	// there is none; empty, and left out, on the request side.
	Final json.RawMessage `json:"message,omitempty"`
}

// Export calls fn with every request f selects that has a payload, oldest
// first, its payload opened with open and turned into a Row. Requests
// without a payload (log.payloads = "off", or payloads already cleaned up)
// are skipped. Rows are read and converted one at a time, so memory does
// not grow with the log; the *Row and its bodies are reused, valid only
// until fn returns. f.Limit is ignored.
func Export(ctx context.Context, db *store.DB, f Filter, open Opener, fn func(*Row) error) error {
	rows, err := queryExport(ctx, db, f)
	if err != nil {
		return err
	}
	defer rows.Close()
	var sc store.RequestPayload
	var row Row
	var conv converter
	for rows.Next() {
		if err := rows.Scan(&sc); err != nil {
			return fmt.Errorf("read request log: %w", err)
		}
		plain, err := open(sc.KeyID, sc.ID, sc.Sealed)
		if err != nil {
			return fmt.Errorf("payload of request %s: %w", sc.ID, err)
		}
		c, err := conv.dec.decode(plain)
		if err != nil {
			return fmt.Errorf("payload of request %s: %w", sc.ID, err)
		}
		conv.row(&row, &sc.Request, c, sc.PayTruncated)
		if err := fn(&row); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read request log: %w", err)
	}
	return nil
}

func queryExport(ctx context.Context, db *store.DB, f Filter) (*store.RequestPayloads, error) {
	rows, err := db.QueryRequestPayloads(ctx, f)
	if err != nil {
		return nil, fmt.Errorf("query request log: %w", err)
	}
	return rows, nil
}

// Timestamp formats unix milliseconds as RFC 3339 UTC with milliseconds.
func Timestamp(ms int64) string {
	return time.UnixMilli(ms).UTC().Format("2006-01-02T15:04:05.000Z07:00")
}

// converter turns captures into rows, reusing its buffers.
type converter struct {
	dec               captureDecoder
	reqBody, respBody bytes.Buffer
}

func (cv *converter) row(out *Row, r *store.Request, c *store.Capture, truncated bool) {
	*out = Row{
		ID:        r.ID,
		Timestamp: Timestamp(r.TS),
		Account:   r.Account,
		Status:    r.Status,
		Truncated: truncated || c.Request.Truncated || c.Response.Truncated,
	}
	out.Request = message(&c.Request, &cv.reqBody)
	out.Response = message(&c.Response, &cv.respBody)
	out.Response.Final = finalMessage(&c.Response)
	if out.Request.Method == "" {
		out.Request.Method = r.Method
	}
	if out.Request.Path == "" {
		out.Request.Path = r.Path
	}
	if out.Response.Status == 0 {
		out.Response.Status = r.Status
	}
}

func message(m *store.CapturedMessage, buf *bytes.Buffer) Message {
	out := Message{
		Method:      m.Method,
		Path:        m.Path,
		Status:      m.Status,
		Headers:     make(map[string]string, len(m.Headers)),
		BodyOmitted: m.BodyOmitted,
		Truncated:   m.Truncated,
	}
	for k, vs := range m.Headers {
		out.Headers[strings.ToLower(k)] = strings.Join(vs, ", ")
	}
	out.Body, out.BodyEncoding = Body(header(m.Headers, "Content-Type"), header(m.Headers, "Content-Encoding"), m.Body, buf)
	return out
}

// finalMessage is FinalMessage of a captured response, the JSON null when
// there is none.
func finalMessage(m *store.CapturedMessage) json.RawMessage {
	if m.BodyOmitted {
		return json.RawMessage("null")
	}
	if f := FinalMessage(header(m.Headers, "Content-Type"), header(m.Headers, "Content-Encoding"), m.Body, m.Truncated); f != nil {
		return f
	}
	return json.RawMessage("null")
}

func header(h map[string][]string, name string) string {
	if vs := h[name]; len(vs) > 0 {
		return vs[0]
	}
	for k, vs := range h {
		if len(vs) > 0 && textproto.CanonicalMIMEHeaderKey(k) == name {
			return vs[0]
		}
	}
	return ""
}

// maxDecoded caps a decompressed body.
const maxDecoded = 64 << 20

// Body renders a captured body as a JSON value: JSON as JSON, an SSE
// stream or other UTF-8 text (including JSON cut short) as a string,
// anything else as a base64 string with encoding "base64"; nil bytes give
// null. A gzip or deflate body is decoded first. buf is scratch space the
// result may point into, valid until the next call with the same buf.
func Body(contentType, contentEncoding string, b []byte, buf *bytes.Buffer) (json.RawMessage, string) {
	if len(b) == 0 {
		return json.RawMessage("null"), ""
	}
	if d, ok := decode(contentEncoding, b); ok {
		b = d
	}
	mt, _, _ := mime.ParseMediaType(contentType)
	buf.Reset()
	if mt != "text/event-stream" && (strings.Contains(mt, "json") || looksJSON(b)) {
		if err := json.Compact(buf, b); err == nil {
			return buf.Bytes(), ""
		}
		buf.Reset()
	}
	if utf8.Valid(b) {
		return appendString(buf, b), ""
	}
	buf.WriteByte('"')
	enc := base64.NewEncoder(base64.StdEncoding, buf)
	enc.Write(b)
	enc.Close()
	buf.WriteByte('"')
	return buf.Bytes(), "base64"
}

func looksJSON(b []byte) bool {
	b = bytes.TrimLeft(b, " \t\r\n")
	return len(b) > 0 && (b[0] == '{' || b[0] == '[')
}

// decode undoes a gzip or deflate content encoding (also recognising
// gzip by its magic bytes). A body cut short decodes as far as it goes. A
// body that is valid UTF-8 is left as it is, whatever the header says:
// the recorder stores bodies decoded (keeping Content-Encoding as sent),
// and a compressed stream is not valid UTF-8 (gzip's magic bytes never
// are), while a raw deflate reader turns some text into garbage.
func decode(enc string, b []byte) ([]byte, bool) {
	if utf8.Valid(b) {
		return nil, false
	}
	enc = strings.ToLower(strings.TrimSpace(enc))
	var r io.Reader
	var err error
	switch {
	case enc == "gzip" || enc == "x-gzip" || enc == "" && len(b) > 2 && b[0] == 0x1f && b[1] == 0x8b:
		r, err = gzip.NewReader(bytes.NewReader(b))
	case enc == "deflate":
		r, err = zlib.NewReader(bytes.NewReader(b))
		if err != nil {
			r, err = flate.NewReader(bytes.NewReader(b)), nil
		}
	default:
		return nil, false
	}
	if err != nil {
		return nil, false
	}
	var out bytes.Buffer
	_, err = io.Copy(&out, io.LimitReader(r, maxDecoded))
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) || out.Len() == 0 {
		return nil, false
	}
	return out.Bytes(), true
}

// appendString writes b to buf as a JSON string.
func appendString(buf *bytes.Buffer, b []byte) json.RawMessage {
	buf.Write(appendJSONString(buf.AvailableBuffer(), b))
	return buf.Bytes()
}

// appendJSONString appends s as a JSON string: quotes, backslashes and
// control characters escaped, U+2028 and U+2029 escaped as encoding/json
// does, invalid UTF-8 replaced by U+FFFD; '<', '>' and '&' are kept.
func appendJSONString[T string | []byte](dst []byte, s T) []byte {
	const hex = "0123456789abcdef"
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			}
			i++
			start = i
			continue
		}
		// At most 4 bytes: the conversion of a []byte uses a stack buffer.
		r, size := utf8.DecodeRuneInString(string(s[i:min(i+utf8.UTFMax, len(s))]))
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hex[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// AppendJSON appends r as one line of JSON (without the newline) to dst,
// as encoding/json would write it with HTML escaping off, without its
// reflection and without validating the bodies a second time.
func (r *Row) AppendJSON(dst []byte) []byte {
	dst = append(dst, `{"id":`...)
	dst = appendJSONString(dst, r.ID)
	dst = append(dst, `,"timestamp":`...)
	dst = appendJSONString(dst, r.Timestamp)
	dst = append(dst, `,"account":`...)
	dst = appendJSONString(dst, r.Account)
	dst = append(dst, `,"status":`...)
	dst = strconv.AppendInt(dst, int64(r.Status), 10)
	dst = append(dst, `,"request":`...)
	dst = r.Request.appendJSON(dst)
	dst = append(dst, `,"response":`...)
	dst = r.Response.appendJSON(dst)
	dst = append(dst, `,"truncated":`...)
	dst = strconv.AppendBool(dst, r.Truncated)
	return append(dst, '}')
}

func (m *Message) appendJSON(dst []byte) []byte {
	dst = append(dst, '{')
	if m.Method != "" {
		dst = append(dst, `"method":`...)
		dst = appendJSONString(dst, m.Method)
		dst = append(dst, ',')
	}
	if m.Path != "" {
		dst = append(dst, `"path":`...)
		dst = appendJSONString(dst, m.Path)
		dst = append(dst, ',')
	}
	if m.Status != 0 {
		dst = append(dst, `"status":`...)
		dst = strconv.AppendInt(dst, int64(m.Status), 10)
		dst = append(dst, ',')
	}
	dst = append(dst, `"headers":`...)
	if m.Headers == nil {
		dst = append(dst, "null"...)
	} else {
		keys := make([]string, 0, len(m.Headers))
		for k := range m.Headers {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		dst = append(dst, '{')
		for i, k := range keys {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = appendJSONString(dst, k)
			dst = append(dst, ':')
			dst = appendJSONString(dst, m.Headers[k])
		}
		dst = append(dst, '}')
	}
	dst = append(dst, `,"body":`...)
	if len(m.Body) == 0 {
		dst = append(dst, "null"...)
	} else {
		dst = append(dst, m.Body...)
	}
	if m.BodyEncoding != "" {
		dst = append(dst, `,"body_encoding":`...)
		dst = appendJSONString(dst, m.BodyEncoding)
	}
	if m.BodyOmitted {
		dst = append(dst, `,"body_omitted":true`...)
	}
	if m.Truncated {
		dst = append(dst, `,"truncated":true`...)
	}
	if len(m.Final) > 0 {
		dst = append(dst, `,"message":`...)
		dst = append(dst, m.Final...)
	}
	return append(dst, '}')
}

// exportJob is one row on its way through WriteNDJSON.
type exportJob struct {
	n    int64 // position in the output
	sc   store.RequestPayload
	line []byte
	err  error
}

// WriteNDJSON writes what Export would pass to fn to w as NDJSON, one
// line per row, in the same order. Payloads are opened and converted by
// workers goroutines (0 means GOMAXPROCS) while one goroutine reads the
// log and the caller's goroutine writes; at most 8 rows per worker are in
// flight, so memory stays flat whatever the size of the log. It returns
// the number of rows written. On an error, what was written so far stays
// written.
func WriteNDJSON(ctx context.Context, db *store.DB, f Filter, open Opener, w io.Writer, workers int) (int64, error) {
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	if workers == 1 {
		var n int64
		var line []byte
		err := Export(ctx, db, f, open, func(r *Row) error {
			line = append(r.AppendJSON(line[:0]), '\n')
			if _, err := w.Write(line); err != nil {
				return err
			}
			n++
			return nil
		})
		return n, err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	inflight := workers * 8
	free := make(chan *exportJob, inflight)
	for range inflight {
		free <- &exportJob{}
	}
	jobs := make(chan *exportJob, inflight)
	done := make(chan *exportJob, inflight)

	// Reader: one query, rows handed out in order.
	readErr := make(chan error, 1)
	go func() {
		defer close(jobs)
		readErr <- readRows(ctx, db, f, free, jobs)
	}()
	// Workers: open, decode, convert, encode.
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var conv converter
			var row Row
			for j := range jobs {
				j.line, j.err = conv.line(j.line[:0], &j.sc, open, &row)
				done <- j
			}
		}()
	}
	go func() { wg.Wait(); close(done) }()

	// Writer: lines in order, whatever order they were finished in. The
	// job struct goes back to free once written; free and done hold every
	// job there is, so sending to them never blocks.
	pending := make(map[int64]*exportJob, inflight)
	var next int64
	var firstErr error
	for j := range done {
		if firstErr != nil {
			continue // drain until the workers are done
		}
		pending[j.n] = j
		for j := pending[next]; j != nil; j = pending[next] {
			delete(pending, next)
			if j.err != nil {
				firstErr = j.err
			} else if _, err := w.Write(j.line); err != nil {
				firstErr = err
			}
			if firstErr != nil {
				cancel()
				break
			}
			next++
			free <- j
		}
	}
	if err := <-readErr; firstErr == nil && err != nil {
		firstErr = err
	}
	return next, firstErr
}

// readRows queries the rows f selects and sends each, numbered, to jobs,
// taking job structs from free.
func readRows(ctx context.Context, db *store.DB, f Filter, free, jobs chan *exportJob) error {
	rows, err := queryExport(ctx, db, f)
	if err != nil {
		return err
	}
	defer rows.Close()
	var n int64
	for rows.Next() {
		var j *exportJob
		select {
		case j = <-free:
		case <-ctx.Done():
			return ctx.Err()
		}
		j.n, j.err = n, nil
		if err := rows.Scan(&j.sc); err != nil {
			return fmt.Errorf("read request log: %w", err)
		}
		n++
		select {
		case jobs <- j:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read request log: %w", err)
	}
	return nil
}

// line opens, decodes and converts one scanned row and appends it to dst
// as a line of JSON.
func (cv *converter) line(dst []byte, sc *store.RequestPayload, open Opener, row *Row) ([]byte, error) {
	plain, err := open(sc.KeyID, sc.ID, sc.Sealed)
	if err != nil {
		return dst, fmt.Errorf("payload of request %s: %w", sc.ID, err)
	}
	c, err := cv.dec.decode(plain)
	if err != nil {
		return dst, fmt.Errorf("payload of request %s: %w", sc.ID, err)
	}
	cv.row(row, &sc.Request, c, sc.PayTruncated)
	return append(row.AppendJSON(dst), '\n'), nil
}
