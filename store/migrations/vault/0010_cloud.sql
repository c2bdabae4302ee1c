-- Cloud accounts (issue 21): the kinds 'bedrock' (Amazon Bedrock, AWS
-- credentials) and 'vertex' (Google Vertex AI, a service-account key).
-- accounts.kind has a CHECK that only knows 'oauth' and 'apikey', and
-- SQLite cannot change a CHECK in place, so the table is rebuilt: a new
-- table, every row copied with its id (each sealed secret is bound to
-- its account id, vault/bind.go, so the ids must not move), the old one
-- dropped, the new one renamed.
--
-- Foreign keys are on during migrations (and cannot be turned off inside
-- the migration's transaction), and dropping accounts would run the ON
-- DELETE CASCADE of owned_ids: owned_ids is kept aside first and made
-- again after, with its index.
--
-- upstream: the account's non-secret cloud settings as JSON
-- {"region": ..., "project": ..., "endpoint": ...}; '' for the Anthropic
-- kinds. The cloud credentials themselves are sealed in secret like any
-- other.
CREATE TEMP TABLE owned_ids_keep AS SELECT id, account_id, created_at FROM owned_ids;
DROP TABLE owned_ids;

CREATE TABLE accounts_new (
    id                 INTEGER PRIMARY KEY,
    name               TEXT    NOT NULL UNIQUE,
    kind               TEXT    NOT NULL CHECK (kind IN ('oauth', 'apikey', 'bedrock', 'vertex')),
    mode               TEXT    NOT NULL DEFAULT '',
    priority           INTEGER NOT NULL DEFAULT 0,
    tier               INTEGER NOT NULL DEFAULT 1,
    paused             INTEGER NOT NULL DEFAULT 0,
    status             TEXT    NOT NULL DEFAULT 'ok',
    status_reason      TEXT    NOT NULL DEFAULT '',
    key_id             INTEGER NOT NULL REFERENCES data_keys(id),
    secret             BLOB    NOT NULL,        -- age-sealed JSON to the data recipient
    token_version      INTEGER NOT NULL DEFAULT 1,
    token_expires_at   INTEGER NOT NULL DEFAULT 0,
    rate_limited_until INTEGER NOT NULL DEFAULT 0,
    rl_status          TEXT    NOT NULL DEFAULT '',
    rl_reset           INTEGER NOT NULL DEFAULT 0,
    util_5h            REAL    NOT NULL DEFAULT -1,
    util_7d            REAL    NOT NULL DEFAULT -1,
    reset_5h           INTEGER NOT NULL DEFAULT 0,
    reset_7d           INTEGER NOT NULL DEFAULT 0,
    cooldown_ms        INTEGER NOT NULL DEFAULT 0,
    created_at         INTEGER NOT NULL,
    updated_at         INTEGER NOT NULL,
    overage            TEXT    NOT NULL DEFAULT 'avoid',
    overage_until      INTEGER NOT NULL DEFAULT 0,
    model_limits       TEXT    NOT NULL DEFAULT '',
    unblocked_at       INTEGER NOT NULL DEFAULT 0,
    upstream           TEXT    NOT NULL DEFAULT ''
);

INSERT INTO accounts_new (id, name, kind, mode, priority, tier, paused, status, status_reason,
    key_id, secret, token_version, token_expires_at, rate_limited_until, rl_status, rl_reset,
    util_5h, util_7d, reset_5h, reset_7d, cooldown_ms, created_at, updated_at,
    overage, overage_until, model_limits, unblocked_at)
SELECT id, name, kind, mode, priority, tier, paused, status, status_reason,
    key_id, secret, token_version, token_expires_at, rate_limited_until, rl_status, rl_reset,
    util_5h, util_7d, reset_5h, reset_7d, cooldown_ms, created_at, updated_at,
    overage, overage_until, model_limits, unblocked_at
FROM accounts;

DROP TABLE accounts;
ALTER TABLE accounts_new RENAME TO accounts;

CREATE TABLE owned_ids (
    id         TEXT PRIMARY KEY,
    account_id INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    created_at INTEGER NOT NULL -- unix ms
);
INSERT INTO owned_ids (id, account_id, created_at) SELECT id, account_id, created_at FROM owned_ids_keep;
DROP TABLE owned_ids_keep;
CREATE INDEX owned_ids_created ON owned_ids(created_at);
