-- Client API keys for the proxy: only a hash of each key is stored.
CREATE TABLE client_keys (
    id           INTEGER PRIMARY KEY,
    name         TEXT    NOT NULL UNIQUE,
    prefix       TEXT    NOT NULL,             -- first characters, for display
    hash         BLOB    NOT NULL UNIQUE,      -- SHA-256 of the whole key
    role         TEXT    NOT NULL,
    created_at   INTEGER NOT NULL,
    last_used_at INTEGER NOT NULL DEFAULT 0,
    revoked_at   INTEGER NOT NULL DEFAULT 0
);
