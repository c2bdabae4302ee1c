-- What the log keeps per request for routing (issue 15): the cache writes
-- by lifetime, server tool counts, the upstream's request id, the session
-- (a short hash of the affinity key) and the accounts tried. Rows from
-- before this migration read as 0, '' and NULL (unknown).
ALTER TABLE requests ADD COLUMN cache_creation_5m_input_tokens INTEGER NOT NULL DEFAULT 0;
ALTER TABLE requests ADD COLUMN cache_creation_1h_input_tokens INTEGER NOT NULL DEFAULT 0;
-- The usage's server_tool_use object as sent (JSON text), NULL when absent.
ALTER TABLE requests ADD COLUMN server_tool_use TEXT;
ALTER TABLE requests ADD COLUMN upstream_request_id TEXT NOT NULL DEFAULT '';
ALTER TABLE requests ADD COLUMN session TEXT NOT NULL DEFAULT '';
-- A JSON array of account names in the order tried; NULL on older rows.
ALTER TABLE requests ADD COLUMN accounts_tried TEXT;
