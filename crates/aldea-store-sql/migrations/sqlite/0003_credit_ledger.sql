-- Integer milliseconds of credit and audio, an append-only credit ledger, and organization names
-- that need not be unique (ids identify organizations).
-- `orgs` is rebuilt without UNIQUE(name) (SQLite cannot drop a constraint): copied aside, dropped,
-- created anew and filled again. The foreign keys of `api_keys` are checked at commit; the rows
-- put back into `orgs` settle the violations the drop counted.
PRAGMA defer_foreign_keys = ON;
CREATE TABLE orgs_before_v3 AS SELECT * FROM orgs;
DROP TABLE orgs;
CREATE TABLE orgs (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    credit_unlimited INTEGER NOT NULL,
    -- The ledger's balance (the sum of its entries), kept here in the same transaction.
    credit_millis INTEGER NOT NULL
);
INSERT INTO orgs (id, name, created_at, credit_unlimited, credit_millis)
    SELECT id, name, created_at, credit_unlimited, CAST(ROUND(credit_seconds * 1000) AS INTEGER) FROM orgs_before_v3;
DROP TABLE orgs_before_v3;
CREATE INDEX orgs_name ON orgs(name, created_at);

CREATE TABLE credit_ledger (
    -- The order entries were appended in (the page cursor).
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    org_id TEXT NOT NULL REFERENCES orgs(id),
    kind TEXT NOT NULL CHECK (kind IN ('grant', 'top_up', 'charge', 'adjustment')),
    millis INTEGER NOT NULL,
    reference TEXT,
    at INTEGER NOT NULL,
    balance_after INTEGER NOT NULL
);
CREATE INDEX credit_ledger_org ON credit_ledger(org_id, seq);
-- One charge per usage event.
CREATE UNIQUE INDEX credit_ledger_charge ON credit_ledger(reference) WHERE kind = 'charge';
-- Balances from before the ledger become its first entries.
INSERT INTO credit_ledger (id, org_id, kind, millis, reference, at, balance_after)
    SELECT lower(hex(randomblob(16))), id, 'adjustment', credit_millis, 'balance before the ledger',
           CAST(strftime('%s', 'now') AS INTEGER), credit_millis
    FROM orgs WHERE credit_millis != 0;

ALTER TABLE usage_events ADD COLUMN audio_millis INTEGER NOT NULL DEFAULT 0;
UPDATE usage_events SET audio_millis = CAST(ROUND(audio_seconds * 1000) AS INTEGER);
