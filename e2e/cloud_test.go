package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/claudeflare/claudeflare/internal/fakeapi"
	"github.com/claudeflare/claudeflare/internal/fakecloud"
	"github.com/claudeflare/claudeflare/internal/testutil"
)

// TestCloudAccountsServeWhenAnthropicIsLimited (issue 21): a pool whose
// Anthropic accounts are all limited (the fake answers 429 with a
// rejected unified status) answers through its Bedrock account, then,
// once Bedrock throttles, through its Vertex account: JSON and streams,
// with the client seeing Anthropic's JSON and events and the model id it
// asked for. The fakes check the SigV4 signature, the access token and
// the body shape. No cloud secret is in the daemon's log, the data dir,
// or anything a command printed.
func TestCloudAccountsServeWhenAnthropicIsLimited(t *testing.T) {
	w := newWorld(t, "retry_delay_ms = 10\n[log]\nflush_interval = \"100ms\"\n", "")
	br := fakecloud.NewBedrock("us-east-1")
	defer br.Close()
	vx := fakecloud.NewVertex("claudeflare-e2e", "us-east5")
	defer vx.Close()
	var printed strings.Builder
	run := func(stdin string, args ...string) string {
		t.Helper()
		out, errs, code := w.Run(stdin, args...)
		printed.WriteString(out + errs)
		if code != 0 {
			t.Fatalf("claudeflare %v: exit %d: %s", args, code, errs)
		}
		return out
	}
	w.addOAuth("anth-1")
	w.addOAuth("anth-2")
	run(string(br.Keys.JSON()), "accounts", "add", "bed", "--bedrock", "--region", br.Region, "--endpoint", br.URL, "--priority", "5")
	run(string(vx.KeyJSON()), "accounts", "add", "vtx", "--vertex", "--region", vx.Region, "--project", vx.Project, "--endpoint", vx.URL, "--priority", "9")
	w.fake.Inject(fakeapi.Fault{Path: fakeapi.MessagesPath, Kind: fakeapi.FaultStatus, Status: 429, Count: -1,
		Headers: fakeapi.RateLimitHeaders("rejected", time.Now().Add(4*time.Hour))})
	d := w.start()
	c := newClient(30*time.Second, 4)

	ask := func(stream bool) (int, http.Header, []byte) {
		t.Helper()
		body := `{"model":"` + sonnet + `","max_tokens":64,"messages":[{"role":"user","content":"hi"}]` +
			map[bool]string{true: `,"stream":true}`, false: `}`}[stream]
		req, _ := http.NewRequest(http.MethodPost, d.url+"/v1/messages", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Anthropic-Version", "2023-06-01")
		req.Header.Set("Anthropic-Beta", "interleaved-thinking-2025-05-14")
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		printed.Write(b)
		return resp.StatusCode, resp.Header, b
	}
	// checkJSON reads an answer as an Anthropic SDK would: a message of
	// the model asked for, with text and usage.
	checkJSON := func(who string, st int, b []byte) {
		t.Helper()
		var m struct {
			Type    string `json:"type"`
			Model   string `json:"model"`
			Content []struct {
				Type, Text string
			} `json:"content"`
			Usage struct {
				InputTokens  int `json:"input_tokens"`
				OutputTokens int `json:"output_tokens"`
			} `json:"usage"`
		}
		if st != 200 || json.Unmarshal(b, &m) != nil || m.Type != "message" || m.Model != sonnet || len(m.Content) != 1 ||
			m.Content[0].Text != "Hello from "+who+"." || m.Usage.OutputTokens != 17 {
			t.Fatalf("%s JSON answer %d: %s", who, st, b)
		}
	}
	checkStream := func(who string, st int, h http.Header, b []byte) {
		t.Helper()
		if st != 200 || !strings.HasPrefix(h.Get("Content-Type"), "text/event-stream") {
			t.Fatalf("%s stream %d %s: %s", who, st, h.Get("Content-Type"), b)
		}
		var names []string
		var text strings.Builder
		sc := bufio.NewScanner(bytes.NewReader(b))
		for sc.Scan() {
			if n, ok := strings.CutPrefix(sc.Text(), "event: "); ok {
				names = append(names, n)
			}
			if d, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
				var ev struct {
					Type    string
					Message struct{ Model string }
					Delta   struct{ Text string }
				}
				if err := json.Unmarshal([]byte(d), &ev); err != nil {
					t.Fatalf("%s: data %q is not JSON", who, d)
				}
				if ev.Type == "message_start" && ev.Message.Model != sonnet {
					t.Errorf("%s: message_start model %q", who, ev.Message.Model)
				}
				text.WriteString(ev.Delta.Text)
			}
		}
		want := "message_start content_block_start content_block_delta content_block_delta content_block_delta content_block_stop message_delta message_stop"
		if strings.Join(names, " ") != want || text.String() != "Hello from "+who+"." {
			t.Fatalf("%s: events %v, text %q", who, names, text.String())
		}
	}

	st, _, b := ask(false)
	checkJSON("bedrock", st, b)
	st, h, b := ask(true)
	checkStream("bedrock", st, h, b)
	for _, r := range br.Requests() {
		if r.Rejects != "" || r.Model != "anthropic.claude-sonnet-4-5-20250929-v1:0" {
			t.Fatalf("bedrock refused or got the wrong model: %+v", r)
		}
	}

	br.Throttle(1 << 20)
	st, _, b = ask(false)
	checkJSON("vertex", st, b)
	st, h, b = ask(true)
	checkStream("vertex", st, h, b)
	if got := vx.Requests(); len(got) != 2 || got[0].Rejects != "" || got[1].Rejects != "" || got[1].Op != "streamRawPredict" {
		t.Fatalf("vertex saw %+v", got)
	}

	// The log: who served, with the usage.
	testutil.WaitFor(t, "four rows in the log", func() bool {
		return strings.Count(run("", "requests", "list", "--json"), "\n") >= 4
	})
	var served []string
	for _, line := range strings.Split(strings.TrimSpace(run("", "requests", "list", "--json")), "\n") {
		var row struct {
			Account      string `json:"account"`
			Status       int    `json:"status"`
			OutputTokens int    `json:"output_tokens"`
		}
		json.Unmarshal([]byte(line), &row)
		if row.Status != 200 || row.OutputTokens != 17 {
			t.Errorf("row %s", line)
		}
		served = append(served, row.Account)
	}
	if strings.Join(served, ",") != "bed,bed,vtx,vtx" {
		t.Errorf("served by %v", served)
	}
	list := run("", "accounts", "list", "--json")
	if !strings.Contains(list, `"name":"bed","kind":"bedrock"`) || !strings.Contains(list, `"name":"vtx","kind":"vertex"`) {
		t.Errorf("accounts list: %s", list)
	}

	d.stop(t)
	secrets := []string{br.Keys.SecretAccessKey, br.Keys.SessionToken, "PRIVATE KEY"}
	secrets = append(secrets, vx.Tokens()...)
	where := map[string]string{"the daemon's log": d.logs(), "the commands' output": printed.String()}
	for name, text := range where {
		for _, s := range secrets {
			if strings.Contains(text, s) {
				t.Errorf("%s holds a cloud secret (%.12s...)", name, s)
			}
		}
	}
	filepath.Walk(w.dir, func(p string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() {
			return nil
		}
		data, _ := os.ReadFile(p)
		for _, s := range secrets {
			if bytes.Contains(data, []byte(s)) {
				t.Errorf("%s holds a cloud secret (%.12s...)", p, s)
			}
		}
		return nil
	})
}
