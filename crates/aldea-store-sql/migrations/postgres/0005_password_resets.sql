-- One-time password resets an operator issues (`aldea users reset-password`), by SHA-256 of the
-- token; at most one per user, used up by the reset.
CREATE TABLE password_resets (
    token_hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL UNIQUE REFERENCES users (id),
    expires_at BIGINT NOT NULL
);
