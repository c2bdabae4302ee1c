-- The team gateway (issue 20). relay: 1 for a relay key, whose requests
-- are forwarded with the client's own Authorization / x-api-key, never
-- with a pool account's. models: NULL for a key that may use any model,
-- else a JSON array of model names (access.Key.Models, enforced by the
-- model policy). The row's MAC (vault.ClientKeyMAC) covers relay when it
-- is 1 and models' exact text when it is not NULL, so a key made a relay
-- key, or its allowlist widened, in vault.db without the master key fails
-- authentication; a row with relay 0 and models NULL keeps the MAC it had
-- before this migration.
ALTER TABLE client_keys ADD COLUMN relay INTEGER NOT NULL DEFAULT 0;
ALTER TABLE client_keys ADD COLUMN models TEXT;
