//! PostgreSQL records a batch of usage events set-based: a handful of statements per batch (each over
//! arrays, `UNNEST`), not five per event, inside the batch's transaction after its organizations'
//! rows are locked. It writes what recording the events one by one in event-id order writes: each new
//! event once, its charge (a ledger entry per event, the balance after each in that order), the
//! hourly roll-ups, the request log and the keys' last use. SQLite records them one by one (one
//! local writer: round trips cost nothing there).

use std::collections::{BTreeMap, HashMap, HashSet};

use aldea_store::{Result, UsageEvent};

use crate::{backend, PgStore, SqlStore};

/// A roll-up row's key: organization, hour, key, model, kind.
type HourKey<'a> = (&'a str, i64, &'a str, &'a str, &'a str);

/// A request of the log, as the batch's events leave it (events applied in order).
struct RequestRow<'a> {
    key_id: &'a str,
    model: &'a str,
    kind: &'a str,
    started_at: i64,
    ended_at: i64,
    audio_millis: i64,
    status: i64,
    complete: bool,
}

impl SqlStore {
    /// Records `events` in `order`, inside `tx`: whether each was new.
    pub(crate) async fn record_ordered(
        tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
        events: &[UsageEvent],
        order: &[usize],
    ) -> Result<Vec<bool>> {
        let mut new = vec![false; events.len()];
        for &i in order {
            new[i] = SqlStore::record_in(tx, &events[i]).await?;
        }
        Ok(new)
    }
}

