-- Authenticated vault metadata (vault/auth.go). mac is an HMAC, keyed from
-- the master identity (or passphrase), over the master record (kind,
-- recipients, audit key wrap); each data key row carries its own over its
-- recipient, wrap, payload key, retirement and binding. The *_next columns
-- hold the same for the incoming master during a key rotation. audit_key is
-- the audit chain's HMAC key, age-encrypted to the master. Under a data key
-- with bound = 1 only account secrets bound to their row (account id and
-- tag inside the sealed plaintext) open.
ALTER TABLE master ADD COLUMN mac BLOB;
ALTER TABLE master ADD COLUMN next_mac BLOB;
ALTER TABLE master ADD COLUMN audit_key BLOB;
ALTER TABLE master ADD COLUMN audit_key_next BLOB;
ALTER TABLE data_keys ADD COLUMN mac BLOB;
ALTER TABLE data_keys ADD COLUMN mac_next BLOB;
ALTER TABLE data_keys ADD COLUMN bound INTEGER NOT NULL DEFAULT 0;
