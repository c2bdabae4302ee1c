-- Routing, part two (issue 15): the account each message batch or file
-- was created through, so that later calls naming the id go to that
-- account (another account cannot see it). Ids are not secrets; only
-- what routing needs is kept: the id, its account and when it was made.
-- The rows go with their account, and the daemon prunes old ones.
CREATE TABLE owned_ids (
    id         TEXT PRIMARY KEY,
    account_id INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    created_at INTEGER NOT NULL -- unix ms
);
CREATE INDEX owned_ids_created ON owned_ids(created_at);
