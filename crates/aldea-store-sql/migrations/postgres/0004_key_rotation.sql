-- Who made a key, when it was last used (set by the usage consumer, never on the request path),
-- and rotation: the secret it had before its last rotation keeps working until `previous_until`.
ALTER TABLE api_keys ADD COLUMN created_by TEXT;
ALTER TABLE api_keys ADD COLUMN last_used_at BIGINT;
ALTER TABLE api_keys ADD COLUMN previous_hash TEXT UNIQUE;
ALTER TABLE api_keys ADD COLUMN previous_until BIGINT;
-- Keys the platform makes for itself (the dashboard's, which browser tokens are issued for): one
-- live key per organization and name.
ALTER TABLE api_keys ADD COLUMN system BOOLEAN NOT NULL DEFAULT FALSE;
CREATE UNIQUE INDEX api_keys_system ON api_keys (org_id, name) WHERE system AND revoked_at IS NULL;
