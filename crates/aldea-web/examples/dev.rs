//! The dashboard over a platform on in-memory stores, for working on pages without the speech
//! engine: `cargo run -p aldea-web --example dev -- [WEB_ADDR] [API_URL]` (default
//! 127.0.0.1:3300 and a Speech API at http://127.0.0.1:8000). Everything is lost when it stops.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let web_addr = args.next().unwrap_or_else(|| "127.0.0.1:3300".to_owned());
    let api_url = args.next().unwrap_or_else(|| "http://127.0.0.1:8000".to_owned());
    let stop = CancellationToken::new();
    let platform_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let platform_url = format!("http://{}", platform_listener.local_addr()?);
    let config = aldea_platform::Config {
        jwt_secret: Some(secrecy::SecretString::from("a-development-secret-of-32-characters-or-more".to_owned())),
        secure_cookies: false,
        ..aldea_platform::Config::default()
    };
    let deps = aldea_platform::Deps::single_process(Arc::new(aldea_store::MemoryKeys::new()));
    tokio::spawn(aldea_platform::serve(aldea_platform::AppState::new(config, deps), platform_listener, stop.clone()));
    let listener = tokio::net::TcpListener::bind(&web_addr).await?;
    let config = aldea_web::Config {
        platform_url: platform_url.parse().expect("a URL"),
        api_url: api_url.parse().expect("API_URL is a URL"),
        secure_cookies: false,
    };
    eprintln!("dashboard on http://{} (platform {platform_url}, Speech API {api_url})", listener.local_addr()?);
    aldea_web::serve(aldea_web::AppState::new(config), listener, stop).await
}
