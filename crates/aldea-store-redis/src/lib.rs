//! Redis adapters of the shared-state ports: the key cache (with invalidations over pub/sub), limits
//! (leases in sorted sets, per-minute counters) and the usage queue (a stream with a consumer group),
//! on a single node or a Redis Cluster.
//!
//! Invariant: every operation touches one key (or keys of one hash slot), so it is valid on a
//! cluster; check-and-set steps are Lua scripts reading the server's clock, so gateways with skewed
//! clocks agree; a connection failure is [`StoreError::Unavailable`], never a panic.
#![forbid(unsafe_code)]

use std::time::Duration;

use aldea_store::{
    CachedGrant, DeadLetter, Delivery, KeyCache, Limits, RateDecision, Result, StoreError, UsageEvent, UsageQueue,
};
use async_trait::async_trait;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};
use tokio::sync::mpsc;

/// Channel on which key-cache invalidations are published.
const INVALIDATIONS: &str = "aldea:key-invalidations";
const USAGE_STREAM: &str = "aldea:usage";
const USAGE_GROUP: &str = "aldea-usage";
/// Entries that could not be recorded (or read), kept for an operator.
const DEAD_STREAM: &str = "aldea:usage:dead";

fn redis_error(e: redis::RedisError) -> StoreError {
    if e.is_io_error() || e.is_connection_dropped() || e.is_timeout() || e.is_connection_refusal() {
        StoreError::Unavailable(e.to_string())
    } else {
        StoreError::Backend(e.to_string())
    }
}

/// A connection to a single node or to a cluster; both reconnect on their own.
#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// Where Redis is: `redis://host:port` for one node, several comma-separated URLs (or one URL
/// with `?cluster=true`) for a cluster's seed nodes.
#[derive(Clone, Debug, PartialEq)]
pub struct RedisTarget {
    pub urls: Vec<String>,
    pub cluster: bool,
}

impl RedisTarget {
    pub fn parse(spec: &str) -> Result<RedisTarget> {
        let mut urls: Vec<String> =
            spec.split(',').map(str::trim).filter(|u| !u.is_empty()).map(str::to_owned).collect();
        if urls.is_empty() {
            return Err(StoreError::Invalid("no Redis URL".to_owned()));
        }
        let mut cluster = urls.len() > 1;
        for url in &mut urls {
            if let Some(base) = url.strip_suffix("?cluster=true") {
                *url = base.to_owned();
                cluster = true;
            }
        }
        Ok(RedisTarget { urls, cluster })
    }
}

/// One handle on Redis for all three ports; cheap to clone.
#[derive(Clone)]
pub struct RedisStore {
    target: RedisTarget,
    conn: Conn,
    /// Blocking reads of the usage queue get their own connection (they would stall the others).
    queue_conn: Conn,
}

impl RedisStore {
    pub async fn connect(target: RedisTarget) -> Result<RedisStore> {
        let conn = RedisStore::open(&target, None).await?;
        let queue_conn = RedisStore::open(&target, Some(Duration::from_secs(30))).await?;
        let store = RedisStore { target, conn, queue_conn };
        store.ensure_group().await?;
        Ok(store)
    }

    async fn open(target: &RedisTarget, response_timeout: Option<Duration>) -> Result<Conn> {
        let response_timeout = response_timeout.unwrap_or(Duration::from_secs(2));
        if target.cluster {
            let client = redis::cluster::ClusterClient::builder(target.urls.clone())
                .response_timeout(response_timeout)
                .connection_timeout(Duration::from_secs(2))
                .build()
                .map_err(redis_error)?;
            let connection = tokio::time::timeout(Duration::from_secs(5), client.get_async_connection())
                .await
                .map_err(|_| StoreError::Unavailable("no answer from the cluster in 5 s".to_owned()))?
                .map_err(redis_error)?;
            Ok(Conn::Cluster(connection))
        } else {
            let client = redis::Client::open(target.urls[0].as_str()).map_err(redis_error)?;
            let config = ConnectionManagerConfig::new()
                .set_response_timeout(response_timeout)
                .set_connection_timeout(Duration::from_secs(2))
                .set_number_of_retries(2)
                .set_max_delay(200);
            let connect = ConnectionManager::new_with_config(client, config);
            let manager = tokio::time::timeout(Duration::from_secs(5), connect)
                .await
                .map_err(|_| StoreError::Unavailable(format!("no answer from {} in 5 s", target.urls[0])))?
                .map_err(redis_error)?;
            Ok(Conn::Single(manager))
        }
    }

