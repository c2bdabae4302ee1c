-- Budgets per client key (issue 18): budgets is NULL for a key without
-- any, else a JSON array of {"amount": N, "unit": "usd"|"tokens",
-- "period": "day"|"week"|"month"} (access.Budget), at most one budget per
-- unit. The row's MAC (vault.ClientKeyMAC) covers the column's exact text
-- whenever it is not NULL, so a budget raised, lowered, added or removed
-- in vault.db without the master key makes the row fail authentication;
-- a row with NULL keeps the MAC it had before this migration.
ALTER TABLE client_keys ADD COLUMN budgets TEXT;
