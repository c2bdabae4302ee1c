-- Key rotation (vault/rotate.go). A master-key rotation first wraps every
-- data key to the new master as well (wrapped_next) and records the new
-- master in next_kind/next_recipients; one later transaction makes them
-- current. While both exist, either master key opens the vault, so a crash
-- at any point leaves a vault that opens.
ALTER TABLE data_keys ADD COLUMN wrapped_next BLOB;     -- age(data identity) to the incoming master, during a rotation
ALTER TABLE master ADD COLUMN next_kind TEXT;           -- identity | passphrase of the incoming master; NULL when none
ALTER TABLE master ADD COLUMN next_recipients TEXT;     -- its public recipients, newline separated
