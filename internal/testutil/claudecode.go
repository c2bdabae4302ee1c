package testutil

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
)

// ClaudeCodeBody builds a /v1/messages request of about size bytes as
// Claude Code sends them deep into a session: the model first, then turns
// of text, tool calls and tool results holding source code and terminal
// output, a system prompt, tool definitions and the metadata, encoded as
// Node does (no HTML escaping). extra(i) is appended to the i-th tool
// result (nil = nothing); the benchmarks of redaction put secrets there.
// The proxy's redaction benchmarks and the process benchmarks in e2e use
// the same body.
func ClaudeCodeBody(size int, extra func(i int) string) []byte {
	if extra == nil {
		extra = func(int) string { return "" }
	}
	type block struct {
		Type      string         `json:"type"`
		Text      string         `json:"text,omitempty"`
		ID        string         `json:"id,omitempty"`
		Name      string         `json:"name,omitempty"`
		Input     map[string]any `json:"input,omitempty"`
		ToolUseID string         `json:"tool_use_id,omitempty"`
		Content   string         `json:"content,omitempty"`
	}
	type message struct {
		Role    string  `json:"role"`
		Content []block `json:"content"`
	}
	type request struct {
		Model     string            `json:"model"`
		Messages  []message         `json:"messages"`
		System    []block           `json:"system"`
		Tools     []map[string]any  `json:"tools"`
		Metadata  map[string]string `json:"metadata"`
		MaxTokens int               `json:"max_tokens"`
		Stream    bool              `json:"stream"`
	}
	code := func(i int) string {
		var b strings.Builder
		for k := range 12 {
			fmt.Fprintf(&b, "func handle%d_%d(w http.ResponseWriter, r *http.Request) {\n\tif err := r.ParseForm(); err != nil {\n\t\thttp.Error(w, \"bad form: \\\"\"+err.Error()+\"\\\"\", 400)\n\t\treturn\n\t}\n\tfmt.Fprintf(w, \"%%s\\n\", r.Form.Get(\"q\")) // C:\\\\path\\\\%d\n}\n\n", i, k, k)
		}
		return b.String() + extra(i)
	}
	terminal := func(i int) string {
		return fmt.Sprintf("\x1b[32mok\x1b[0m  \tgithub.com/example/pkg%d\t0.%03ds\n\x1b[31mFAIL\x1b[0m\tgithub.com/example/other\t1.2s\n--- FAIL: TestThing (0.00s)\n    thing_test.go:42: got \"a\", want \"b\"\n", i, i%1000)
	}
	req := request{
		Model:     "claude-sonnet-4-5",
		MaxTokens: 32000,
		Stream:    true,
		System:    []block{{Type: "text", Text: strings.Repeat("You are Claude Code, Anthropic's official CLI for Claude. Use the tools to help the user with software engineering tasks.\n", 40)}},
		Tools: []map[string]any{{
			"name":        "Bash",
			"description": "Executes a given bash command in a persistent shell session with optional timeout.\n\nUsage notes:\n  - The command argument is required.\n  - Always quote file paths that contain spaces with double quotes (e.g., cd \"path with spaces/file.txt\")\n",
			"input_schema": map[string]any{"type": "object", "properties": map[string]any{
				"command": map[string]any{"type": "string", "description": "The command to execute"},
				"timeout": map[string]any{"type": "number", "description": "Optional timeout in milliseconds (max 600000)"},
			}, "required": []string{"command"}},
		}},
		Metadata: map[string]string{"user_id": "user_0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef_account_00000000-0000-4000-8000-000000000000_session_11111111-1111-4111-8111-111111111111"},
	}
	for i := 0; ; i++ {
		req.Messages = append(req.Messages,
			message{Role: "user", Content: []block{{Type: "text", Text: fmt.Sprintf("Please fix the failing test in pkg%d and explain what was wrong.", i)}}},
			message{Role: "assistant", Content: []block{
				{Type: "text", Text: "I'll look at the handler first."},
				{Type: "tool_use", ID: fmt.Sprintf("toolu_%024d", i), Name: "Bash", Input: map[string]any{"command": fmt.Sprintf("cat pkg%d/handler.go && go test ./pkg%d", i, i)}},
			}},
			message{Role: "user", Content: []block{{Type: "tool_result", ToolUseID: fmt.Sprintf("toolu_%024d", i), Content: code(i) + terminal(i)}}},
		)
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(req); err != nil {
			panic(err)
		}
		if buf.Len() >= size {
			return bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
		}
	}
}
