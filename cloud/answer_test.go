package cloud

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// A non-streamed answer longer than answerMax is refused, not read whole.
func TestAnswerBound(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.Copy(w, io.LimitReader(zeros{}, answerMax+1<<10))
	}))
	defer srv.Close()
	c, err := New(Bedrock, Settings{Region: "us-east-1", Endpoint: srv.URL},
		`{"access_key_id":"AKIAEXAMPLE","secret_access_key":"secretexample"}`, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	body := `{"model":"claude-sonnet-4-5","max_tokens":8,"messages":[{"role":"user","content":"hi"}]}`
	resp, _, err := c.Do(context.Background(), MessagesRoute, http.Header{}, []byte(body))
	if err == nil || !strings.Contains(err.Error(), "an answer of more than") {
		t.Fatalf("a %d-byte answer: %v, %v", answerMax+1<<10, resp, err)
	}
}
