//! `aldea all`: the whole platform in one process — the stt service, the gateway, the platform
//! API and the web dashboard (which reaches the platform over loopback HTTP, as in a cluster), SQLite under `$ALDEA_HOME`, in-process cache, limits and usage queue. The same `serve` functions run as in a
//! cluster, under one shutdown token.

use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use tokio_util::sync::CancellationToken;

use crate::gateway::GatewayOptions;
use crate::transcribe::{load, ModelArgs};
use crate::{output, stores, Settings};

#[derive(Debug, Args)]
pub(crate) struct AllArgs {
    /// Where the public Speech API listens.
    #[arg(long, default_value = "127.0.0.1:8000", env = "ALDEA_GATEWAY_LISTEN")]
    gateway_listen: SocketAddr,
    /// Where the stt service listens (off loopback it needs a service token).
    #[arg(long, default_value = "127.0.0.1:8800", env = "ALDEA_STT_LISTEN")]
    stt_listen: SocketAddr,
    /// A model name (pulled on first start when missing) or a model directory.
    #[arg(long, default_value = "tiny.en", env = "ALDEA_MODEL")]
    model: String,
    /// Inference threads (default: the number of cores).
    #[arg(long, env = "ALDEA_THREADS")]
    threads: Option<usize>,
    #[command(flatten)]
    device: crate::transcribe::DeviceArgs,
    /// Where the web dashboard listens (the place a new user starts).
    #[arg(long, default_value = "127.0.0.1:3000", env = "ALDEA_WEB_LISTEN")]
    web_listen: SocketAddr,
    /// The Speech API as browsers reach it, for the dashboard's playground and docs (default: the
    /// gateway's address; behind a proxy or an ingress, its public URL).
    #[arg(long, env = "ALDEA_API_URL")]
    api_url: Option<String>,
    /// Where the platform API (accounts, organizations, keys) listens.
    #[arg(long, default_value = "127.0.0.1:8080", env = "ALDEA_PLATFORM_LISTEN")]
    platform_listen: SocketAddr,
    #[command(flatten)]
    options: GatewayOptions,
    #[command(flatten)]
    platform: crate::platform::PlatformOptions,
}

