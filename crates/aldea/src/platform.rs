//! `aldea platform`: the platform API (backend host) alone, over the system of record the
//! `--database` names; the options `aldea all` shares with it.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use aldea_store::{Credit, MemoryKeyCache, MemoryLimits};
use anyhow::Context;
use clap::Args;
use tokio_util::sync::CancellationToken;

use crate::{output, stores, Settings};

/// Settings of the platform API (also those of `aldea all`'s).
#[derive(Debug, Clone, Args)]
pub(crate) struct PlatformOptions {
    /// Audio seconds of credit the organization made at signup starts with, or `unlimited`
    /// (organizations made later start with none).
    #[arg(long, default_value = "3600", env = "ALDEA_SIGNUP_CREDIT_SECONDS", value_parser = parse_credit)]
    signup_credit_seconds: Credit,
    /// Session cookies without `Secure` (for plain-http deployments on a trusted network; `aldea
    /// all` on loopback sets it).
    #[arg(long, env = "ALDEA_INSECURE_COOKIES")]
    insecure_cookies: bool,
    /// Hours a login lasts.
    #[arg(long, default_value = "168", env = "ALDEA_SESSION_HOURS")]
    session_hours: u64,
}

fn parse_credit(text: &str) -> Result<Credit, String> {
    if text.eq_ignore_ascii_case("unlimited") {
        return Ok(Credit::Unlimited);
    }
    let seconds: f64 = text.parse().map_err(|_| format!("{text:?} is neither seconds nor `unlimited`"))?;
    if !seconds.is_finite() || !(0.0..=1e9).contains(&seconds) {
        return Err("credit is 0 to 10^9 seconds".to_owned());
    }
    Ok(Credit::Millis((seconds * 1000.0).round() as i64))
}

impl PlatformOptions {
    /// Whether cookies were asked to go without `Secure` (the dashboard follows the platform).
    pub(crate) fn insecure_cookies(&self) -> bool {
        self.insecure_cookies
    }

    pub(crate) fn config(
        &self,
        secure_cookies: bool,
        service_token: Option<secrecy::SecretString>,
        jwt_secret: Option<secrecy::SecretString>,
    ) -> anyhow::Result<aldea_platform::Config> {
        use secrecy::ExposeSecret;
        if jwt_secret.as_ref().is_some_and(|s| s.expose_secret().len() < 32) {
            anyhow::bail!("the JWT secret needs at least 32 characters");
        }
        if self.session_hours == 0 || self.session_hours > 24 * 366 {
            anyhow::bail!("--session-hours is 1 to 8784");
        }
        Ok(aldea_platform::Config {
            signup_credit: self.signup_credit_seconds,
            secure_cookies: secure_cookies && !self.insecure_cookies,
            session_ttl: std::time::Duration::from_secs(self.session_hours * 3600),
            service_token,
            jwt_secret,
            ..aldea_platform::Config::default()
        })
    }
}

#[derive(Debug, Args)]
pub(crate) struct PlatformArgs {
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0:8000", env = "ALDEA_PLATFORM_LISTEN")]
    listen: SocketAddr,
    /// Redis shared with the gateways (`redis://host:port`; a comma-separated list for a cluster):
    /// login-attempt counters of every replica, and the key cache a revocation invalidates at once.
    /// Without it each replica counts on its own and gateways see a revocation within their cache
    /// lifetime.
    #[arg(long, env = "ALDEA_REDIS_URL")]
    redis: Option<String>,
    /// Token the gateways present on the internal API (key verification); the same value as
    /// theirs. Without it the internal API lets nobody in.
    #[arg(long, env = "ALDEA_SERVICE_TOKEN", hide_env_values = true, value_parser = crate::secret)]
    service_token: Option<secrecy::SecretString>,
    /// Secret (≥ 32 characters) that signs the 30-s browser tokens of `listen-token`: the
    /// gateways' `ALDEA_JWT_SECRET`. Without it browser tokens are refused.
    #[arg(long, env = "ALDEA_JWT_SECRET", hide_env_values = true, value_parser = crate::secret)]
    jwt_secret: Option<secrecy::SecretString>,
    #[command(flatten)]
    database: stores::DatabaseArgs,
    #[command(flatten)]
    options: PlatformOptions,
}

/// The platform's adapters over the system of record: Redis (`redis`) for login counters and the
/// gateways' key cache, else in-process ones (`key_cache`: the gateway's own, in `aldea all`).
pub(crate) async fn deps(
    database: &stores::Database,
    redis: Option<&str>,
    key_cache: Option<Arc<dyn aldea_store::KeyCache>>,
) -> anyhow::Result<aldea_platform::Deps> {
    let (limits, key_cache): (Arc<dyn aldea_store::Limits>, Arc<dyn aldea_store::KeyCache>) = match redis
        .filter(|r| !r.is_empty())
    {
        Some(spec) => {
            let target = aldea_store_redis::RedisTarget::parse(spec).context("parsing the Redis URL")?;
            let redis = Arc::new(aldea_store_redis::RedisStore::connect(target).await.context("connecting to Redis")?);
            (redis.clone(), redis)
        }
        None => (Arc::new(MemoryLimits::new()), key_cache.unwrap_or_else(|| Arc::new(MemoryKeyCache::new()))),
    };
    Ok(aldea_platform::Deps {
        keys: database.keys.clone(),
        accounts: database.accounts.clone(),
        usage: database.reports.clone(),
        limits,
        key_cache,
    })
}

pub(crate) fn run(settings: &Settings, args: &PlatformArgs) -> anyhow::Result<ExitCode> {
    let config =
        args.options.config(true, crate::non_empty(&args.service_token), crate::non_empty(&args.jwt_secret))?;
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the async runtime")?;
    runtime.block_on(async move {
        let database = stores::open_database(settings, &args.database).await?;
        let deps = deps(&database, args.redis.as_deref(), None).await?;
        let listener =
            tokio::net::TcpListener::bind(args.listen).await.with_context(|| format!("binding {}", args.listen))?;
        output::info(&format!("platform API on http://{} (database {})", listener.local_addr()?, database.describe));
        let shutdown = CancellationToken::new();
        tokio::spawn(crate::stt::stop_on_signal(shutdown.clone()));
        aldea_platform::serve(aldea_platform::AppState::new(config, deps), listener, shutdown)
            .await
            .context("serving the platform")?;
        output::info("platform stopped");
        Ok(ExitCode::SUCCESS)
    })
}