    async fn ensure_group(&self) -> Result<()> {
        let created: redis::RedisResult<Value> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(USAGE_STREAM)
            .arg(USAGE_GROUP)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(&mut self.conn.clone())
            .await;
        match created {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
            Err(e) => Err(redis_error(e)),
        }
    }

    /// Whether Redis answers (for `/ready`).
    pub async fn ping(&self) -> Result<()> {
        redis::cmd("PING").query_async::<String>(&mut self.conn.clone()).await.map(|_| ()).map_err(redis_error)
    }
}

fn cache_key(key_hash: &str) -> String {
    format!("aldea:key:{key_hash}")
}

#[async_trait]
impl KeyCache for RedisStore {
    async fn get(&self, key_hash: &str) -> Result<Option<CachedGrant>> {
        let raw: Option<String> = redis::cmd("GET")
            .arg(cache_key(key_hash))
            .query_async(&mut self.conn.clone())
            .await
            .map_err(redis_error)?;
        // An entry that does not parse (an older format) is a miss, not an error.
        Ok(raw.and_then(|json| serde_json::from_str(&json).ok()))
    }

    async fn put(&self, key_hash: &str, entry: &CachedGrant, ttl: Duration) -> Result<()> {
        let json = serde_json::to_string(entry).map_err(|e| StoreError::Backend(e.to_string()))?;
        redis::cmd("SET")
            .arg(cache_key(key_hash))
            .arg(json)
            .arg("PX")
            .arg(ttl.as_millis().max(1) as u64)
            .query_async::<()>(&mut self.conn.clone())
            .await
            .map_err(redis_error)
    }

    async fn invalidate(&self, key_hash: &str) -> Result<()> {
        let mut conn = self.conn.clone();
        redis::cmd("DEL").arg(cache_key(key_hash)).query_async::<()>(&mut conn).await.map_err(redis_error)?;
        redis::cmd("PUBLISH").arg(INVALIDATIONS).arg(key_hash).query_async::<()>(&mut conn).await.map_err(redis_error)
    }

    async fn subscribe(&self) -> Result<mpsc::Receiver<String>> {
        use futures_util::StreamExt;

        // Classic pub/sub reaches every node of a cluster: any seed node will do.
        let client = redis::Client::open(self.target.urls[0].as_str()).map_err(redis_error)?;
        let mut pubsub = client.get_async_pubsub().await.map_err(redis_error)?;
        pubsub.subscribe(INVALIDATIONS).await.map_err(redis_error)?;
        let (tx, rx) = mpsc::channel(1024);
        tokio::spawn(async move {
            let mut messages = pubsub.into_on_message();
            while let Some(message) = messages.next().await {
                let Ok(hash) = message.get_payload::<String>() else { continue };
                if tx.send(hash).await.is_err() {
                    return;
                }
            }
        });
        Ok(rx)
    }
}

/// The check-and-set steps, compiled into the binary and hashed once: each call sends EVALSHA and
/// loads the script only when the server does not know it yet.
mod scripts {
    use std::sync::LazyLock;

    pub(crate) static ACQUIRE: LazyLock<redis::Script> =
        LazyLock::new(|| redis::Script::new(include_str!("lua/acquire.lua")));
    pub(crate) static RENEW: LazyLock<redis::Script> =
        LazyLock::new(|| redis::Script::new(include_str!("lua/renew.lua")));
    pub(crate) static HELD: LazyLock<redis::Script> =
        LazyLock::new(|| redis::Script::new(include_str!("lua/held.lua")));
    pub(crate) static HIT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(include_str!("lua/hit.lua")));
}

fn lease_key(scope: &str) -> String {
    format!("aldea:lease:{scope}")
}

#[async_trait]
impl Limits for RedisStore {
    async fn acquire(&self, scope: &str, holder: &str, limit: u32, ttl: Duration) -> Result<bool> {
        let won: i64 = scripts::ACQUIRE
            .key(lease_key(scope))
            .arg(holder)
            .arg(limit)
            .arg(ttl.as_millis().max(1) as u64)
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(redis_error)?;
        Ok(won == 1)
    }

    async fn renew(&self, scope: &str, holder: &str, ttl: Duration) -> Result<bool> {
        let renewed: i64 = scripts::RENEW
            .key(lease_key(scope))
            .arg(holder)
            .arg(ttl.as_millis().max(1) as u64)
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(redis_error)?;
        Ok(renewed == 1)
    }

    async fn release(&self, scope: &str, holder: &str) -> Result<()> {
        redis::cmd("ZREM")
            .arg(lease_key(scope))
            .arg(holder)
            .query_async::<()>(&mut self.conn.clone())
            .await
            .map_err(redis_error)
    }

