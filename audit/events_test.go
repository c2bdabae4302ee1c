package audit_test

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/claudeflare/claudeflare/audit"
	"github.com/claudeflare/claudeflare/internal/testutil"
	"github.com/claudeflare/claudeflare/store"
)

func auditRows(t *testing.T, db *store.DB) []audit.Entry {
	t.Helper()
	var out []audit.Entry
	if err := audit.List(context.Background(), db, time.Time{}, func(e audit.Entry) error {
		out = append(out, e)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// The subscriber writes the daemon's account.needs_login row, at the
// time the proxy marked the account, sanitised.
func TestNeedsLoginSubscriber(t *testing.T) {
	a := openAuditVault(t, t.TempDir())
	a.key = auditKey(t, a.v)
	var logs testutil.Buffer
	sub := audit.NeedsLogin(a.db, a.key, slog.New(slog.NewTextHandler(&logs, nil)))
	at := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	secret := "sk-ant-oat01-" + strings.Repeat("S", 40)
	sub("work", "invalid_grant: token "+secret+" revoked\n", at)
	sub("home", "", at)
	rows := auditRows(t, a.db)[1:] // after audit.keyed
	if len(rows) != 2 {
		t.Fatalf("rows: %+v", rows)
	}
	r := rows[0]
	if r.Actor != audit.ActorDaemon || r.Action != audit.ActionAccountNeedsLogin || !r.Time().Equal(at) ||
		!strings.HasPrefix(r.Detail, `account "work" needs a new login: invalid_grant: token `) || strings.Contains(r.Detail, secret) {
		t.Fatalf("row %+v", r)
	}
	if r := rows[1]; r.Detail != `account "home" needs a new login` {
		t.Fatalf("row without a reason: %q", r.Detail)
	}
	if _, err := audit.Verify(context.Background(), a.db, a.key, nil); err != nil {
		t.Fatal(err)
	}
	if logs.String() != "" {
		t.Fatalf("logged: %s", logs.String())
	}

	// A row that cannot be written is logged, with nothing secret.
	a.db.Close()
	sub("work", secret, at)
	if out := logs.String(); !strings.Contains(out, "write audit log") || strings.Contains(out, secret) {
		t.Fatalf("logged: %s", out)
	}
}
