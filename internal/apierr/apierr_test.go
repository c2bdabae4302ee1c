package apierr_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/claudeflare/claudeflare/internal/apierr"
)

var idShape = regexp.MustCompile(`^[0-9A-HJKMNP-TV-Z]{26}$`)

func TestWriteAnswersInAnthropicShape(t *testing.T) {
	w := httptest.NewRecorder()
	apierr.Write(w, apierr.Reply{Status: http.StatusUnauthorized, Type: apierr.Authentication, Message: `claudeflare: a "valid" key <is> required`, Retry: apierr.RetryNo})
	res := w.Result()
	if res.StatusCode != http.StatusUnauthorized {
		t.Fatalf("status %d", res.StatusCode)
	}
	// The body's keys in Anthropic's order, type first.
	if want := `{"type":"error","error":{"type":"authentication_error","message":`; w.Body.String()[:len(want)] != want {
		t.Fatalf("body %s", w.Body)
	}
	var b apierr.Body
	if err := json.Unmarshal(w.Body.Bytes(), &b); err != nil || b.Type != "error" || b.Error.Type != apierr.Authentication || b.Error.Message != `claudeflare: a "valid" key <is> required` {
		t.Fatalf("body %s: %+v %v", w.Body, b, err)
	}
	for k, v := range map[string]string{
		"Content-Type":           "application/json",
		"Content-Length":         strconv.Itoa(w.Body.Len()),
		"X-Should-Retry":         "false",
		"X-Content-Type-Options": "nosniff",
		"X-Frame-Options":        "DENY",
		"Referrer-Policy":        "no-referrer",
	} {
		if got := res.Header.Get(k); got != v {
			t.Errorf("%s = %q, want %q", k, got, v)
		}
	}
	if id := res.Header.Get(apierr.RequestIDHeader); !idShape.MatchString(id) {
		t.Errorf("request id %q", id)
	}
	if res.Header.Get("Retry-After") != "" {
		t.Errorf("retry-after without RetryAfter: %q", res.Header.Get("Retry-After"))
	}
}

func TestWriteRetryHeaders(t *testing.T) {
	for _, tc := range []struct {
		retry      apierr.Retry
		after      time.Duration
		want, secs string
	}{
		{apierr.RetryUnset, 0, "", ""},
		{apierr.RetryNo, 0, "false", ""},
		{apierr.RetryYes, time.Second, "true", "1"},
		{apierr.RetryUnset, 1500 * time.Millisecond, "", "2"}, // rounded up
		{apierr.RetryYes, time.Nanosecond, "true", "1"},
	} {
		w := httptest.NewRecorder()
		apierr.Write(w, apierr.Reply{Status: 429, Type: apierr.RateLimit, Retry: tc.retry, RetryAfter: tc.after})
		if got := w.Header().Values("X-Should-Retry"); tc.want == "" && len(got) != 0 || tc.want != "" && (len(got) != 1 || got[0] != tc.want) {
			t.Errorf("retry %v: x-should-retry %q, want %q", tc.retry, got, tc.want)
		}
		if got := w.Header().Get("Retry-After"); got != tc.secs {
			t.Errorf("after %v: retry-after %q, want %q", tc.after, got, tc.secs)
		}
	}
}

func TestWriteKeepsTheRequestID(t *testing.T) {
	w := httptest.NewRecorder()
	w.Header().Set(apierr.RequestIDHeader, "01J0000000000000000000000X")
	apierr.Write(w, apierr.Reply{Status: 404, Type: apierr.NotFound})
	if got := w.Header().Values(apierr.RequestIDHeader); len(got) != 1 || got[0] != "01J0000000000000000000000X" {
		t.Fatalf("request id %q", got)
	}
}

func TestRequestIDsSortAndAreUnique(t *testing.T) {
	var g apierr.IDs
	base := time.Now()
	var ids []string
	for i := range 5000 {
		ids = append(ids, g.Next(base.Add(time.Duration(i/1000)*time.Millisecond)))
	}
	// A clock that steps back still gives increasing ids.
	ids = append(ids, g.Next(base.Add(-time.Second)))
	if !slices.IsSorted(ids) {
		t.Fatal("ids not in order")
	}
	if len(slices.Compact(slices.Clone(ids))) != len(ids) {
		t.Fatal("duplicate ids")
	}
	if !idShape.MatchString(ids[0]) {
		t.Fatalf("id %q", ids[0])
	}
}

func TestNewIDsSort(t *testing.T) {
	a, b := apierr.NewID(), apierr.NewID()
	if !idShape.MatchString(a) || !(a < b) {
		t.Fatalf("ids %q then %q", a, b)
	}
}