    async fn held(&self, scope: &str) -> Result<u32> {
        let n: i64 =
            scripts::HELD.key(lease_key(scope)).invoke_async(&mut self.conn.clone()).await.map_err(redis_error)?;
        Ok(n as u32)
    }

    async fn hit(&self, bucket: &str, per_minute: u32) -> Result<RateDecision> {
        // The minute is the server's; the counter lives in a hash tag with its bucket so that the
        // script's keys share a slot.
        let (count, left): (u32, u32) = scripts::HIT
            .key(format!("aldea:rate:{{{bucket}}}"))
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(redis_error)?;
        if count > per_minute {
            Ok(RateDecision::Limited { retry_after_s: left.max(1) })
        } else {
            Ok(RateDecision::Allowed { remaining: per_minute - count })
        }
    }
}

/// Entries of an XREADGROUP/XCLAIM answer: `[[id, [field, value, ...]], ...]`.
/// Stream entries as (id, event); an entry whose event cannot be read gives its raw field instead.
fn parse_entries(value: &Value) -> Vec<(String, std::result::Result<UsageEvent, String>)> {
    let Value::Array(entries) = value else { return Vec::new() };
    entries
        .iter()
        .filter_map(|entry| {
            let Value::Array(parts) = entry else { return None };
            let id = entry_id(parts.first()?)?;
            let raw = match parts.get(1) {
                Some(Value::Array(fields)) => fields.chunks(2).find_map(|kv| match kv {
                    [Value::BulkString(k), Value::BulkString(v)] if k.as_slice() == b"event" => Some(v.clone()),
                    _ => None,
                }),
                _ => None,
            }
            .unwrap_or_default();
            let event = serde_json::from_slice(&raw).map_err(|_| String::from_utf8_lossy(&raw).into_owned());
            Some((id, event))
        })
        .collect()
}

#[async_trait]
impl UsageQueue for RedisStore {
    async fn publish(&self, event: &UsageEvent) -> Result<()> {
        let json = serde_json::to_string(event).map_err(|e| StoreError::Backend(e.to_string()))?;
        redis::cmd("XADD")
            .arg(USAGE_STREAM)
            .arg("*")
            .arg("event")
            .arg(json)
            .query_async::<()>(&mut self.conn.clone())
            .await
            .map_err(redis_error)
    }

    async fn take(&self, consumer: &str, max: usize, wait: Duration, reclaim_after: Duration) -> Result<Vec<Delivery>> {
        let mut conn = self.queue_conn.clone();
        let mut out = Vec::new();
        let mut unreadable = Vec::new();
        // Entries a dead consumer left, with how often each was delivered: XPENDING answers
        // [id, consumer, idle ms, deliveries] per entry idle for at least `reclaim_after`.
        let idle_ms = reclaim_after.as_millis() as u64;
        let pending: redis::RedisResult<Value> = redis::cmd("XPENDING")
            .arg(USAGE_STREAM)
            .arg(USAGE_GROUP)
            .arg("IDLE")
            .arg(idle_ms)
            .arg("-")
            .arg("+")
            .arg(max)
            .query_async(&mut conn)
            .await;
        let stale = match pending {
            Ok(pending) => pending_rows(&pending),
            // A Redis that restarted without persistence lost the group: make it again (from the
            // start of whatever the stream holds now) and read on the next call.
            Err(e) if e.code() == Some("NOGROUP") => {
                self.ensure_group().await?;
                return Ok(Vec::new());
            }
            Err(e) => return Err(redis_error(e)),
        };
        if !stale.is_empty() {
            // XCLAIM with the same minimum idle time skips an entry another consumer claimed
            // meanwhile; each claim is one more delivery.
            let mut claim = redis::cmd("XCLAIM");
            claim.arg(USAGE_STREAM).arg(USAGE_GROUP).arg(consumer).arg(idle_ms);
            for (id, _) in &stale {
                claim.arg(id);
            }
            let claimed: Value = claim.query_async(&mut conn).await.map_err(redis_error)?;
            for (id, event) in parse_entries(&claimed) {
                let before = stale.iter().find(|(s, _)| *s == id).map_or(0, |(_, n)| *n);
                match event {
                    Ok(event) => out.push(Delivery { id, event, deliveries: before.saturating_add(1) }),
                    Err(raw) => unreadable.push((id, raw)),
                }
            }
        }
        if out.len() < max {
            let mut read = redis::cmd("XREADGROUP");
            read.arg("GROUP").arg(USAGE_GROUP).arg(consumer).arg("COUNT").arg(max - out.len());
            if out.is_empty() && !wait.is_zero() {
                read.arg("BLOCK").arg(wait.as_millis().max(1) as u64);
            }
            let fresh: Value =
                read.arg("STREAMS").arg(USAGE_STREAM).arg(">").query_async(&mut conn).await.map_err(redis_error)?;
            // Answer: [[stream, entries]] (RESP2) or {stream: entries} (RESP3); nil when none came.
            let entries = match &fresh {
                Value::Array(streams) => streams.first().and_then(|s| match s {
                    Value::Array(pair) => pair.get(1).cloned(),
                    _ => None,
                }),
                Value::Map(pairs) => pairs.first().map(|(_, v)| v.clone()),
                _ => None,
            };
            for (id, event) in entries.as_ref().map(parse_entries).unwrap_or_default() {
                match event {
                    Ok(event) => out.push(Delivery { id, event, deliveries: 1 }),
                    Err(raw) => unreadable.push((id, raw)),
                }
            }
        }
        // An entry nobody can read would be redelivered forever: it is kept as a dead letter.
        for (id, raw) in unreadable {
            self.add_dead_letter(&id, &raw, "the entry holds no readable usage event").await?;
        }
        Ok(out)
    }

