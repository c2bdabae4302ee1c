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
	"strings"
	"time"
	"unicode/utf8"

	"github.com/claudeflare/claudeflare/store"
)

// Opener opens a sealed payload: (*vault.Vault).OpenPayload.
type Opener func(keyID int64, sealed []byte) ([]byte, error)

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
}

type exportScan struct {
	store.Request
	KeyID        int64  `db:"key_id"`
	Sealed       []byte `db:"sealed"`
	PayTruncated bool   `db:"pay_truncated"`
}

// Export calls fn with every request f selects that has a payload, oldest
// first, its payload opened with open and turned into a Row. Requests
// without a payload (log.payloads = "off", or payloads already cleaned up)
// are skipped. Rows are read and converted one at a time, so memory does
// not grow with the log; the *Row and its bodies are reused, valid only
// until fn returns. f.Limit is ignored.
func Export(ctx context.Context, db *store.DB, f Filter, open Opener, fn func(*Row) error) error {
	f.Limit = 0
	where, args := f.where()
	rows, err := db.R.QueryxContext(ctx, `SELECT `+requestColumnsR+`, p.key_id, p.sealed, p.truncated AS pay_truncated
		FROM requests r JOIN payloads p ON p.request_seq = r.seq`+where+` ORDER BY r.ts, r.seq`, args...)
	if err != nil {
		return fmt.Errorf("query request log: %w", err)
	}
	defer rows.Close()
	var sc exportScan
	var row Row
	var conv converter
	for rows.Next() {
		sc.Sealed = sc.Sealed[:0]
		if err := rows.StructScan(&sc); err != nil {
			return fmt.Errorf("read request log: %w", err)
		}
		plain, err := open(sc.KeyID, sc.Sealed)
		if err != nil {
			return fmt.Errorf("payload of request %s: %w", sc.ID, err)
		}
		c, err := store.UnmarshalCapture(plain)
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

// Timestamp formats unix milliseconds as RFC 3339 UTC with milliseconds.
func Timestamp(ms int64) string {
	return time.UnixMilli(ms).UTC().Format("2006-01-02T15:04:05.000Z07:00")
}

// converter turns captures into rows, reusing its buffers.
type converter struct {
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
// gzip by its magic bytes). A body cut short decodes as far as it goes.
func decode(enc string, b []byte) ([]byte, bool) {
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
	const hex = "0123456789abcdef"
	buf.WriteByte('"')
	start := 0
	for i := 0; i < len(b); {
		c := b[i]
		if c >= 0x20 && c != '"' && c != '\\' && c < utf8.RuneSelf {
			i++
			continue
		}
		if c < utf8.RuneSelf {
			buf.Write(b[start:i])
			switch c {
			case '"', '\\':
				buf.WriteByte('\\')
				buf.WriteByte(c)
			case '\n':
				buf.WriteString(`\n`)
			case '\r':
				buf.WriteString(`\r`)
			case '\t':
				buf.WriteString(`\t`)
			default:
				buf.WriteString(`\u00`)
				buf.WriteByte(hex[c>>4])
				buf.WriteByte(hex[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRune(b[i:])
		if r == '\u2028' || r == '\u2029' {
			buf.Write(b[start:i])
			fmt.Fprintf(buf, `\u%04x`, r)
			i += size
			start = i
			continue
		}
		i += size
	}
	buf.Write(b[start:])
	buf.WriteByte('"')
	return buf.Bytes()
}
