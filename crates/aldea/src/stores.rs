//! Which store adapters the services get: the system of record (SQLite under `$ALDEA_HOME`, or the
//! database `--database` names: `sqlite://PATH` or `postgres://…`), and either Redis (`--redis`) or
//! in-process adapters for the key cache, limits and usage queue.

use std::sync::Arc;
use std::time::Duration;

use aldea_store::{Keys, MemoryKeyCache, MemoryLimits, MemoryUsageQueue, UsageLedger, UsageQueue};
use aldea_store_redis::{RedisStore, RedisTarget};
use aldea_store_sql::{PgStore, SqlStore};
use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::Settings;

/// The embedded database, created with its folder when missing.
pub(crate) async fn open_sql(settings: &Settings) -> anyhow::Result<SqlStore> {
    std::fs::create_dir_all(&settings.home).with_context(|| format!("creating {}", settings.home.display()))?;
    let path = settings.home.join("aldea.db");
    SqlStore::open(&path).await.with_context(|| format!("opening {}", path.display()))
}

/// `--database` of the commands that reach the system of record.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct DatabaseArgs {
    /// The system of record: `postgres://USER@HOST/DB` or `sqlite://PATH` (default: SQLite at
    /// $ALDEA_HOME/aldea.db).
    #[arg(long, env = "ALDEA_DATABASE_URL", hide_env_values = true)]
    pub(crate) database: Option<String>,
}

/// The system of record, whichever database holds it.
#[derive(Clone)]
pub(crate) struct Database {
    pub(crate) keys: Arc<dyn Keys>,
    pub(crate) accounts: Arc<dyn aldea_store::Accounts>,
    pub(crate) ledger: Arc<dyn UsageLedger>,
    pub(crate) reports: Arc<dyn aldea_store::UsageReports>,
    /// Where it is, for people (no password).
    pub(crate) describe: String,
}

/// Opens the database `args` names (SQLite under `$ALDEA_HOME` by default).
pub(crate) async fn open_database(settings: &Settings, args: &DatabaseArgs) -> anyhow::Result<Database> {
    match args.database.as_deref().filter(|url| !url.is_empty()) {
        None => {
            let sql = open_sql(settings).await?;
            let describe = settings.home.join("aldea.db").display().to_string();
            Ok(Database {
                keys: Arc::new(sql.clone()),
                accounts: Arc::new(sql.clone()),
                ledger: Arc::new(sql.clone()),
                reports: Arc::new(sql),
                describe,
            })
        }
        Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            let pg = PgStore::connect(url, 8).await.context("connecting to PostgreSQL")?;
            let describe = describe_postgres(url);
            Ok(Database {
                keys: Arc::new(pg.clone()),
                accounts: Arc::new(pg.clone()),
                ledger: Arc::new(pg.clone()),
                reports: Arc::new(pg),
                describe,
            })
        }
        Some(url) if url.starts_with("sqlite://") => {
            let path = std::path::Path::new(&url["sqlite://".len()..]);
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            }
            let sql = SqlStore::open(path).await.with_context(|| format!("opening {}", path.display()))?;
            Ok(Database {
                keys: Arc::new(sql.clone()),
                accounts: Arc::new(sql.clone()),
                ledger: Arc::new(sql.clone()),
                reports: Arc::new(sql),
                describe: path.display().to_string(),
            })
        }
        Some(_) => anyhow::bail!("--database must be a postgres:// or sqlite:// URL"),
    }
}

/// A PostgreSQL URL without its credentials and query (which may hold a password):
/// `postgres://host:port/db`.
fn describe_postgres(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("postgres", url));
    let rest = rest.split(['?', '#']).next().unwrap_or_default();
    let (authority, path) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
    let host = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
    format!("{scheme}://{host}/{path}")
}

/// The gateway's adapters over the system of record; Redis for everything shared when `redis`
/// names one.
pub(crate) async fn gateway_deps(
    keys: Arc<dyn aldea_store::KeyVerifier>,
    redis: Option<&str>,
) -> anyhow::Result<aldea_gateway::Deps> {
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

/// What a usage consumer has done, for `/metrics` and `/ready`.
#[derive(Default)]
pub(crate) struct ConsumerStats {
    pub(crate) recorded: std::sync::atomic::AtomicU64,
    pub(crate) dead_lettered: std::sync::atomic::AtomicU64,
    pub(crate) failures: std::sync::atomic::AtomicU64,
    /// Whether the last step failed (the database or the queue is down).
    pub(crate) failing: std::sync::atomic::AtomicBool,
}

/// Moves usage from the queue into the ledger until `stop`: the usage worker's loop, and what
/// `aldea all` runs in-process. A failing step (the database or queue down) is retried with
/// exponential backoff, 0.5 s doubling to 5 s; nothing is lost meanwhile (entries stay in the
/// queue, and those a dead consumer held are reclaimed after [`aldea_store::RECLAIM_AFTER`]).
pub(crate) async fn run_usage_consumer(
    queue: Arc<dyn UsageQueue>,
    ledger: Arc<dyn UsageLedger>,
    consumer: String,
    stats: Arc<ConsumerStats>,
    stop: CancellationToken,
) {
    use std::sync::atomic::Ordering::Relaxed;
    const FIRST_BACKOFF: Duration = Duration::from_millis(500);
    const MAX_BACKOFF: Duration = Duration::from_secs(5);
    let mut backoff = FIRST_BACKOFF;
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
                Ok(consumed) => {
                    stats.recorded.fetch_add(consumed.recorded as u64, Relaxed);
                    stats.dead_lettered.fetch_add(consumed.dead_lettered as u64, Relaxed);
                    consumed.last_error.map(|e| e.to_string())
                }
                Err(e) => Some(e.to_string()),
            }
        };
        stats.failing.store(failure.is_some(), Relaxed);
        match failure {
            None => backoff = FIRST_BACKOFF,
            Some(error) => {
                stats.failures.fetch_add(1, Relaxed);
                tracing::warn!(error, retry_in_ms = backoff.as_millis() as u64, "usage consumer: retrying");
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
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
        stats.recorded.fetch_add(consumed.recorded as u64, Relaxed);
        if consumed.moved() == 0 {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_described_database_url_shows_no_credentials() {
        for (url, shown) in [
            ("postgres://u:p%40ss@db.internal:5432/aldea?sslmode=require", "postgres://db.internal:5432/aldea"),
            ("postgresql://u:p@ss@db/aldea", "postgresql://db/aldea"),
            ("postgres://db/aldea?password=secret", "postgres://db/aldea"),
            ("postgres://db", "postgres://db/"),
        ] {
            assert_eq!(super::describe_postgres(url), shown);
        }
    }
}
