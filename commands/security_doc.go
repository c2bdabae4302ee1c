package commands

// securityModel is the SECURITY section of claudeflare(1): what each kind
// of attacker can and cannot do. The README's threat model says the same
// at more length; keep them in step.
var securityModel = []struct{ who, text string }{
	{"Network access, no client key",
		"While client keys exist: GET /health (counts only) and GET or HEAD /; everything else is 401, " +
			"with one message whether a key is missing, unknown or revoked (failed attempts are audited, " +
			"at most 32 addresses a minute plus one aggregated row). The route is decided once from the raw " +
			"request target: a target that is not canonical (%2F, %5C, %2E, %25, //, dot segments, a backslash, " +
			"CONNECT, absolute form) is refused with 400, and only canonical paths under /v1/ are forwarded, exactly as authorized. " +
			"Bodies are read only after authorization, grow as bytes arrive, must arrive within server.body_read_timeout (else 408) " +
			"and together stay under server.max_inflight_body_bytes (else 503). While no client key exists only loopback " +
			"clients naming an IP or localhost are served, and allowed_origins \"*\" is ignored. Not covered: the number of " +
			"connections, and clients that read answers slowly."},
	{"A client key",
		"api: any method on a canonical /v1/* path with a pool account's credentials, under the per-key limits; " +
			"its Cookie and forwarding headers (X-Forwarded-*, Forwarded, X-Real-IP, Via) are not forwarded, and the " +
			"account's token, refresh token or API key is replaced by [REDACTED] in upstream error answers. viewer: /metrics " +
			"and the read-only /api/* endpoints (redacted request rows, never a payload); /v1/* is 403. admin: both, and pausing " +
			"and resuming accounts. /metrics labels a model only when it looks like a Claude model id (at most 64 of them); " +
			"anything else counts as other. Human tables escape control characters, so no logged string drives a terminal."},
	{"Write access to the data dir, without the master key",
		"The vault's key metadata (master kind and recipients, data key wraps, the audit key's wrap) carries an HMAC keyed " +
			"from the master identity: a recipient or data key added with SQL makes every command refuse before writing, " +
			"and doctor reports it. Sealed secrets carry their account id and payloads their request id, so " +
			"ciphertexts swapped between rows do not open. The audit log is an HMAC chain with a key carried across key rotate; " +
			"audit --verify catches edited, inserted, re-chained or deleted rows, gaps and a wiped log, but cutting the newest " +
			"rows and moving the head back is caught only by audit --verify --expect-head against a head anchored elsewhere " +
			"(audit --head). Backups carry an HMAC keyed from the master identity, checked with every file's checksum before " +
			"restore touches anything; restore never replaces an identity without --replace-identity. A data dir or state file " +
			"owned by another user, a linked state file or a database open to others is refused (doctor reports it), and the " +
			"vault runs with secure_delete. Still possible: deleting or corrupting files, putting back an older vault.db or an " +
			"older authentic backup, reading the request log's unsealed rows, changing account settings (priority, paused)."},
	{"Between the daemon and Anthropic",
		"Upstream TLS is always verified; http:// upstream and token URLs are accepted only for loopback hosts. " +
			"upstream.pin_sha256 pins both the upstream host and the token endpoint host, for the daemon and the CLI."},
	{"Upgrading",
		"A data dir made by the first release opens in place: the first open with the master key adds the MACs (keeping " +
			"only the master's own recipients and naming any other it drops), makes a new data key, binds every secret to its " +
			"row and keys the audit chain, and says so. An unauthenticated backup of that release restores only with " +
			"restore --allow-unauthenticated."},
}
