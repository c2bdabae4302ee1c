-- The vault: master key bookkeeping, data keys, accounts and their sealed secrets.
CREATE TABLE master (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    kind        TEXT    NOT NULL,              -- identity | passphrase | env
    recipients  TEXT    NOT NULL,              -- newline separated public recipients
    updated_at  INTEGER NOT NULL
);

CREATE TABLE data_keys (
    id          INTEGER PRIMARY KEY,
    recipient   TEXT    NOT NULL,              -- public half of the data identity
    wrapped     BLOB    NOT NULL,              -- age(data identity) to the master recipient(s)
    payload_key BLOB    NOT NULL,              -- age(32-byte AEAD key) to the data recipient
    created_at  INTEGER NOT NULL,
    retired_at  INTEGER                        -- NULL for the current key
);

CREATE TABLE accounts (
    id                 INTEGER PRIMARY KEY,
    name               TEXT    NOT NULL UNIQUE,
    kind               TEXT    NOT NULL CHECK (kind IN ('oauth', 'apikey')),
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
    updated_at         INTEGER NOT NULL
);
