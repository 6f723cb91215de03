//! Which store adapters the services get: SQLite under `$ALDEA_HOME` as the system of record, and
//! either Redis (`--redis`) or in-process adapters for the key cache, limits and usage queue.

use std::sync::Arc;
use std::time::Duration;

use aldea_store::{MemoryKeyCache, MemoryLimits, MemoryUsageQueue, UsageLedger, UsageQueue};
use aldea_store_redis::{RedisStore, RedisTarget};
use aldea_store_sql::SqlStore;
use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::Settings;

/// The embedded database, created with its folder when missing.
pub(crate) async fn open_sql(settings: &Settings) -> anyhow::Result<SqlStore> {
    std::fs::create_dir_all(&settings.home).with_context(|| format!("creating {}", settings.home.display()))?;
    let path = settings.home.join("aldea.db");
    SqlStore::open(&path).await.with_context(|| format!("opening {}", path.display()))
}

/// The gateway's adapters over `sql`; Redis for everything shared when `redis` names one.
pub(crate) async fn gateway_deps(sql: &SqlStore, redis: Option<&str>) -> anyhow::Result<aldea_gateway::Deps> {
    let keys = Arc::new(sql.clone());
    match redis {
        Some(spec) => {
            let target = RedisTarget::parse(spec).context("parsing the Redis URL")?;
            let redis = Arc::new(RedisStore::connect(target).await.context("connecting to Redis")?);
            Ok(aldea_gateway::Deps { keys, key_cache: redis.clone(), limits: redis.clone(), usage: redis })
        }
        None => Ok(aldea_gateway::Deps {
            keys,
            key_cache: Arc::new(MemoryKeyCache::new()),
            limits: Arc::new(MemoryLimits::new()),
            usage: Arc::new(MemoryUsageQueue::default()),
        }),
    }
}

/// Moves usage from the queue into the ledger until `stop` (what the platform's consumer does; here
/// for the embedded single-machine mode). Errors are logged and retried.
pub(crate) async fn run_usage_consumer(
    queue: Arc<dyn UsageQueue>,
    ledger: Arc<dyn UsageLedger>,
    consumer: String,
    stop: CancellationToken,
) {
    loop {
        let step = aldea_store::consume_usage(
            queue.as_ref(),
            ledger.as_ref(),
            &consumer,
            256,
            Duration::from_millis(500),
            aldea_store::RECLAIM_AFTER,
        );
        let failure = tokio::select! {
            _ = stop.cancelled() => break,
            consumed = step => match consumed {
                Ok(consumed) => consumed.last_error.map(|e| e.to_string()),
                Err(e) => Some(e.to_string()),
            }
        };
        if let Some(error) = failure {
            tracing::warn!(error, "usage consumer: an entry is retried shortly");
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }
    // What is already queued is recorded before the process ends.
    while let Ok(consumed) = aldea_store::consume_usage(
        queue.as_ref(),
        ledger.as_ref(),
        &consumer,
        256,
        Duration::ZERO,
        aldea_store::RECLAIM_AFTER,
    )
    .await
    {
        if consumed.moved() == 0 {
            break;
        }
    }
}
