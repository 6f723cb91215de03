-- People (email, argon2id password hash), their sessions (by SHA-256 of the token) and their
-- memberships in organizations.
CREATE TABLE users (
    id TEXT PRIMARY KEY,
    -- Trimmed and lowercased.
    email TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    is_admin INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE sessions (
    token_hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users(id),
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX sessions_user ON sessions(user_id);
CREATE TABLE members (
    -- The order members were added in (the page cursor).
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    org_id TEXT NOT NULL REFERENCES orgs(id),
    user_id TEXT NOT NULL REFERENCES users(id),
    role TEXT NOT NULL CHECK (role IN ('owner', 'admin', 'member')),
    added_at INTEGER NOT NULL,
    UNIQUE (org_id, user_id)
);
CREATE INDEX members_user ON members(user_id, seq);
