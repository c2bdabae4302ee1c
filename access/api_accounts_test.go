package access_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/claudeflare/claudeflare/access"
	"github.com/claudeflare/claudeflare/audit"
	"github.com/claudeflare/claudeflare/internal/fakeapi"
	"github.com/claudeflare/claudeflare/store"
	"github.com/claudeflare/claudeflare/vault"
)

// adminKeys makes an admin and a viewer key and waits until the daemon
// knows both.
func (d *daemonStack) adminKeys() (admin, viewer string) {
	d.t.Helper()
	ctx := context.Background()
	admin, _, err := access.CreateKey(ctx, d.vdb, d.akey, "ops", access.RoleAdmin, "cli:test", time.Now())
	if err != nil {
		d.t.Fatal(err)
	}
	viewer, _, err = access.CreateKey(ctx, d.vdb, d.akey, "dash", access.RoleViewer, "cli:test", time.Now())
	if err != nil {
		d.t.Fatal(err)
	}
	d.extra = append(d.extra, admin, viewer)
	waitFor(d.t, "keys to be required", func() bool { return d.message(false).status == 401 })
	d.waitKeysSeen(admin, viewer)
	return admin, viewer
}

func (d *daemonStack) account(name string) store.Account {
	d.t.Helper()
	a, err := store.GetAccount(context.Background(), d.vdb, name)
	if err != nil {
		d.t.Fatal(err)
	}
	return a
}

func decode(t *testing.T, r reply) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(r.body), &m); err != nil {
		t.Fatalf("not JSON: %s", r.body)
	}
	return m
}

