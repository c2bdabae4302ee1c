package e2e

import (
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/claudeflare/claudeflare/internal/fakeapi"
	"github.com/claudeflare/claudeflare/internal/testutil"
)

// The gateway protocol (issue 20, item 2): Claude Code's requests, as
// Anthropic's "gateway protocol reference" describes them, replayed
// through the real daemon to the fake. What the fake receives keeps
// anthropic-beta and anthropic-version byte for byte (a pooled OAuth
// account adds oauth-2025-04-20, the one exception) and every body field
// byte for byte (a model alias rewrites "model", the other exception);
// the session id reaches the log as its hash; the client's credentials,
// cookies, forwarding claims and hop-by-hop headers do not reach the
// upstream; GET /v1/models lists the pool's models and the aliases.

const (
	confSession = "b4e5aaaa-9a3e-47c4-84ad-3a70f38c676e"
	// confBeta has a space after a comma on purpose: byte for byte.
	confBeta = "claude-code-20250219,interleaved-thinking-2025-05-14, context-management-2025-06-27,prompt-caching-scope-2026-01-05,effort-2025-11-24"
	// confBody is a Claude Code turn: the attribution block first in
	// system, cache_control, thinking blocks, tool use and results, a
	// server tool, metadata.user_id, adaptive thinking, context
	// management, effort, and a field no one knows yet; odd spacing and
	// key order are kept.
	confBody = `{"model":"MODEL","max_tokens":32000,
 "system":[{"type":"text","text":"x-anthropic-billing-header: cc_version=2.1.77.d02; cc_entrypoint=cli; cch=1f2e3;"},{"type":"text","text":"You are Claude Code, Anthropic's official CLI for Claude.","cache_control":{"type":"ephemeral"}}],
 "messages":[{"role":"user","content":[{"type":"text","text":"<system-reminder>ctx</system-reminder>"},{"type":"text","text":"list the files","cache_control":{"type":"ephemeral","ttl":"1h"}}]},
  {"role":"assistant","content":[{"type":"thinking","thinking":"ls will do","signature":"c2lnbmF0dXJl"},{"type":"tool_use","id":"toolu_01","name":"Bash","input":{"command":"ls"}}]},
  {"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_01","content":"a.go\nb.go"}]}],
 "tools":[{"name":"Bash","description":"Run a command","input_schema":{"type":"object","properties":{"command":{"type":"string"}},"required":["command"]}},{"type":"web_search_20250305","name":"web_search","max_uses":5}],
 "tool_choice" : {"type":"auto"},
 "metadata":{"user_id":"user_0784b260bff170af_account_261d5434-c8c2-431f-b07d-2e480cd4622f_session_` + confSession + `"},
 "thinking":{"type":"adaptive"},
 "context_management":{"edits":[{"type":"clear_thinking_20251015","keep":"all"}]},
 "output_config":{"effort":"medium"},
 "x_future_field":{"nested":[1,2.50,"\u00e9"]},
 "stream":STREAM}`
)

// confHeaders are the headers Claude Code sends (less its credential).
func confHeaders() http.Header {
	return http.Header{
		"Anthropic-Version":                         {"2023-06-01"},
		"Anthropic-Beta":                            {confBeta},
		"X-Claude-Code-Session-Id":                  {confSession},
		"X-App":                                     {"cli"},
		"User-Agent":                                {"claude-cli/2.1.77 (external, cli)"},
		"X-Stainless-Lang":                          {"js"},
		"X-Stainless-Package-Version":               {"0.74.0"},
		"X-Stainless-Retry-Count":                   {"0"},
		"X-Stainless-Timeout":                       {"600"},
		"Anthropic-Dangerous-Direct-Browser-Access": {"true"},
		"X-Client-Request-Id":                       {"6f1c0e9e-2b7d-4c0a-9d8e-1f2a3b4c5d6e"},
		"Content-Type":                              {"application/json"},
		"Accept":                                    {"application/json"},
		"Accept-Language":                           {"*"},
		"Sec-Fetch-Mode":                            {"cors"},
		// Never forwarded: the client's cookie, forwarding claims,
		// hop-by-hop headers.
		"Cookie":          {"session=from-the-browser"},
		"X-Forwarded-For": {"203.0.113.9"},
		"Connection":      {"keep-alive, X-Hop"},
		"X-Hop":           {"1"},
	}
}

