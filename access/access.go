// Package access is claudeflare's access control and hardening: client API
// keys and the roles that bundle permissions; the HTTP guard in front of
// the proxy (server.allow_ips, client authentication, permission checks,
// per-client limits, CORS, security headers); the admin JSON API under
// /api/; TLS for the listener. The audit rows it writes (client keys
// created, revoked, used from a new address; failed authentications) go
// through package audit.
//
// It is middleware: it knows nothing of the proxy (nor of flags or
// terminals: callers pass a *slog.Logger and a clock). It decides a
// request's canonical path with package internal/target and hands it on
// in the context; package daemon composes it around the proxy:
//
//	guard, err := access.New(ctx, access.Options{Config: cfg, VaultDB: v.DB(), AuditKey: key, LogDB: logDB, Logger: log})
//	handler := guard.Wrap(next)                 // next: /metrics and the proxy
//	ln, scheme, err := access.Listener(ln, cfg) // HTTPS with server.tls_cert/tls_key
//	guard.Start()                               // key poll, last-use and audit writes
//	defer guard.Stop(context.Background())      // after the server has stopped
//	// on SIGHUP, with the reloaded config:
//	err = guard.ConfigReloaded(ctx, cfg)
package access

import (
	"fmt"
	"slices"
	"strings"
)

// Permission is one thing a client key may do.
type Permission string

// The permissions, as SECURITY.md names them.
const (
	// PermAPIRequest allows /v1/*: the proxied Anthropic API.
	PermAPIRequest Permission = "api.request"
	// PermLogsView allows reading the request log (/api/requests).
	PermLogsView Permission = "logs.view"
	// PermAccountsManage allows pausing and resuming accounts.
	PermAccountsManage Permission = "accounts.manage"
	// PermDashboardView allows the read endpoints (/api/accounts, /api/stats).
	PermDashboardView Permission = "dashboard.view"
	// PermMetricsView allows /metrics (unless metrics.public).
	PermMetricsView Permission = "metrics.view"
	// PermPayloadsView allows reading a request's captured payload
	// (/api/requests/{id}/payload): admin only, as payloads hold prompts.
	PermPayloadsView Permission = "payloads.view"
)

// AllPermissions lists every permission.
var AllPermissions = []Permission{PermAPIRequest, PermLogsView, PermAccountsManage, PermDashboardView, PermMetricsView, PermPayloadsView}

// Role is a named bundle of permissions given to a client key.
type Role string

// The roles.
const (
	// RoleAPI may use the proxied API only: what Claude Code needs.
	RoleAPI Role = "api"
	// RoleViewer may read the dashboard endpoints, the log and metrics.
	RoleViewer Role = "viewer"
	// RoleAdmin may do everything.
	RoleAdmin Role = "admin"
)

// Roles lists the roles in order of increasing power.
var Roles = []Role{RoleAPI, RoleViewer, RoleAdmin}

var rolePermissions = map[Role][]Permission{
	RoleAPI:    {PermAPIRequest},
	RoleViewer: {PermDashboardView, PermLogsView, PermMetricsView},
	RoleAdmin:  AllPermissions,
}

// ParseRole parses a role name.
func ParseRole(s string) (Role, error) {
	r := Role(s)
	if _, ok := rolePermissions[r]; !ok {
		names := make([]string, len(Roles))
		for i, r := range Roles {
			names[i] = string(r)
		}
		return "", fmt.Errorf("unknown role %q (want %s)", s, strings.Join(names, ", "))
	}
	return r, nil
}

// Permissions lists what the role allows; an unknown role allows nothing.
func (r Role) Permissions() []Permission {
	return slices.Clone(rolePermissions[r])
}

// Can reports whether the role has the permission.
func (r Role) Can(p Permission) bool {
	return slices.Contains(rolePermissions[r], p)
}
