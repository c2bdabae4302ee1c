package proxy

import (
	"strings"
	"testing"
)

func TestRequestModel(t *testing.T) {
	for body, want := range map[string]string{
		msgBody: "claude-sonnet-4-5",
		`{"max_tokens":1,"messages":[{"role":"user","content":"{\"model\":\"x\"}"}],"model":"claude-opus-4-1"}`: "claude-opus-4-1",
		`{"metadata":{"model":"claude-opus-4-1"}}`:                                                              "",
		`{"model":42}`:                "",
		`not json`:                    "",
		``:                            "",
		`["model","claude-opus-4-1"]`: "",
		`{"model":"claude-opus-4-1"` + strings.Repeat(" ", 10) + `,"broken":`: "claude-opus-4-1",
	} {
		if got := requestModel([]byte(body)); got != want {
			t.Errorf("requestModel(%.60q) = %q, want %q", body, got, want)
		}
	}
}
