-- Authenticated client keys (vault/rowmac.go, access/keys.go). mac is an
-- HMAC, with a key derived from the vault's audit key (which only a
-- holder of the master key can open), over the columns that decide
-- access: id, name, prefix, hash, role, created_at and revoked_at. A row
-- whose mac is missing or wrong is never loaded as a key. Rows made by an
-- earlier release get theirs when the vault gets its audit key (the first
-- open by a holder of the master key).
ALTER TABLE client_keys ADD COLUMN mac BLOB;