impl PgStore {
    /// Records `events` in `order` (event-id order), inside `tx`, whose organizations' rows are
    /// locked: whether each was new.
    pub(crate) async fn record_ordered(
        tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
        events: &[UsageEvent],
        order: &[usize],
    ) -> Result<Vec<bool>> {
        // Each id once (its first in `order`): the statement never sees a key twice.
        let mut seen = HashSet::new();
        let unique: Vec<usize> = order.iter().copied().filter(|&i| seen.insert(events[i].event_id.as_str())).collect();
        let column = |f: &dyn Fn(&UsageEvent) -> String| unique.iter().map(|&i| f(&events[i])).collect::<Vec<String>>();
        let number = |f: &dyn Fn(&UsageEvent) -> i64| unique.iter().map(|&i| f(&events[i])).collect::<Vec<i64>>();
        let millis = |e: &UsageEvent| aldea_store::audio_millis(e.audio_seconds);
        let inserted: Vec<String> = sqlx::query_scalar(
            "INSERT INTO usage_events (event_id, request_id, seq, org_id, key_id, kind, model, audio_seconds,
                                       audio_millis, started_at, ended_at, is_final, status)
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::text[], $7::text[],
                                  $8::float8[], $9::bigint[], $10::bigint[], $11::bigint[], $12::bool[], $13::bigint[])
             ON CONFLICT (event_id) DO NOTHING RETURNING event_id",
        )
        .bind(column(&|e| e.event_id.clone()))
        .bind(column(&|e| e.request_id.clone()))
        .bind(number(&|e| i64::from(e.seq)))
        .bind(column(&|e| e.org_id.clone()))
        .bind(column(&|e| e.key_id.clone()))
        .bind(column(&|e| e.kind.as_str().to_owned()))
        .bind(column(&|e| e.model.clone()))
        .bind(unique.iter().map(|&i| events[i].audio_seconds).collect::<Vec<f64>>())
        .bind(number(&millis))
        .bind(number(&|e| e.started_at))
        .bind(number(&|e| e.ended_at))
        .bind(unique.iter().map(|&i| events[i].is_final).collect::<Vec<bool>>())
        .bind(number(&|e| i64::from(e.status)))
        .fetch_all(&mut **tx)
        .await
        .map_err(backend)?;
        // New: inserted now (a repeat within the batch is not).
        let fresh: HashSet<&str> = inserted.iter().map(String::as_str).collect();
        let mut new = vec![false; events.len()];
        let mut recorded: Vec<&UsageEvent> = Vec::with_capacity(inserted.len());
        for &i in &unique {
            if fresh.contains(events[i].event_id.as_str()) {
                new[i] = true;
                recorded.push(&events[i]);
            }
        }
        if recorded.is_empty() {
            return Ok(new);
        }

        // Charges: one ledger entry per metered event with audio, balances in event order.
        let orgs: Vec<String> = {
            let set: HashSet<&str> = recorded.iter().map(|e| e.org_id.as_str()).collect();
            set.into_iter().map(str::to_owned).collect()
        };
        // The rows are locked already (`record_batch` locks its organizations first).
        let rows: Vec<(String, i64, bool)> = sqlx::query_as(
            "SELECT id, credit_millis, credit_unlimited FROM orgs WHERE id = ANY($1::text[]) FOR UPDATE",
        )
        .bind(&orgs)
        .fetch_all(&mut **tx)
        .await
        .map_err(backend)?;
        let mut balances: HashMap<String, i64> =
            rows.into_iter().filter(|(_, _, unlimited)| !unlimited).map(|(id, millis, _)| (id, millis)).collect();
        let mut charged: BTreeMap<String, i64> = BTreeMap::new();
        let (mut ids, mut ledger_orgs, mut amounts, mut references, mut ats, mut afters) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for event in &recorded {
            let amount = millis(event);
            let Some(balance) = balances.get_mut(&event.org_id) else { continue };
            if amount == 0 {
                continue;
            }
            *balance -= amount;
            *charged.entry(event.org_id.clone()).or_default() -= amount;
            ids.push(uuid::Uuid::new_v4().to_string());
            ledger_orgs.push(event.org_id.clone());
            amounts.push(-amount);
            references.push(event.event_id.clone());
            ats.push(event.ended_at / 1000);
            afters.push(*balance);
        }
        if !ids.is_empty() {
            sqlx::query(
                "INSERT INTO credit_ledger (id, org_id, kind, millis, reference, at, balance_after)
                 SELECT id, org_id, 'charge', millis, reference, at, balance_after
                 FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::text[], $5::bigint[], $6::bigint[])
                      WITH ORDINALITY AS t (id, org_id, millis, reference, at, balance_after, ord)
                 ORDER BY ord",
            )
            .bind(&ids)
            .bind(&ledger_orgs)
            .bind(&amounts)
            .bind(&references)
            .bind(&ats)
            .bind(&afters)
            .execute(&mut **tx)
            .await
            .map_err(backend)?;
            let (charged, deltas): (Vec<String>, Vec<i64>) = charged.into_iter().unzip();
            sqlx::query(
                "UPDATE orgs SET credit_millis = orgs.credit_millis + t.millis
                 FROM UNNEST($1::text[], $2::bigint[]) AS t (id, millis) WHERE orgs.id = t.id",
            )
            .bind(&charged)
            .bind(&deltas)
            .execute(&mut **tx)
            .await
            .map_err(backend)?;
        }

        // Hourly roll-ups: one row per (organization, hour, key, model, kind).
        // (requests, audio milliseconds, events)
        let mut hourly: BTreeMap<HourKey, (i64, i64, i64)> = BTreeMap::new();
        for event in &recorded {
            let hour = aldea_store::usage_hour(event.ended_at);
            let key = (event.org_id.as_str(), hour, event.key_id.as_str(), event.model.as_str(), event.kind.as_str());
            let row = hourly.entry(key).or_default();
            *row = (row.0 + i64::from(event.is_final), row.1 + millis(event), row.2 + 1);
        }
        let keys: Vec<_> = hourly.keys().collect();
        sqlx::query(
            "INSERT INTO usage_hourly (org_id, hour, key_id, model, kind, requests, audio_millis, events)
             SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::bigint[],
                                  $7::bigint[], $8::bigint[])
             ON CONFLICT (org_id, hour, key_id, model, kind) DO UPDATE SET
                 requests = usage_hourly.requests + excluded.requests,
                 audio_millis = usage_hourly.audio_millis + excluded.audio_millis,
                 events = usage_hourly.events + excluded.events",
        )
        .bind(keys.iter().map(|k| k.0.to_owned()).collect::<Vec<_>>())
        .bind(keys.iter().map(|k| k.1).collect::<Vec<_>>())
        .bind(keys.iter().map(|k| k.2.to_owned()).collect::<Vec<_>>())
        .bind(keys.iter().map(|k| k.3.to_owned()).collect::<Vec<_>>())
        .bind(keys.iter().map(|k| k.4.to_owned()).collect::<Vec<_>>())
        .bind(hourly.values().map(|v| v.0).collect::<Vec<_>>())
        .bind(hourly.values().map(|v| v.1).collect::<Vec<_>>())
        .bind(hourly.values().map(|v| v.2).collect::<Vec<_>>())
        .execute(&mut **tx)
        .await
        .map_err(backend)?;

        // The request log: the batch's events of a request folded in order, then merged with the
        // row already there as one event would be (an earlier final keeps its status).
        let mut requests: BTreeMap<(&str, &str), RequestRow> = BTreeMap::new();
        for event in &recorded {
            let row = requests.entry((event.org_id.as_str(), event.request_id.as_str())).or_insert(RequestRow {
                key_id: &event.key_id,
                model: &event.model,
                kind: event.kind.as_str(),
                started_at: event.started_at,
                ended_at: event.ended_at,
                audio_millis: 0,
                status: i64::from(event.status),
                complete: false,
            });
            row.started_at = row.started_at.min(event.started_at);
            row.ended_at = row.ended_at.max(event.ended_at);
            row.audio_millis += millis(event);
            if !row.complete {
                row.status = i64::from(event.status);
            }
            row.complete |= event.is_final;
        }
        let (keys, rows): (Vec<&(&str, &str)>, Vec<&RequestRow>) = requests.iter().unzip();
        sqlx::query(
            "INSERT INTO usage_requests (org_id, request_id, key_id, model, kind, started_at, ended_at,
                                         audio_millis, status, complete)
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bigint[],
                                  $7::bigint[], $8::bigint[], $9::bigint[], $10::bool[])
             ON CONFLICT (org_id, request_id) DO UPDATE SET
                 started_at = LEAST(excluded.started_at, usage_requests.started_at),
                 ended_at = GREATEST(excluded.ended_at, usage_requests.ended_at),
                 audio_millis = usage_requests.audio_millis + excluded.audio_millis,
                 status = CASE WHEN usage_requests.complete THEN usage_requests.status ELSE excluded.status END,
                 complete = usage_requests.complete OR excluded.complete",
        )
        .bind(keys.iter().map(|k| k.0.to_owned()).collect::<Vec<_>>())
        .bind(keys.iter().map(|k| k.1.to_owned()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.key_id.to_owned()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.model.to_owned()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.kind.to_owned()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.started_at).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.ended_at).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.audio_millis).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.status).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.complete).collect::<Vec<_>>())
        .execute(&mut **tx)
        .await
        .map_err(backend)?;

        // The keys' last use: the latest end per key, never moved back.
        let mut used: BTreeMap<(&str, &str), i64> = BTreeMap::new();
        for event in &recorded {
            let at = used.entry((event.org_id.as_str(), event.key_id.as_str())).or_insert(i64::MIN);
            *at = (*at).max(event.ended_at.div_euclid(1000));
        }
        sqlx::query(
            "UPDATE api_keys SET last_used_at = t.at
             FROM UNNEST($1::text[], $2::text[], $3::bigint[]) AS t (org_id, id, at)
             WHERE api_keys.id = t.id AND api_keys.org_id = t.org_id
               AND (api_keys.last_used_at IS NULL OR api_keys.last_used_at < t.at)",
        )
        .bind(used.keys().map(|k| k.0.to_owned()).collect::<Vec<_>>())
        .bind(used.keys().map(|k| k.1.to_owned()).collect::<Vec<_>>())
        .bind(used.values().copied().collect::<Vec<_>>())
        .execute(&mut **tx)
        .await
        .map_err(backend)?;
        Ok(new)
    }
}
