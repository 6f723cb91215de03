//! `aldea web [--listen ADDR] [--platform URL] [--api-url URL]`: the dashboard (platform host),
//! which calls the platform API over HTTP and sends browsers to the Speech API for the playground.

use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use tokio_util::sync::CancellationToken;

use crate::output;

#[derive(Debug, Args)]
pub(crate) struct WebArgs {
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0:3000", env = "ALDEA_WEB_LISTEN")]
    listen: SocketAddr,
    /// The platform API the dashboard calls (accounts, keys, usage).
    #[arg(long, default_value = "http://127.0.0.1:8000", env = "ALDEA_PLATFORM_URL")]
    platform: String,
    /// The public Speech API as browsers reach it (the gateway's public URL): the playground calls
    /// it and the docs' examples name it. The gateway must allow this dashboard's origin
    /// (`--cors-origins`).
    #[arg(long, default_value = "http://127.0.0.1:8000", env = "ALDEA_API_URL")]
    api_url: String,
    /// Cookies without `Secure` (for plain http on a trusted network; `aldea all` on loopback sets it).
    #[arg(long, env = "ALDEA_INSECURE_COOKIES")]
    insecure_cookies: bool,
}

/// A base URL flag: http or https, no query.
pub(crate) fn base_url(flag: &str, text: &str) -> anyhow::Result<aldea_web::Url> {
    let url = aldea_web::Url::parse(text).with_context(|| format!("{flag} {text:?} is not a URL"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() || url.query().is_some() {
        anyhow::bail!("{flag} {text:?} is not an http(s) base URL");
    }
    Ok(url)
}

pub(crate) fn run(args: &WebArgs) -> anyhow::Result<ExitCode> {
    let config = aldea_web::Config {
        platform_url: base_url("--platform", &args.platform)?,
        api_url: base_url("--api-url", &args.api_url)?,
        secure_cookies: !args.insecure_cookies,
    };
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the async runtime")?;
    runtime.block_on(async move {
        let listener =
            tokio::net::TcpListener::bind(args.listen).await.with_context(|| format!("binding {}", args.listen))?;
        output::info(&format!(
            "dashboard on http://{} (platform {}, Speech API {})",
            listener.local_addr()?,
            config.platform_url,
            config.api_url
        ));
        let shutdown = CancellationToken::new();
        tokio::spawn(crate::stt::stop_on_signal(shutdown.clone()));
        aldea_web::serve(aldea_web::AppState::new(config), listener, shutdown)
            .await
            .context("serving the dashboard")?;
        output::info("dashboard stopped");
        Ok(ExitCode::SUCCESS)
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn base_urls_are_http_without_query() {
        assert!(super::base_url("--api-url", "https://api.example.com").is_ok());
        assert!(super::base_url("--api-url", "http://127.0.0.1:8000/").is_ok());
        assert!(super::base_url("--api-url", "ftp://x").is_err());
        assert!(super::base_url("--api-url", "http://x/?a=1").is_err());
        assert!(super::base_url("--api-url", "api.example.com").is_err());
    }
}
