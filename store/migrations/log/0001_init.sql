-- The request log: one row per proxied request, and its sealed payload.
CREATE TABLE requests (
    seq                         INTEGER PRIMARY KEY AUTOINCREMENT,
    id                          TEXT    NOT NULL UNIQUE,
    ts                          INTEGER NOT NULL,
    method                      TEXT    NOT NULL,
    path                        TEXT    NOT NULL,
    model                       TEXT    NOT NULL DEFAULT '',
    account                     TEXT    NOT NULL DEFAULT '',
    status                      INTEGER NOT NULL DEFAULT 0,
    attempts                    INTEGER NOT NULL DEFAULT 0,
    duration_ms                 INTEGER NOT NULL DEFAULT 0,
    ttfb_ms                     INTEGER NOT NULL DEFAULT 0,
    input_tokens                INTEGER NOT NULL DEFAULT 0,
    output_tokens               INTEGER NOT NULL DEFAULT 0,
    cache_read_input_tokens     INTEGER NOT NULL DEFAULT 0,
    cache_creation_input_tokens INTEGER NOT NULL DEFAULT 0,
    streamed                    INTEGER NOT NULL DEFAULT 0,
    end_state                   TEXT    NOT NULL DEFAULT '',
    error                       TEXT    NOT NULL DEFAULT '',
    client                      TEXT    NOT NULL DEFAULT ''
);
CREATE INDEX requests_ts ON requests(ts);
CREATE INDEX requests_account_ts ON requests(account, ts);

CREATE TABLE payloads (
    request_seq INTEGER PRIMARY KEY REFERENCES requests(seq) ON DELETE CASCADE,
    ts          INTEGER NOT NULL,
    key_id      INTEGER NOT NULL,
    sealed      BLOB    NOT NULL,
    truncated   INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX payloads_ts ON payloads(ts);
