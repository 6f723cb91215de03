//! `aldea usage-worker`: the usage queue's consumer as its own deployable. It moves usage events
//! from the Redis stream (consumer group) into the database, each `event_id` once; several replicas
//! share the work, and what a dead replica held is reclaimed by the others. `/live`, `/ready`
//! (the last step reached both the queue and the database) and `/metrics` on `--listen`.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use anyhow::Context;
use axum::http::StatusCode;
use axum::routing::get;
use clap::Args;
use tokio_util::sync::CancellationToken;

use crate::stores::{self, ConsumerStats};
use crate::{output, Settings};

#[derive(Debug, Args)]
pub(crate) struct UsageWorkerArgs {
    /// The usage queue: Redis shared with the gateways (`redis://host:port`; a comma-separated
    /// list for a cluster).
    #[arg(long, env = "ALDEA_REDIS_URL")]
    redis: String,
    #[command(flatten)]
    database: stores::DatabaseArgs,
    /// Where `/live`, `/ready` and `/metrics` answer.
    #[arg(long, default_value = "0.0.0.0:8000", env = "ALDEA_USAGE_WORKER_LISTEN")]
    listen: SocketAddr,
    /// This consumer's name in the group (default: the host name and process id, so a restarted
    /// replica is a new consumer and its predecessor's entries are reclaimed).
    #[arg(long, env = "ALDEA_USAGE_CONSUMER")]
    consumer: Option<String>,
}

fn default_consumer() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok().map(|h| h.trim().to_owned()))
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "worker".to_owned());
    format!("{host}-{}", std::process::id())
}

fn metrics(stats: &ConsumerStats) -> String {
    format!(
        "# HELP aldea_usage_events_recorded_total Usage events recorded (or found recorded) and acknowledged.\n\
         # TYPE aldea_usage_events_recorded_total counter\naldea_usage_events_recorded_total {}\n\
         # HELP aldea_usage_dead_letters_total Usage events moved to the dead letters.\n\
         # TYPE aldea_usage_dead_letters_total counter\naldea_usage_dead_letters_total {}\n\
         # HELP aldea_usage_consumer_failures_total Steps that failed (queue or database unreachable).\n\
         # TYPE aldea_usage_consumer_failures_total counter\naldea_usage_consumer_failures_total {}\n\
         # HELP aldea_usage_consumer_failing Whether the last step failed.\n\
         # TYPE aldea_usage_consumer_failing gauge\naldea_usage_consumer_failing {}\n",
        stats.recorded.load(Relaxed),
        stats.dead_lettered.load(Relaxed),
        stats.failures.load(Relaxed),
        u8::from(stats.failing.load(Relaxed)),
    )
}

pub(crate) fn run(settings: &Settings, args: &UsageWorkerArgs) -> anyhow::Result<ExitCode> {
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the async runtime")?;
    runtime.block_on(async move {
        let database = stores::open_database(settings, &args.database).await?;
        let target = aldea_store_redis::RedisTarget::parse(&args.redis).context("parsing the Redis URL")?;
        let queue = Arc::new(aldea_store_redis::RedisStore::connect(target).await.context("connecting to Redis")?);
        let consumer = args.consumer.clone().unwrap_or_else(default_consumer);
        let stats = Arc::new(ConsumerStats::default());
        let shutdown = CancellationToken::new();
        tokio::spawn(crate::stt::stop_on_signal(shutdown.clone()));
        let health = {
            let (ready, scraped) = (stats.clone(), stats.clone());
            axum::Router::new()
                .route("/live", get(|| async { "ok" }))
                .route(
                    "/ready",
                    get(move || async move {
                        if ready.failing.load(Relaxed) {
                            (StatusCode::SERVICE_UNAVAILABLE, "the queue or the database is unreachable")
                        } else {
                            (StatusCode::OK, "ok")
                        }
                    }),
                )
                .route("/metrics", get(move || async move { metrics(&scraped) }))
        };
        let listener =
            tokio::net::TcpListener::bind(args.listen).await.with_context(|| format!("binding {}", args.listen))?;
        output::info(&format!(
            "usage worker {consumer}: queue {} → database {}; health on http://{}",
            args.redis.split('@').next_back().unwrap_or_default(),
            database.describe,
            listener.local_addr()?
        ));
        let stopped = shutdown.clone().cancelled_owned();
        let server = tokio::spawn(async move { axum::serve(listener, health).with_graceful_shutdown(stopped).await });
        stores::run_usage_consumer(queue, database.ledger.clone(), consumer, stats.clone(), shutdown.clone()).await;
        shutdown.cancel();
        let _ = server.await;
        output::info(&format!("usage worker stopped after recording {} events", stats.recorded.load(Relaxed)));
        Ok(ExitCode::SUCCESS)
    })
}
