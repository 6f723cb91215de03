-- Who made a key, when it was last used (set by the usage consumer, never on the request path),
-- and rotation: the secret it had before its last rotation keeps working until `previous_until`.
ALTER TABLE api_keys ADD COLUMN created_by TEXT;
ALTER TABLE api_keys ADD COLUMN last_used_at INTEGER;
ALTER TABLE api_keys ADD COLUMN previous_hash TEXT;
ALTER TABLE api_keys ADD COLUMN previous_until INTEGER;
CREATE UNIQUE INDEX api_keys_previous_hash ON api_keys (previous_hash);