pub(crate) fn run(settings: &Settings, args: &AllArgs) -> anyhow::Result<ExitCode> {
    let model_args = ModelArgs::for_service(&args.model, args.threads, &args.device);
    let mut stt_config = aldea_stt::Config {
        service_token: crate::non_empty(&args.options.service_token),
        ..aldea_stt::Config::default()
    };
    args.options.body.apply_to_stt(&mut stt_config);
    stt_config.validate()?;
    stt_config.check_listen(&args.stt_listen)?;
    let loaded = load(settings, &model_args, crate::stt::GPU_REPLICAS)?;
    stt_config.model_name = loaded.model_name.clone();
    if loaded.device.is_gpu() {
        crate::stt::size_for_gpu(&mut stt_config, &crate::stt::Sizing::default());
    }
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the async runtime")?;
    runtime.block_on(async move {
        let database = stores::open_database(settings, &stores::DatabaseArgs { database: None }).await?;
        let deps = stores::gateway_deps(database.keys.clone(), None).await?;
        let stt_listener = tokio::net::TcpListener::bind(args.stt_listen)
            .await
            .with_context(|| format!("binding {}", args.stt_listen))?;
        let stt_address = stt_listener.local_addr()?;
        let gateway_listener = tokio::net::TcpListener::bind(args.gateway_listen)
            .await
            .with_context(|| format!("binding {}", args.gateway_listen))?;
        let gateway_address = gateway_listener.local_addr()?;
        let platform_listener = tokio::net::TcpListener::bind(args.platform_listen)
            .await
            .with_context(|| format!("binding {}", args.platform_listen))?;
        let platform_address = platform_listener.local_addr()?;
        let web_listener = tokio::net::TcpListener::bind(args.web_listen)
            .await
            .with_context(|| format!("binding {}", args.web_listen))?;
        let web_address = web_listener.local_addr()?;
        // Cookies without `Secure` only where the browser reaches it over loopback http.
        // One JWT secret for the platform that issues browser tokens and the gateway that checks
        // them: the one given, or one generated once and kept under $ALDEA_HOME.
        let jwt_secret = match crate::non_empty(&args.options.jwt_secret) {
            Some(secret) => secret,
            None => crate::settings::home_jwt_secret(&settings.home)?,
        };
        let platform_config = args.platform.config(
            !platform_address.ip().is_loopback(),
            crate::non_empty(&args.options.service_token),
            Some(jwt_secret.clone()),
        )?;
        // The gateway's own key cache: a key revoked on the platform is refused at once.
        let platform_deps = crate::platform::deps(&database, None, Some(deps.key_cache.clone())).await?;
        let mut gateway_config = args.options.config(vec![format!("http://{stt_address}")], &loaded.model_name);
        gateway_config.jwt_secret = Some(jwt_secret);
        // The dashboard's pages call the Speech API from the browser.
        gateway_config.cors_origins.extend(web_origins(web_address));
        let web_config = aldea_web::Config {
            platform_url: crate::web::base_url(
                "--platform-listen",
                &format!("http://{}", browser_address(platform_address)),
            )?,
            api_url: match args.api_url.as_deref().filter(|u| !u.is_empty()) {
                Some(url) => crate::web::base_url("--api-url", url)?,
                None => {
                    crate::web::base_url("--gateway-listen", &format!("http://{}", browser_address(gateway_address)))?
                }
            },
            secure_cookies: !web_address.ip().is_loopback() && !args.platform.insecure_cookies(),
        };
        gateway_config.validate()?;

        let shutdown = CancellationToken::new();
        tokio::spawn(crate::stt::stop_on_signal(shutdown.clone()));
        let stt_state =
            aldea_stt::AppState::new(stt_config, aldea_stt::Deps { transcriber: loaded.transcriber, vad: loaded.vad });
        if let Some(monitor) = crate::gpu::monitor(loaded.device) {
            stt_state.metrics().set_device_monitor(monitor);
        }
        let gateway_state = aldea_gateway::AppState::new(gateway_config, deps.clone())?;
        let consumer = tokio::spawn(stores::run_usage_consumer(
            deps.usage.clone(),
            database.ledger.clone(),
            "all".to_owned(),
            std::sync::Arc::default(),
            shutdown.child_token(),
        ));
        let platform_state = aldea_platform::AppState::new(platform_config, platform_deps);
        let platform = tokio::spawn(aldea_platform::serve(platform_state, platform_listener, shutdown.child_token()));
        let web =
            tokio::spawn(aldea_web::serve(aldea_web::AppState::new(web_config), web_listener, shutdown.child_token()));
        output::info(&format!(
            "dashboard:   http://{} (start here: sign up, get a key, try the playground)",
            browser_address(web_address)
        ));
        output::info(&format!("Speech API:  http://{gateway_address}/v1/listen (ws://{gateway_address}/v1/listen)"));
        output::info(&format!("platform:    http://{platform_address}/v1/auth/signup (accounts, keys, credit)"));
        output::info(&format!("stt service: http://{stt_address} (internal)"));
        output::info(&format!("database:    {}", database.describe));
        output::info("create a key with: aldea keys create --org NAME");
        // The gateway stops first (its streams drain), then the stt service.
        let stt_stop = CancellationToken::new();
        let stt = tokio::spawn(aldea_stt::serve(stt_state, stt_listener, stt_stop.clone()));
        let served = aldea_gateway::serve(gateway_state, gateway_listener, shutdown).await;
        stt_stop.cancel();
        let stt_result = stt.await.context("the stt task")?;
        let _ = consumer.await;
        let platform_result = platform.await.context("the platform task")?;
        let web_result = web.await.context("the dashboard task")?;
        served.context("serving the gateway")?;
        platform_result.context("serving the platform")?;
        web_result.context("serving the dashboard")?;
        stt_result.context("serving stt")?;
        output::info("stopped");
        Ok(ExitCode::SUCCESS)
    })
}

/// An address as a browser on this machine reaches it: a wildcard listen address is reached on
/// loopback.
fn browser_address(address: SocketAddr) -> SocketAddr {
    if address.ip().is_unspecified() {
        SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), address.port())
    } else {
        address
    }
}

/// The dashboard's origins for the gateway's CORS list: its address, and `localhost` beside a
/// loopback one (browsers name both).
fn web_origins(web: SocketAddr) -> Vec<String> {
    let web = browser_address(web);
    let mut origins = vec![format!("http://{web}")];
    if web.ip().is_loopback() {
        origins.push(format!("http://localhost:{}", web.port()));
    }
    origins
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_dashboard_origin_is_allowed_as_browsers_name_it() {
        let origins = super::web_origins("127.0.0.1:3000".parse().unwrap());
        assert_eq!(origins, ["http://127.0.0.1:3000", "http://localhost:3000"]);
        assert_eq!(super::web_origins("0.0.0.0:3100".parse().unwrap())[0], "http://127.0.0.1:3100");
        assert_eq!(super::web_origins("10.0.0.5:3000".parse().unwrap()), ["http://10.0.0.5:3000"]);
    }
}
