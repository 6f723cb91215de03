-- Usage as the API reads it, kept up to date by the consumer in the transaction that records each
-- event (so queries stay fast with millions of events): per organization, hour (Unix seconds of
-- the hour the event ended in, UTC), key, model and kind; and one row per request for the request
-- log. Events recorded before this step are rolled up here once.
CREATE TABLE usage_hourly (
    org_id TEXT NOT NULL,
    hour BIGINT NOT NULL,
    key_id TEXT NOT NULL,
    model TEXT NOT NULL,
    kind TEXT NOT NULL,
    -- Requests whose final event ended in this hour.
    requests BIGINT NOT NULL,
    audio_millis BIGINT NOT NULL,
    events BIGINT NOT NULL,
    PRIMARY KEY (org_id, hour, key_id, model, kind)
);
CREATE TABLE usage_requests (
    org_id TEXT NOT NULL,
    request_id TEXT NOT NULL,
    key_id TEXT NOT NULL,
    model TEXT NOT NULL,
    kind TEXT NOT NULL,
    -- Unix milliseconds: the first event's start, the last event's end.
    started_at BIGINT NOT NULL,
    ended_at BIGINT NOT NULL,
    audio_millis BIGINT NOT NULL,
    -- The final event's status once it is recorded (the latest event's until then).
    status BIGINT NOT NULL,
    complete BOOLEAN NOT NULL,
    PRIMARY KEY (org_id, request_id)
);
CREATE INDEX usage_requests_recent ON usage_requests (org_id, started_at, request_id);
INSERT INTO usage_hourly (org_id, hour, key_id, model, kind, requests, audio_millis, events)
    SELECT org_id, (ended_at / 3600000) * 3600, key_id, model, kind, SUM(CASE WHEN is_final THEN 1 ELSE 0 END),
           SUM(audio_millis), COUNT(*)
    FROM usage_events GROUP BY org_id, (ended_at / 3600000) * 3600, key_id, model, kind;
INSERT INTO usage_requests (org_id, request_id, key_id, model, kind, started_at, ended_at, audio_millis, status, complete)
    SELECT org_id, request_id, MIN(key_id), MIN(model), MIN(kind), MIN(started_at), MAX(ended_at), SUM(audio_millis),
           MAX(status), bool_or(is_final)
    FROM usage_events GROUP BY org_id, request_id;