// The account routes behind accounts.manage: unblock, check, login and
// PATCH, against the real daemon and the fake upstream. Bad input is a
// 400 in Anthropic's shape and changes nothing; every change has an
// audit row naming the client key; no answer holds a secret.
func TestAdminAccountRoutes(t *testing.T) {
	d := newDaemonStack(t, nil)
	ctx := context.Background()
	admin, viewer := d.adminKeys()
	for _, p := range []string{"/api/accounts/work/unblock", "/api/accounts/work/check", "/api/accounts/work/login"} {
		expectStatus(t, d.do("POST", p, `{}`, "x-api-key", viewer), 403, "permission_error")
	}
	expectStatus(t, d.do("PATCH", "/api/accounts/work", `{"tier":5}`, "x-api-key", viewer), 403, "permission_error")
	expectStatus(t, d.do("GET", "/api/accounts/work/unblock", "", "x-api-key", admin), 405, "invalid_request_error")

	// unblock: a quarantine is cleared and said; unblocked_at moves.
	if err := store.SetStatus(ctx, d.vdb, d.account("work").ID, store.StatusQuarantined, "This organization has been disabled.", time.Now()); err != nil {
		t.Fatal(err)
	}
	r := d.do("POST", "/api/accounts/work/unblock", "", "x-api-key", admin)
	expectStatus(t, r, 200, "")
	if m := decode(t, r); m["was"] != "quarantined: This organization has been disabled." || m["status"] != "ok" || m["name"] != "work" {
		t.Fatalf("unblock: %s", r.body)
	}
	if a := d.account("work"); a.Status != store.StatusOK || a.UnblockedAt == 0 {
		t.Fatalf("after unblock: %+v", a)
	}
	expectStatus(t, d.do("POST", "/api/accounts/nobody/unblock", "", "x-api-key", admin), 404, "not_found_error")

	// check: a refused API key is key_refused, stored; a refused
	// organization is quarantined with the reason; a working account is ok
	// and a wrong block on it is cleared.
	d.api.RevokeAPIKeys("pool")
	r = d.do("POST", "/api/accounts/pool/check", "", "x-api-key", admin)
	expectStatus(t, r, 200, "")
	if m := decode(t, r); m["status"] != "key_refused" || m["http_status"] != float64(401) {
		t.Fatalf("check pool: %s", r.body)
	}
	if a := d.account("pool"); a.Status != store.StatusKeyRefused {
		t.Fatalf("pool after check: %+v", a)
	}
	d.api.SetAccountRefusal("work", 403, "permission_error", fakeapi.MsgOAuthNotAllowed)
	r = d.do("POST", "/api/accounts/work/check", "", "x-api-key", admin)
	expectStatus(t, r, 200, "")
	if m := decode(t, r); m["status"] != "quarantined" || !strings.Contains(m["reason"].(string), "not allowed for this organization") || m["http_status"] != float64(403) {
		t.Fatalf("check work: %s", r.body)
	}
	if a := d.account("work"); a.Status != store.StatusQuarantined {
		t.Fatalf("work after check: %+v", a)
	}
	d.api.ClearAccountRefusal("work")
	r = d.do("POST", "/api/accounts/work/check", "", "x-api-key", admin)
	expectStatus(t, r, 200, "")
	if m := decode(t, r); m["status"] != "ok" || m["http_status"] != float64(200) || !strings.Contains(m["detail"].(string), "cleared quarantined") {
		t.Fatalf("check work again: %s", r.body)
	}
	if a := d.account("work"); a.Status != store.StatusOK {
		t.Fatalf("work after the second check: %+v", a)
	}
	expectStatus(t, d.do("POST", "/api/accounts/nobody/check", "", "x-api-key", admin), 404, "not_found_error")

	// login: bad bodies are 400 and change nothing.
	before := d.account("pool")
	newKey := d.api.NewAPIKey("pool")
	d.extra = append(d.extra, newKey)
	for _, body := range []string{
		``, `{`, `[]`, `{"bogus":"x"}`, `{}`, `{"api_key":""}`,
		`{"api_key":"` + newKey + `","setup_token":"sk-ant-oat01-x"}`,
		`{"api_key":"two words"}`,
		`{"refresh_token":"` + d.api.NewOAuthAccount("pool") + `"}`, // an OAuth credential for an API-key account
		`{"api_key":"` + newKey + `"} {"api_key":"` + newKey + `"}`,
	} {
		r := d.do("POST", "/api/accounts/pool/login", body, "x-api-key", admin)
		expectStatus(t, r, 400, "invalid_request_error")
		if strings.Contains(r.body, newKey) || strings.Contains(r.body, "two words") {
			t.Fatalf("the answer echoes the secret: %s", r.body)
		}
	}
	if a := d.account("pool"); a.TokenVersion != before.TokenVersion || a.Status != before.Status {
		t.Fatalf("a refused login changed the account: %+v", a)
	}
	expectStatus(t, d.do("POST", "/api/accounts/nobody/login", `{"api_key":"`+newKey+`"}`, "x-api-key", admin), 404, "not_found_error")
	// A key upstream refuses (every key of pool is revoked) is checked
	// with one probe and refused.
	r = d.do("POST", "/api/accounts/pool/login", `{"api_key":"`+newKey+`"}`, "x-api-key", admin)
	expectStatus(t, r, 400, "invalid_request_error")
	if !strings.Contains(r.body, "upstream refused the API key (401)") || strings.Contains(r.body, newKey) {
		t.Fatalf("refused key: %s", r.body)
	}
	if a := d.account("pool"); a.TokenVersion != before.TokenVersion || a.Status != before.Status {
		t.Fatalf("a refused key changed the account: %+v", a)
	}

	// A good API key: stored, key_refused cleared, never echoed.
	if _, err := d.v.AddAccount(ctx, vault.NewAccount{Name: "spare", Kind: store.KindAPIKey, Priority: 5, Tier: 1},
		vault.Secrets{APIKey: d.api.NewAPIKey("spare")}); err != nil {
		t.Fatal(err)
	}
	if err := store.SetStatus(ctx, d.vdb, d.account("spare").ID, store.StatusKeyRefused, "API key refused (401)", time.Now()); err != nil {
		t.Fatal(err)
	}
	before = d.account("spare")
	spareKey := d.api.NewAPIKey("spare")
	d.extra = append(d.extra, spareKey)
	r = d.do("POST", "/api/accounts/spare/login", `{"api_key":"`+spareKey+`"}`, "x-api-key", admin)
	expectStatus(t, r, 200, "")
	if r.body != `{"logged_in":true,"name":"spare"}`+"\n" {
		t.Fatalf("login: %s", r.body)
	}
	if s, err := d.v.Secrets(ctx, before.ID); err != nil || s.APIKey != spareKey {
		t.Fatalf("the new key is not stored: %v", err)
	}
	if a := d.account("spare"); a.Status != store.StatusOK || a.TokenVersion <= before.TokenVersion {
		t.Fatalf("spare after login: %+v", a)
	}
	// A refresh token is refreshed once first: a dead one is refused.
	dead := d.api.NewOAuthAccount("work")
	d.api.RevokeAccount("work")
	workBefore := d.account("work")
	expectStatus(t, d.do("POST", "/api/accounts/work/login", `{"refresh_token":"`+dead+`"}`, "x-api-key", admin), 400, "invalid_request_error")
	if a := d.account("work"); a.TokenVersion != workBefore.TokenVersion {
		t.Fatal("a refused refresh token changed the account")
	}
	live := d.api.NewOAuthAccount("work")
	r = d.do("POST", "/api/accounts/work/login", `{"refresh_token":"`+live+`"}`, "x-api-key", admin)
	expectStatus(t, r, 200, "")
	if s, err := d.v.Secrets(ctx, workBefore.ID); err != nil || s.AccessToken == "" || s.RefreshToken == live {
		t.Fatalf("the refreshed tokens are not stored (err %v)", err)
	}
	d.extra = append(d.extra, dead, live)

	// PATCH: bad values are 400 and change nothing; a good edit answers
	// the new settings.
	workBefore = d.account("work")
	for _, body := range []string{`{}`, `{"overage":"never"}`, `{"tier":3}`, `{"priority":-1}`, `{"name":"bad name"}`, `{"paused":true}`, `{"tier":"5"}`} {
		expectStatus(t, d.do("PATCH", "/api/accounts/work", body, "x-api-key", admin), 400, "invalid_request_error")
	}
	expectStatus(t, d.do("PATCH", "/api/accounts/work", `{"name":"pool"}`, "x-api-key", admin), 409, "invalid_request_error")
	expectStatus(t, d.do("PATCH", "/api/accounts/nobody", `{"tier":5}`, "x-api-key", admin), 404, "not_found_error")
	if a := d.account("work"); a.Priority != workBefore.Priority || a.Tier != workBefore.Tier || a.Overage != workBefore.Overage || a.UpdatedAt != workBefore.UpdatedAt {
		t.Fatalf("a refused edit changed the account: %+v", a)
	}
	r = d.do("PATCH", "/api/accounts/work", `{"priority":3,"tier":20,"overage":"allow"}`, "x-api-key", admin)
	expectStatus(t, r, 200, "")
	if r.body != `{"name":"work","overage":"allow","priority":3,"tier":20}`+"\n" {
		t.Fatalf("edit: %s", r.body)
	}
	r = d.do("PATCH", "/api/accounts/work", `{"name":"office"}`, "x-api-key", admin)
	expectStatus(t, r, 200, "")
	if a := d.account("office"); a.ID != workBefore.ID || a.Overage != store.OverageAllow {
		t.Fatalf("renamed: %+v", a)
	}

	// Audit rows name the client key.
	var rows []string
	if err := audit.List(ctx, d.vdb, time.Time{}, func(e audit.Entry) error {
		rows = append(rows, e.Actor+" "+e.Action+": "+e.Detail)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`key:ops account.unblocked: account "work" unblocked (was quarantined: This organization has been disabled.) through the admin API`,
		`key:ops account.checked: account "pool" checked: key_refused`,
		`key:ops account.checked: account "work" checked: quarantined`,
		`key:ops account.checked: account "work" checked: upstream accepts it: cleared quarantined`,
		`key:ops account.logged_in: account "spare" logged in again through the admin API`,
		`key:ops account.logged_in: account "work" logged in again through the admin API`,
		`key:ops account.edited: account "work" edited: priority 0 -> 3, tier 1 -> 20, overage avoid -> allow through the admin API`,
	} {
		if countPrefix(rows, want) != 1 {
			t.Errorf("want one audit row %q in:\n%s", want, strings.Join(rows, "\n"))
		}
	}
	for _, row := range rows {
		for _, s := range append(d.api.AllTokens(), d.extra...) {
			if strings.Contains(row, s) {
				t.Fatalf("a secret in the audit log: %s", row)
			}
		}
	}
}