// confDropped are what the gateway consumes or drops (README "Gateway
// protocol"); every other header the client sent reaches the fake as sent.
var confDropped = []string{"Cookie", "X-Forwarded-For", "Connection", "X-Hop", "X-Api-Key", "Authorization", "X-Claudeflare-Key", "Accept-Encoding", "Content-Length"}

func TestGatewayProtocolConformance(t *testing.T) {
	w := newWorld(t, `
[log]
flush_interval = "100ms"
[models]
aliases = {"team-fast" = "claude-haiku-4-5"}
[models.allow]
api = ["claude-*", "team-fast"]
`, "")
	w.addOAuth("work")
	key := strings.TrimSpace(w.MustRun("", "apikey", "create", "alice", "--models", "claude-sonnet-*,claude-haiku-*,team-fast"))
	d := w.start()
	c := newClient(30e9, 4)

	type sent struct {
		name, method, path, model, wantModel, body string
		hdr                                        http.Header
	}
	send := func(s sent) (int, []byte, fakeapi.Recorded) {
		t.Helper()
		before := len(w.fake.Requests())
		req, _ := http.NewRequest(s.method, d.url+s.path, strings.NewReader(s.body))
		req.Header = s.hdr
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var got []fakeapi.Recorded
		for _, r := range w.fake.Requests()[before:] {
			if r.Path != fakeapi.TokenPath && r.Path != fakeapi.ModelsPath {
				got = append(got, r)
			}
		}
		if resp.StatusCode != 200 || len(got) != 1 {
			if resp.StatusCode == 200 || len(got) > 0 {
				t.Fatalf("%s: status %d, %d upstream requests: %s\n%s", s.name, resp.StatusCode, len(got), b, tail(d.logs(), 2000))
			}
			return resp.StatusCode, b, fakeapi.Recorded{}
		}
		return resp.StatusCode, b, got[0]
	}
	body := func(model, stream string) string {
		return strings.NewReplacer("MODEL", model, "STREAM", stream).Replace(confBody)
	}
	withKey := func(h http.Header, k, v string) http.Header { h.Set(k, v); return h }

	cases := []sent{
		{name: "messages", method: "POST", path: "/v1/messages?beta=true", model: "claude-sonnet-4-5", wantModel: "claude-sonnet-4-5",
			hdr: withKey(confHeaders(), "X-Api-Key", key)},
		{name: "messages stream", method: "POST", path: "/v1/messages?beta=true", model: "claude-sonnet-4-5", wantModel: "claude-sonnet-4-5",
			hdr: withKey(confHeaders(), "Authorization", "Bearer "+key)},
		// The key in x-claudeflare-key, the developer's own login beside
		// it: a pooled (not relay) key never sends the client's credential.
		{name: "count_tokens", method: "POST", path: "/v1/messages/count_tokens?beta=true", model: "claude-haiku-4-5", wantModel: "claude-haiku-4-5",
			hdr: withKey(withKey(confHeaders(), "X-Claudeflare-Key", key), "Authorization", "Bearer sk-ant-oat01-the-developers-own")},
		{name: "alias", method: "POST", path: "/v1/messages?beta=true", model: "team-fast", wantModel: "claude-haiku-4-5",
			hdr: withKey(confHeaders(), "X-Api-Key", key)},
	}
	for _, s := range cases {
		stream := "false"
		if strings.Contains(s.name, "stream") {
			stream = "true"
		}
		s.body = body(s.model, stream)
		st, b, up := send(s)
		if st != 200 {
			t.Fatalf("%s: status %d: %s", s.name, st, b)
		}
		if stream == "true" && !strings.Contains(string(b), "event: message_stop") {
			t.Errorf("%s: not a whole stream: %.200s", s.name, b)
		}
		if want := body(s.wantModel, stream); string(up.Body) != want {
			t.Errorf("%s: the upstream body differs from the client's\n got %s\nwant %s", s.name, up.Body, want)
		}
		for k, v := range s.hdr {
			if slices.Contains(confDropped, k) {
				if g, ok := up.Header[k]; ok && slices.Equal(g, v) {
					t.Errorf("%s: %s reached the upstream: %q", s.name, k, g)
				}
				continue
			}
			want := v
			if k == "Anthropic-Beta" {
				want = []string{confBeta + ",oauth-2025-04-20"} // the pooled OAuth account's one addition
			}
			if g := up.Header[k]; !slices.Equal(g, want) {
				t.Errorf("%s: %s = %q upstream, want %q", s.name, k, g, want)
			}
		}
		for _, k := range []string{"Cookie", "X-Forwarded-For", "X-Hop", "X-Claudeflare-Key", "X-Api-Key"} {
			if g, ok := up.Header[k]; ok {
				t.Errorf("%s: %s reached the upstream: %q", s.name, k, g)
			}
		}
		if a := up.Header.Get("Authorization"); a != "Bearer "+w.fake.CurrentAccessToken("work") {
			t.Errorf("%s: upstream Authorization is not the pool account's (%.20s...)", s.name, a)
		}
	}

	// A model outside the key's list: refused before any upstream.
	hdr := withKey(confHeaders(), "X-Api-Key", key)
	st, b, _ := send(sent{name: "refused", method: "POST", path: "/v1/messages?beta=true", body: body("claude-opus-4-5", "false"), hdr: hdr})
	if st != http.StatusForbidden || !strings.Contains(string(b), `"permission_error"`) || !strings.Contains(string(b), `claude-opus-4-5`) {
		t.Errorf("opus for alice: %d %s", st, b)
	}

	// Model discovery: the pool's models and the alias, as Anthropic lists them.
	req, _ := http.NewRequest("GET", d.url+"/v1/models", nil)
	req.Header = withKey(confHeaders(), "X-Api-Key", key)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var list struct {
		Data []struct {
			Type, ID, DisplayName, CreatedAt string
		}
		HasMore bool   `json:"has_more"`
		FirstID string `json:"first_id"`
		LastID  string `json:"last_id"`
	}
	json.NewDecoder(resp.Body).Decode(&list)
	resp.Body.Close()
	var ids []string
	for _, m := range list.Data {
		ids = append(ids, m.ID)
	}
	// alice may use sonnet, haiku and team-fast: opus is not listed.
	if strings.Join(ids, ",") != "claude-haiku-4-5-20251001,claude-sonnet-4-5-20250929,team-fast" || list.HasMore || list.FirstID != ids[0] || list.LastID != "team-fast" {
		t.Errorf("/v1/models: %d %+v", resp.StatusCode, list)
	}

	// The log: one session hash for the session, the real model of the alias.
	type line struct {
		Model   string  `json:"model"`
		Status  int     `json:"status"`
		Session *string `json:"session"`
		Client  *string `json:"client"`
	}
	var lines []line
	testutil.WaitFor(t, "5 rows in requests list", func() bool {
		lines = lines[:0]
		for _, l := range strings.Split(strings.TrimSpace(w.MustRun("", "requests", "list", "--json")), "\n") {
			var x line
			if json.Unmarshal([]byte(l), &x) == nil {
				lines = append(lines, x)
			}
		}
		return len(lines) >= 5
	})
	models := map[string]int{}
	for i, l := range lines {
		models[l.Model]++
		if l.Session == nil || len(*l.Session) != 12 || *l.Session != *lines[0].Session {
			t.Errorf("row %d: session %v, want one 12-hex hash for the session", i, l.Session)
		}
	}
	if models["team-fast"] != 0 || models["claude-haiku-4-5"] != 2 || models["claude-opus-4-5"] != 1 {
		t.Errorf("logged models %v", models)
	}
}

