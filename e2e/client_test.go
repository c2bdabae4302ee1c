package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

func sha256sum(b []byte) [32]byte { return sha256.Sum256(b) }

const (
	jsonBody   = `{"model":"claude-sonnet-4-5","max_tokens":64,"messages":[{"role":"user","content":"hi"}]}`
	streamBody = `{"model":"claude-sonnet-4-5","max_tokens":64,"stream":true,"messages":[{"role":"user","content":"hi"}]}`
)

// kind is what a client saw of one request.
type kind int

const (
	// kComplete: 200 and the whole message (JSON, or SSE through message_stop).
	kComplete kind = iota
	// kAPIError: an error status with a body in Anthropic's error shape.
	kAPIError
	// kStreamError: 200 SSE ending in an in-stream "event: error" whose
	// data is in Anthropic's error shape (the upstream's own report).
	kStreamError
	// kCut: status and headers arrived, then the body broke off with a
	// read error (unexpected EOF or a reset): never a clean end.
	kCut
	// kRefused: no response at all (connection refused or reset before
	// the status line).
	kRefused
	// kHang: the client's timeout fired.
	kHang
	// kBad: anything else, e.g. a stream that ends cleanly without
	// message_stop, a body not in Anthropic's shape, a truncated JSON body
	// with a clean EOF.
	kBad
)

func (k kind) String() string {
	return [...]string{"complete", "api_error", "stream_error", "cut", "refused", "hang", "bad"}[k]
}

// result is one request as the client saw it.
type result struct {
	id       string
	stream   bool
	status   int
	kind     kind
	detail   string
	start    time.Time
	ttfb     time.Duration // to the status line
	done     time.Time     // body fully read (or failed)
	errType  string        // Anthropic error type, for kAPIError / kStreamError
	bodySize int
	upstream bool // the answer came from the upstream (the fake's request-id)
}

func (r result) dur() time.Duration { return r.done.Sub(r.start) }

// newClient is an HTTP client that never waits forever.
func newClient(timeout time.Duration, conns int) *http.Client {
	return &http.Client{
		Timeout: timeout,
		Transport: &http.Transport{
			Proxy:               nil,
			MaxIdleConns:        conns * 2,
			MaxIdleConnsPerHost: conns * 2,
			IdleConnTimeout:     30 * time.Second,
			DisableCompression:  true,
		},
	}
}

// send makes one /v1/messages request and classifies what came back.
func send(ctx context.Context, c *http.Client, base string, stream bool) result {
	body := jsonBody
	if stream {
		body = streamBody
	}
	r := result{stream: stream, start: time.Now()}
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, base+"/v1/messages?beta=true", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Anthropic-Version", "2023-06-01")
	req.Header.Set("X-Api-Key", "client-placeholder")
	req.Header.Set("Accept-Encoding", "gzip, deflate, br, zstd")
	resp, err := c.Do(req)
	if err != nil {
		r.done = time.Now()
		r.kind, r.detail = transportKind(err), err.Error()
		return r
	}
	r.ttfb = time.Since(r.start)
	r.status = resp.StatusCode
	r.id = resp.Header.Get("X-Claudeflare-Request-Id")
	r.upstream = resp.Header.Get("Request-Id") != ""
	defer resp.Body.Close()
	ct := resp.Header.Get("Content-Type")
	if resp.StatusCode == 200 && strings.HasPrefix(ct, "text/event-stream") {
		r.kind, r.errType, r.detail, r.bodySize = readSSE(resp.Body)
		r.done = time.Now()
		if r.kind == kCut && isTimeout(r.detail) {
			r.kind = kHang
		}
		return r
	}
	b, err := io.ReadAll(resp.Body)
	r.done = time.Now()
	r.bodySize = len(b)
	if err != nil {
		r.kind, r.detail = kCut, err.Error()
		if isTimeout(r.detail) {
			r.kind = kHang
		}
		return r
	}
	if resp.StatusCode == 200 {
		var m struct {
			Type  string `json:"type"`
			Usage *struct {
				OutputTokens int `json:"output_tokens"`
			} `json:"usage"`
		}
		if json.Unmarshal(b, &m) != nil || m.Type != "message" || m.Usage == nil {
			r.kind, r.detail = kBad, "200 without a whole message: "+clip(b)
			return r
		}
		r.kind = kComplete
		return r
	}
	if t, ok := anthropicError(b); ok {
		r.kind, r.errType = kAPIError, t
		if resp.StatusCode == 429 && resp.Header.Get("Retry-After") == "" {
			r.kind, r.detail = kBad, "429 without retry-after"
		}
		return r
	}
	r.kind, r.detail = kBad, fmt.Sprintf("%d not in Anthropic's error shape: %s", resp.StatusCode, clip(b))
	return r
}

func isTimeout(s string) bool {
	return strings.Contains(s, "Client.Timeout") || strings.Contains(s, "deadline exceeded") || strings.Contains(s, "timeout")
}

