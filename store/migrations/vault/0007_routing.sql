-- Routing, part one (issue 14).
-- overage: what the proxy does with an account whose subscription limit
-- is reached but that upstream would still serve on paid extra usage:
-- 'avoid' (steer other requests away while another account can serve)
-- or 'allow' (use it as any other account).
ALTER TABLE accounts ADD COLUMN overage TEXT NOT NULL DEFAULT 'avoid';
-- overage_until: unix ms until which the account is known to be serving
-- on extra usage (0 = not).
ALTER TABLE accounts ADD COLUMN overage_until INTEGER NOT NULL DEFAULT 0;
-- model_limits: the model-scoped limits in force, as JSON
-- {"opus": until_ms, "sonnet": until_ms}; '' = none.
ALTER TABLE accounts ADD COLUMN model_limits TEXT NOT NULL DEFAULT '';
-- unblocked_at: unix ms of the last `accounts unblock`; a daemon that
-- sees it move drops the blocks it holds in memory for the account.
ALTER TABLE accounts ADD COLUMN unblocked_at INTEGER NOT NULL DEFAULT 0;