// Through an API-key account nothing is added: anthropic-beta and
// anthropic-version reach the upstream exactly as the client sent them,
// and so does the body.
func TestGatewayProtocolAPIKeyAccountAddsNothing(t *testing.T) {
	w := newWorld(t, "", "")
	w.addAPIKey("key")
	d := w.start()
	body := strings.NewReplacer("MODEL", "claude-sonnet-4-5", "STREAM", "true").Replace(confBody)
	req, _ := http.NewRequest("POST", d.url+"/v1/messages?beta=true", strings.NewReader(body))
	req.Header = confHeaders()
	resp, err := newClient(30e9, 1).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	var up *fakeapi.Recorded
	for _, r := range w.fake.Requests() {
		if r.Path == fakeapi.MessagesPath {
			up = &r
		}
	}
	if resp.StatusCode != 200 || up == nil {
		t.Fatalf("status %d, upstream %v", resp.StatusCode, up)
	}
	if g := up.Header["Anthropic-Beta"]; !slices.Equal(g, []string{confBeta}) {
		t.Errorf("anthropic-beta %q", g)
	}
	if g := up.Header["Anthropic-Version"]; !slices.Equal(g, []string{"2023-06-01"}) {
		t.Errorf("anthropic-version %q", g)
	}
	if string(up.Body) != body {
		t.Errorf("body changed:\n%s", up.Body)
	}
	if up.Account != "key" {
		t.Errorf("the upstream request carried no account key (account %q)", up.Account)
	}
}
