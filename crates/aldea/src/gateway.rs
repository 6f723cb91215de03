//! `aldea gateway [--listen ADDR] [--stt URLS] [--redis URL]`: the public Speech API in front of the
//! stt pool.

use secrecy::SecretString;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use tokio_util::sync::CancellationToken;

use crate::{output, stores, Settings};

/// Settings of the gateway shared by `aldea gateway` and `aldea all`.
#[derive(Debug, Args)]
pub(crate) struct GatewayOptions {
    /// Bearer token the stt replicas require.
    #[arg(long, env = "ALDEA_SERVICE_TOKEN", hide_env_values = true, value_parser = crate::secret)]
    pub(crate) service_token: Option<SecretString>,
    /// Secret (≥ 32 characters) that signs the short-lived browser tokens of /v1/auth/grant; shared
    /// by every gateway replica. Without it JWTs are refused.
    #[arg(long, env = "ALDEA_JWT_SECRET", hide_env_values = true, value_parser = crate::secret)]
    pub(crate) jwt_secret: Option<SecretString>,
    /// Browser origins allowed to call the API (comma-separated; `*` for any).
    #[arg(long, env = "ALDEA_CORS_ORIGINS", value_delimiter = ',')]
    pub(crate) cors_origins: Vec<String>,
    /// Concurrent streams per organization.
    #[arg(long, env = "ALDEA_ORG_MAX_STREAMS", default_value_t = 10)]
    pub(crate) org_max_streams: u32,
    /// Concurrent uploads per organization.
    #[arg(long, env = "ALDEA_ORG_MAX_UPLOADS", default_value_t = 20)]
    pub(crate) org_max_uploads: u32,
    /// Requests per minute per key (unless the key sets its own).
    #[arg(long, env = "ALDEA_KEY_RPM", default_value_t = 600)]
    pub(crate) key_rpm: u32,
    /// Largest upload in bytes.
    #[arg(long, env = "ALDEA_MAX_BODY_BYTES", default_value_t = 512 * 1024 * 1024)]
    pub(crate) max_body_bytes: usize,
    /// Let `{"url"}` bodies point at loopback and private addresses.
    #[arg(long, env = "ALDEA_ALLOW_PRIVATE_URLS")]
    pub(crate) allow_private_urls: bool,
    /// Seconds that streams may go on after SIGTERM before they are closed with 1012.
    #[arg(long, env = "ALDEA_GATEWAY_DRAIN_SECONDS", default_value_t = 30)]
    pub(crate) drain_seconds: u64,
    #[command(flatten)]
    pub(crate) body: crate::BodyArgs,
}

impl GatewayOptions {
    pub(crate) fn config(&self, stt_urls: Vec<String>, model_name: &str) -> aldea_gateway::Config {
        aldea_gateway::Config {
            stt_urls,
            service_token: crate::non_empty(&self.service_token),
            jwt_secret: crate::non_empty(&self.jwt_secret),
            cors_origins: self.cors_origins.iter().map(|o| o.trim().to_owned()).filter(|o| !o.is_empty()).collect(),
            org_max_streams: self.org_max_streams,
            org_max_uploads: self.org_max_uploads,
            key_requests_per_minute: self.key_rpm,
            max_body_bytes: self.max_body_bytes,
            allow_private_urls: self.allow_private_urls,
            drain_timeout: Duration::from_secs(self.drain_seconds),
            body_idle_timeout: self.body.idle(),
            spool_memory_bytes: self.body.spool_memory_bytes,
            spool_dir: self.body.spool_dir.clone(),
            model_name: model_name.to_owned(),
            ..aldea_gateway::Config::default()
        }
    }
}

#[derive(Debug, Args)]
pub(crate) struct GatewayArgs {
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0:8000", env = "ALDEA_GATEWAY_LISTEN")]
    listen: SocketAddr,
    /// stt replicas, comma-separated (`http://host:port`); a name resolving to several addresses
    /// (a headless Service) gives one replica per address.
    #[arg(long, env = "ALDEA_STT_URLS", value_delimiter = ',', default_value = "http://127.0.0.1:8800")]
    stt: Vec<String>,
    /// Redis for the key cache, limits and usage queue (`redis://host:port`, a comma-separated list
    /// of cluster nodes, or `?cluster=true`). Without it they live in this process.
    #[arg(long, env = "ALDEA_REDIS_URL")]
    redis: Option<String>,
    /// The platform (`http://platform:8000`) that verifies keys (`/internal/v1/keys/verify`, with
    /// --service-token); needs --redis, whose usage queue `aldea usage-worker` consumes. Without it
    /// the gateway reads keys from --database and records usage there itself.
    #[arg(long, env = "ALDEA_PLATFORM_URL")]
    platform: Option<String>,
    #[command(flatten)]
    database: stores::DatabaseArgs,
    /// Name of the model reported in usage.
    #[arg(long, env = "ALDEA_MODEL", default_value = "tiny.en")]
    model: String,
    #[command(flatten)]
    options: GatewayOptions,
}

pub(crate) fn run(settings: &Settings, args: &GatewayArgs) -> anyhow::Result<ExitCode> {
    let config = args.options.config(args.stt.clone(), &args.model);
    config.validate()?;
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the async runtime")?;
    runtime.block_on(async move {
        let redis = args.redis.as_deref().filter(|r| !r.is_empty());
        let shutdown = CancellationToken::new();
        let (deps, consumer) = match args.platform.as_deref().filter(|p| !p.is_empty()) {
            Some(platform) => {
                let token = crate::non_empty(&args.options.service_token)
                    .context("--platform needs --service-token (ALDEA_SERVICE_TOKEN), the platform's too")?;
                anyhow::ensure!(redis.is_some(), "--platform needs --redis: the usage queue the usage worker consumes");
                let keys = aldea_store_http::PlatformKeys::new(platform, token, Duration::from_secs(5))?;
                output::info(&format!("keys verified by the platform at {platform}"));
                (stores::gateway_deps(std::sync::Arc::new(keys), redis).await?, None)
            }
            None => {
                // Without the platform the gateway reads keys from the database and records the
                // usage it queues there itself.
                let database = stores::open_database(settings, &args.database).await?;
                let deps = stores::gateway_deps(database.keys.clone(), redis).await?;
                let consumer = tokio::spawn(stores::run_usage_consumer(
                    deps.usage.clone(),
                    database.ledger.clone(),
                    format!("gateway-{}", std::process::id()),
                    std::sync::Arc::default(),
                    shutdown.child_token(),
                ));
                (deps, Some(consumer))
            }
        };
        let listener =
            tokio::net::TcpListener::bind(args.listen).await.with_context(|| format!("binding {}", args.listen))?;
        output::info(&format!("gateway listening on http://{}", listener.local_addr()?));
        tokio::spawn(crate::stt::stop_on_signal(shutdown.clone()));
        let state = aldea_gateway::AppState::new(config, deps)?;
        aldea_gateway::serve(state, listener, shutdown).await.context("serving")?;
        if let Some(consumer) = consumer {
            let _ = consumer.await;
        }
        output::info("gateway stopped");
        Ok(ExitCode::SUCCESS)
    })
}
