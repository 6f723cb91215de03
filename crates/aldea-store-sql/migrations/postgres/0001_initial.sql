-- Organizations, API keys (by hash), the credit ledger and recorded usage: the schema SQLite reaches
-- after its step 3, in PostgreSQL's types. Every row carries the organization it belongs to.
CREATE TABLE orgs (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    credit_unlimited BOOLEAN NOT NULL,
    -- The ledger's balance (the sum of its entries), kept here in the same transaction.
    credit_millis BIGINT NOT NULL
);
CREATE INDEX orgs_name ON orgs (name, created_at);
CREATE INDEX orgs_created ON orgs (created_at, id);

CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL REFERENCES orgs (id),
    name TEXT NOT NULL,
    prefix TEXT NOT NULL,
    key_hash TEXT NOT NULL UNIQUE,
    scopes TEXT NOT NULL,
    max_streams BIGINT,
    requests_per_minute BIGINT,
    created_at BIGINT NOT NULL,
    expires_at BIGINT,
    revoked_at BIGINT
);
CREATE INDEX api_keys_org ON api_keys (org_id, created_at, id);

CREATE TABLE credit_ledger (
    -- The order entries were appended in (the page cursor).
    seq BIGSERIAL PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    org_id TEXT NOT NULL REFERENCES orgs (id),
    kind TEXT NOT NULL CHECK (kind IN ('grant', 'top_up', 'charge', 'adjustment')),
    millis BIGINT NOT NULL,
    reference TEXT,
    at BIGINT NOT NULL,
    balance_after BIGINT NOT NULL
);
CREATE INDEX credit_ledger_org ON credit_ledger (org_id, seq);
-- One charge per usage event.
CREATE UNIQUE INDEX credit_ledger_charge ON credit_ledger (reference) WHERE kind = 'charge';

CREATE TABLE usage_events (
    event_id TEXT PRIMARY KEY,
    request_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    org_id TEXT NOT NULL,
    key_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    model TEXT NOT NULL,
    audio_seconds DOUBLE PRECISION NOT NULL,
    audio_millis BIGINT NOT NULL,
    started_at BIGINT NOT NULL,
    ended_at BIGINT NOT NULL,
    is_final BOOLEAN NOT NULL,
    status BIGINT NOT NULL
);
CREATE INDEX usage_events_org ON usage_events (org_id, started_at);
