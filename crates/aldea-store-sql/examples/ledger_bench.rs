//! How fast usage events go into the ledger on PostgreSQL: `N` events recorded one transaction
//! each (`record`), then `N` more in batches of 256 (`record_batch`, what the usage worker does),
//! into a schema of their own in `ALDEA_TEST_POSTGRES_URL` (dropped afterwards). Prints events/s
//! of both and their ratio.
//!
//! `ALDEA_TEST_POSTGRES_URL=postgres://… cargo run --release -p aldea-store-sql --example ledger_bench -- [N]`
#![allow(clippy::print_stdout)] // A benchmark tool reports on stdout.

use std::str::FromStr;
use std::time::Instant;

use aldea_store::{Credit, Keys, UsageEvent, UsageKind, UsageLedger};
use aldea_store_sql::PgStore;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

fn event(org: &str, run: &str, i: usize) -> UsageEvent {
    UsageEvent {
        event_id: UsageEvent::event_id(&format!("{run}-{}", i / 4), (i % 4) as u32),
        request_id: format!("{run}-{}", i / 4),
        seq: (i % 4) as u32,
        org_id: org.to_owned(),
        key_id: format!("key-{}", i % 5),
        kind: if i % 8 < 4 { UsageKind::Rest } else { UsageKind::Stream },
        model: "tiny.en".to_owned(),
        audio_seconds: ((i * 7_919) % 9_999 + 1) as f64 / 1000.0,
        started_at: 1_796_000_000_000 + i as i64 * 100,
        ended_at: 1_796_000_000_000 + i as i64 * 100 + 50,
        is_final: i % 4 == 3,
        status: 200,
    }
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(20_000);
    let url = std::env::var("ALDEA_TEST_POSTGRES_URL").expect("ALDEA_TEST_POSTGRES_URL names a PostgreSQL database");
    let options = PgConnectOptions::from_str(&url).unwrap();
    let admin = PgPoolOptions::new().max_connections(1).connect_with(options.clone()).await.unwrap();
    let schema = format!("aldea_bench_{}", std::process::id());
    sqlx::raw_sql(&format!("CREATE SCHEMA {schema}")).execute(&admin).await.unwrap();
    let store = PgStore::connect_with(options.options([("search_path", schema.as_str())]), 4).await.unwrap();
    let org = store.create_org("bench", Credit::Millis(i64::MAX / 4), 0).await.unwrap();

    let started = Instant::now();
    for i in 0..n {
        store.record(&event(org.id.as_str(), "single", i)).await.unwrap();
    }
    let single = n as f64 / started.elapsed().as_secs_f64();

    let events: Vec<UsageEvent> = (0..n).map(|i| event(org.id.as_str(), "batch", i)).collect();
    let started = Instant::now();
    for chunk in events.chunks(256) {
        store.record_batch(chunk).await.unwrap();
    }
    let batched = n as f64 / started.elapsed().as_secs_f64();
    let totals = store.totals(&org.id).await.unwrap();
    assert_eq!(totals.events, 2 * n as u64, "every event once");
    println!(
        "{n} events each way: record {single:.0} events/s, record_batch(256) {batched:.0} events/s ({:.1}x)",
        batched / single
    );
    sqlx::raw_sql(&format!("DROP SCHEMA {schema} CASCADE")).execute(&admin).await.unwrap();
}