    async fn ack(&self, ids: &[String]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn.clone();
        redis::cmd("XACK")
            .arg(USAGE_STREAM)
            .arg(USAGE_GROUP)
            .arg(ids)
            .query_async::<()>(&mut conn)
            .await
            .map_err(redis_error)?;
        redis::cmd("XDEL").arg(USAGE_STREAM).arg(ids).query_async::<()>(&mut conn).await.map_err(redis_error)
    }

    async fn dead_letter(&self, delivery: &Delivery, reason: &str) -> Result<()> {
        let payload = serde_json::to_string(&delivery.event).map_err(|e| StoreError::Backend(e.to_string()))?;
        self.add_dead_letter(&delivery.id, &payload, reason).await
    }

    async fn dead_letters(&self, max: usize) -> Result<Vec<DeadLetter>> {
        let entries: Value = redis::cmd("XRANGE")
            .arg(DEAD_STREAM)
            .arg("-")
            .arg("+")
            .arg("COUNT")
            .arg(max)
            .query_async(&mut self.conn.clone())
            .await
            .map_err(redis_error)?;
        let Value::Array(entries) = entries else { return Ok(Vec::new()) };
        Ok(entries
            .iter()
            .filter_map(|entry| {
                let Value::Array(parts) = entry else { return None };
                let Some(Value::Array(fields)) = parts.get(1) else { return None };
                let field = |name: &[u8]| {
                    fields.chunks(2).find_map(|kv| match kv {
                        [Value::BulkString(k), Value::BulkString(v)] if k.as_slice() == name => {
                            Some(String::from_utf8_lossy(v).into_owned())
                        }
                        _ => None,
                    })
                };
                Some(DeadLetter {
                    id: field(b"id")?,
                    payload: field(b"payload").unwrap_or_default(),
                    reason: field(b"reason").unwrap_or_default(),
                })
            })
            .collect())
    }

    async fn dead_letter_count(&self) -> Result<u64> {
        redis::cmd("XLEN").arg(DEAD_STREAM).query_async(&mut self.conn.clone()).await.map_err(redis_error)
    }
}

impl RedisStore {
    /// Keeps an entry in the dead letters, then takes it out of the queue (in that order: a crash in
    /// between leaves it in both, never in neither).
    async fn add_dead_letter(&self, id: &str, payload: &str, reason: &str) -> Result<()> {
        redis::cmd("XADD")
            .arg(DEAD_STREAM)
            .arg("*")
            .arg("id")
            .arg(id)
            .arg("payload")
            .arg(payload)
            .arg("reason")
            .arg(reason)
            .query_async::<()>(&mut self.conn.clone())
            .await
            .map_err(redis_error)?;
        self.ack(&[id.to_owned()]).await
    }
}

/// Rows of an XPENDING answer as (id, deliveries so far).
fn pending_rows(value: &Value) -> Vec<(String, u32)> {
    let Value::Array(rows) = value else { return Vec::new() };
    rows.iter()
        .filter_map(|row| {
            let Value::Array(fields) = row else { return None };
            let id = entry_id(fields.first()?)?;
            let Value::Int(count) = fields.get(3)? else { return None };
            Some((id, u32::try_from(*count).unwrap_or(u32::MAX)))
        })
        .collect()
}

/// A stream entry id as Redis sends it (bulk or simple string).
fn entry_id(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
