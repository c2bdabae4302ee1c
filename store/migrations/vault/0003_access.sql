-- Access control: client key names are unique among live keys only (a
-- revoked key's name may be reused), the addresses each key was used from,
-- and the hash-chained audit trail.
CREATE TABLE client_keys_new (
    id           INTEGER PRIMARY KEY,
    name         TEXT    NOT NULL,
    prefix       TEXT    NOT NULL,             -- first characters, for display
    hash         BLOB    NOT NULL UNIQUE,      -- SHA-256 of the whole key
    role         TEXT    NOT NULL,
    created_at   INTEGER NOT NULL,
    last_used_at INTEGER NOT NULL DEFAULT 0,
    revoked_at   INTEGER NOT NULL DEFAULT 0
);
INSERT INTO client_keys_new (id, name, prefix, hash, role, created_at, last_used_at, revoked_at)
    SELECT id, name, prefix, hash, role, created_at, last_used_at, revoked_at FROM client_keys;
DROP TABLE client_keys;
ALTER TABLE client_keys_new RENAME TO client_keys;
CREATE UNIQUE INDEX client_keys_live_name ON client_keys(name) WHERE revoked_at = 0;

CREATE TABLE client_key_addresses (
    key_id     INTEGER NOT NULL REFERENCES client_keys(id) ON DELETE CASCADE,
    addr       TEXT    NOT NULL,
    first_seen INTEGER NOT NULL,
    PRIMARY KEY (key_id, addr)
) WITHOUT ROWID;

-- hash = SHA-256(prev_hash || canonical row); the first row's prev_hash is
-- 32 zero bytes. audit_head holds the last row's id and hash, so that
-- deleting rows from the end is detected too.
CREATE TABLE audit_log (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    ts        INTEGER NOT NULL,
    actor     TEXT    NOT NULL,
    action    TEXT    NOT NULL,
    detail    TEXT    NOT NULL DEFAULT '',
    prev_hash BLOB    NOT NULL,
    hash      BLOB    NOT NULL
);
CREATE INDEX audit_log_ts ON audit_log(ts);

CREATE TABLE audit_head (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    last_id INTEGER NOT NULL,
    hash    BLOB    NOT NULL
);
