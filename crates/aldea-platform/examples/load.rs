//! Load client for the platform's latency goals (issue 19): the platform API served on a socket over
//! PostgreSQL (a schema of its own in `ALDEA_TEST_POSTGRES_URL`, dropped afterwards), one signed-up
//! organization given `EVENTS` usage events (default 1,000,000, recorded in batches of 256 as the
//! usage worker does, so the roll-ups and the request log are those of that many events), then an
//! open-loop load of `RATE` requests/s (default 200) for `SECONDS` (default 30): key creation, key
//! listing and usage queries in turn, each on a connection of its own. Prints events/s of the
//! seeding and p50/p99/max latency per kind.
//!
//! `ALDEA_TEST_POSTGRES_URL=postgres://… cargo run --release -p aldea-platform --example load -- [EVENTS] [RATE] [SECONDS]`
#![allow(clippy::print_stdout)] // A benchmark tool reports on stdout.

use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aldea_platform::{router, AppState, Config, Deps};
use aldea_store::{UsageEvent, UsageKind, UsageLedger};
use aldea_store_sql::PgStore;
use serde_json::Value;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn event(org: &str, i: usize) -> UsageEvent {
    // Four events per request, five keys, uploads and streams, spread over 60 days.
    let at = 1_796_300_000_000 - (i as i64 % 5_184_000) * 1_000;
    UsageEvent {
        event_id: UsageEvent::event_id(&format!("load-{}", i / 4), (i % 4) as u32),
        request_id: format!("load-{}", i / 4),
        seq: (i % 4) as u32,
        org_id: org.to_owned(),
        key_id: format!("key-{}", i % 5),
        kind: if i % 8 < 4 { UsageKind::Rest } else { UsageKind::Stream },
        model: "tiny.en".to_owned(),
        audio_seconds: ((i * 7_919) % 9_999 + 1) as f64 / 1000.0,
        started_at: at,
        ended_at: at + 500,
        is_final: i % 4 == 3,
        status: 200,
    }
}

/// One request on a fresh connection: (status, body).
async fn call(addr: std::net::SocketAddr, method: &str, path: &str, auth: &str, body: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("the platform answers");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nauthorization: {auth}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.expect("sent");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.expect("read");
    let status = answer.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, answer.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let arg = |i: usize, default: usize| std::env::args().nth(i).and_then(|a| a.parse().ok()).unwrap_or(default);
    let (events, rate, seconds) = (arg(1, 1_000_000), arg(2, 200), arg(3, 30));
    let url = std::env::var("ALDEA_TEST_POSTGRES_URL").expect("ALDEA_TEST_POSTGRES_URL names a PostgreSQL database");
    let options = PgConnectOptions::from_str(&url).expect("a PostgreSQL URL");
    let admin = PgPoolOptions::new().max_connections(1).connect_with(options.clone()).await.expect("PostgreSQL");
    let schema = format!("aldea_load_{}", std::process::id());
    sqlx::raw_sql(&format!("CREATE SCHEMA {schema}")).execute(&admin).await.expect("a schema");
    let store =
        Arc::new(PgStore::connect_with(options.options([("search_path", schema.as_str())]), 8).await.expect("store"));
    let deps = Deps::single_process(store.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a port");
    let addr = listener.local_addr().expect("its address");
    let app = router(AppState::new(Config::default(), deps));
    tokio::spawn(async move { axum::serve(listener, app).await });

    let signup = r#"{"email":"load@example.com","password":"a long password","org_name":"Load"}"#;
    let (status, body) = call(addr, "POST", "/v1/auth/signup", "", signup).await;
    assert_eq!(status, 201, "{body}");
    let signed: Value = serde_json::from_str(&body).expect("JSON");
    let session = format!("Bearer {}", signed["token"].as_str().expect("a token"));
    let org = signed["org"]["id"].as_str().expect("an org").to_owned();

    let started = Instant::now();
    let all: Vec<UsageEvent> = (0..events).map(|i| event(&org, i)).collect();
    for chunk in all.chunks(256) {
        store.record_batch(chunk).await.expect("recorded");
    }
    let seeded = started.elapsed().as_secs_f64();
    println!("seeded {events} events in {seeded:.1} s ({:.0} events/s, record_batch of 256)", events as f64 / seeded);

    let kinds = ["create key", "list keys", "usage"];
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(usize, f64, u16)>();
    let total = rate * seconds;
    let period = Duration::from_secs_f64(1.0 / rate as f64);
    let start = tokio::time::Instant::now();
    for i in 0..total {
        tokio::time::sleep_until(start + period * i as u32).await;
        let (tx, session, org) = (tx.clone(), session.clone(), org.clone());
        tokio::spawn(async move {
            let kind = i % 3;
            let sent = Instant::now();
            let (status, _) = match kind {
                0 => call(addr, "POST", &format!("/v1/orgs/{org}/keys"), &session, "{}").await,
                1 => call(addr, "GET", &format!("/v1/orgs/{org}/keys?limit=50"), &session, "").await,
                _ => {
                    let path = format!("/v1/orgs/{org}/usage?start=2026-10-01&end=2026-12-31&group_by=day");
                    call(addr, "GET", &path, &session, "").await
                }
            };
            let _ = tx.send((kind, sent.elapsed().as_secs_f64() * 1000.0, status));
        });
    }
    drop(tx);
    let mut latencies = vec![Vec::new(); kinds.len()];
    let mut failed = 0;
    while let Some((kind, ms, status)) = rx.recv().await {
        latencies[kind].push(ms);
        failed += usize::from(!(200..300).contains(&status));
    }
    let wall = start.elapsed().as_secs_f64();
    println!("{total} requests in {wall:.1} s ({:.0}/s offered {rate}/s), {failed} not 2xx", total as f64 / wall);
    for (kind, mut ms) in kinds.iter().zip(latencies) {
        ms.sort_by(f64::total_cmp);
        println!(
            "{kind:>10}: n {} p50 {:.1} ms p99 {:.1} ms max {:.1} ms",
            ms.len(),
            percentile(&ms, 0.50),
            percentile(&ms, 0.99),
            percentile(&ms, 1.0)
        );
    }
    sqlx::raw_sql(&format!("DROP SCHEMA {schema} CASCADE")).execute(&admin).await.expect("dropped");
}