func transportKind(err error) kind {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return kHang
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return kHang
	}
	return kRefused
}

func clip(b []byte) string {
	if len(b) > 300 {
		return string(b[:300]) + "..."
	}
	return string(b)
}

// anthropicError reports whether b is {"type":"error","error":{"type","message"}}.
func anthropicError(b []byte) (string, bool) {
	var e struct {
		Type  string `json:"type"`
		Error *struct {
			Type    string `json:"type"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if json.Unmarshal(b, &e) != nil || e.Type != "error" || e.Error == nil || e.Error.Type == "" || e.Error.Message == "" {
		return "", false
	}
	return e.Error.Type, true
}

// readSSE reads an event stream to its end: complete when the last event
// is message_stop, a stream error when it ends with an Anthropic-shaped
// "event: error", cut when the read fails, bad when it ends cleanly
// without either.
func readSSE(body io.Reader) (kind, string, string, int) {
	br := bufio.NewReaderSize(body, 32<<10)
	var event string
	var data bytes.Buffer
	last := ""
	size := 0
	for {
		line, err := br.ReadSlice('\n')
		size += len(line)
		if err != nil {
			if err == io.EOF && len(line) == 0 {
				switch last {
				case "message_stop":
					return kComplete, "", "", size
				case "error":
					return kStreamError, "", "", size
				}
				return kBad, "", "stream ended cleanly after " + last + " without message_stop", size
			}
			if err == bufio.ErrBufferFull {
				continue
			}
			if err == io.EOF {
				return kBad, "", "stream ended cleanly mid-line", size
			}
			return kCut, "", err.Error(), size
		}
		l := bytes.TrimRight(line, "\r\n")
		switch {
		case len(l) == 0:
			if event == "error" {
				t, ok := anthropicError(data.Bytes())
				if !ok {
					return kBad, "", "in-stream error not in Anthropic's shape: " + clip(data.Bytes()), size
				}
				last = "error"
				_ = t
			} else if event != "" {
				last = event
			}
			event = ""
			data.Reset()
		case bytes.HasPrefix(l, []byte("event:")):
			event = strings.TrimSpace(string(l[6:]))
		case bytes.HasPrefix(l, []byte("data:")):
			data.Write(bytes.TrimSpace(l[5:]))
		}
	}
}

// tally counts results by kind and keeps examples of the bad ones.
type tally struct {
	mu       sync.Mutex
	n        [kBad + 1]int
	byStatus map[int]int
	examples []string
	byKind   map[kind][]string // request ids by kind (not complete)
	lat      []time.Duration   // durations of complete responses
	ttfb     []time.Duration
}

func (t *tally) add(r result) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.n[r.kind]++
	if t.byStatus == nil {
		t.byStatus = map[int]int{}
	}
	t.byStatus[r.status]++
	if r.kind != kComplete && r.id != "" {
		if t.byKind == nil {
			t.byKind = map[kind][]string{}
		}
		if len(t.byKind[r.kind]) < 100 {
			t.byKind[r.kind] = append(t.byKind[r.kind], r.id)
		}
	}
	if r.kind == kComplete {
		t.lat = append(t.lat, r.dur())
		t.ttfb = append(t.ttfb, r.ttfb)
	}
	if r.kind != kComplete && r.kind != kAPIError && r.kind != kStreamError && len(t.examples) < 10 {
		t.examples = append(t.examples, fmt.Sprintf("%s stream=%v status=%d id=%s: %s", r.kind, r.stream, r.status, r.id, r.detail))
	}
}

func (t *tally) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	var parts []string
	for k := kComplete; k <= kBad; k++ {
		if t.n[k] > 0 {
			parts = append(parts, fmt.Sprintf("%s=%d", k, t.n[k]))
		}
	}
	return strings.Join(parts, " ") + fmt.Sprintf(" statuses=%v", t.byStatus)
}

func (t *tally) ids(k kind) []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]string(nil), t.byKind[k]...)
}

func (t *tally) total() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := 0
	for _, n := range t.n {
		s += n
	}
	return s
}

// load runs n clients against base until ctx ends; each sends JSON or
// SSE requests (one in every sseEvery is a stream, 0 = all JSON). onResult
// sees every result. Requests are not cancelled by ctx: the ones in
// flight when it ends finish (or time out) and are reported, so a hang is
// never hidden by the end of the run.
func load(ctx context.Context, c *http.Client, base string, n, sseEvery int, onResult func(result)) *sync.WaitGroup {
	var wg sync.WaitGroup
	var seq atomic.Int64
	for range n {
		wg.Go(func() {
			for ctx.Err() == nil {
				i := seq.Add(1)
				stream := sseEvery > 0 && i%int64(sseEvery) == 0
				onResult(send(context.Background(), c, base, stream))
			}
		})
	}
	return &wg
}
