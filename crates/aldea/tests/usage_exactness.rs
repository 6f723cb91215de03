//! Usage is recorded exactly once per event, whatever happens on the way: 10,000 events (and 1,000
//! published twice) go through a private Redis to two `aldea usage-worker`s writing to PostgreSQL
//! (a schema of its own) through a loopback TCP proxy this test controls. One worker is killed
//! mid-run (its taken entries are reclaimed by the other after 30 s), and the database is cut off
//! for 10 s (every connection through the proxy dropped, new ones refused). Afterwards the totals,
//! the roll-ups and the credit charged equal the sums of the distinct events exactly. Needs the
//! environment `scripts/test.sh` sets.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aldea_store::{Credit, Keys, UsageEvent, UsageKind, UsageLedger, UsageQueue, UsageReports};

mod common;
use common::{free_port, http, poll_until, spawn_logged, start_redis, Processes, Schema};

const EVENTS: usize = 10_000;
const DUPLICATES: usize = 1_000;

/// Forwards loopback connections to `target` until `cut` is set: then every open connection is
/// dropped and new ones are closed at once, until it is cleared.
async fn proxy(listener: tokio::net::TcpListener, target: String, cut: Arc<AtomicBool>) {
    loop {
        let Ok((mut client, _)) = listener.accept().await else { continue };
        if cut.load(Ordering::SeqCst) {
            drop(client);
            continue;
        }
        let target = target.clone();
        let cut = cut.clone();
        tokio::spawn(async move {
            let Ok(mut server) = tokio::net::TcpStream::connect(&target).await else { return };
            let copy = tokio::io::copy_bidirectional(&mut client, &mut server);
            let watch = async {
                while !cut.load(Ordering::SeqCst) {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            };
            tokio::select! {
                _ = copy => {}
                _ = watch => {}
            }
        });
    }
}

fn event(org_id: &str, i: usize) -> UsageEvent {
    // Requests of 1 to 4 events; the last of each is final. Audio 1 ms to 9.999 s, odd amounts.
    let request = i / 4;
    let seq = (i % 4) as u32;
    let millis = ((i * 7_919) % 9_999 + 1) as f64;
    UsageEvent {
        event_id: UsageEvent::event_id(&format!("req-{request}"), seq),
        request_id: format!("req-{request}"),
        seq,
        org_id: org_id.to_owned(),
        key_id: format!("key-{}", i % 3),
        kind: if request.is_multiple_of(2) { UsageKind::Rest } else { UsageKind::Stream },
        model: "tiny.en".to_owned(),
        audio_seconds: millis / 1000.0,
        started_at: 1_796_000_000_000 + i as i64 * 1_000,
        ended_at: 1_796_000_000_000 + i as i64 * 1_000 + 500,
        is_final: seq == 3 || i == EVENTS - 1,
        status: 200,
    }
}

#[test]
fn usage_is_recorded_exactly_once_through_a_killed_worker_and_a_database_outage() {
    let home = tempfile::tempdir().unwrap();
    let redis_dir = tempfile::tempdir().unwrap();
    let redis_port = free_port();
    let redis = start_redis(redis_dir.path(), redis_port);
    let redis_url = format!("redis://127.0.0.1:{redis_port}");
    let (schema, _) = Schema::new();
    let admin = std::env::var("ALDEA_TEST_POSTGRES_URL").unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();

    // The proxy in front of the database server.
    let cut = Arc::new(AtomicBool::new(false));
    let (proxied, direct) = runtime.block_on(async {
        let server =
            admin.split("://").nth(1).unwrap().split('@').next_back().unwrap().split('/').next().unwrap().to_owned();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy_addr = listener.local_addr().unwrap();
        tokio::spawn(proxy(listener, server.clone(), cut.clone()));
        let proxied = Schema::url_in(&admin.replacen(&server, &proxy_addr.to_string(), 1), schema.name());
        (proxied, Schema::url_in(&admin, schema.name()))
    });

    // The organization (metered), and the events on the queue, some twice.
    let store = runtime.block_on(aldea_store_sql::PgStore::connect(&direct, 2)).unwrap();
    let start_credit = 100_000_000;
    let org = runtime.block_on(store.create_org("exact", Credit::Millis(start_credit), 0)).unwrap();
    let events: Vec<UsageEvent> = (0..EVENTS).map(|i| event(org.id.as_str(), i)).collect();
    let expected_millis: i64 = events.iter().map(|e| aldea_store::audio_millis(e.audio_seconds)).sum();
    let expected_requests = events.iter().filter(|e| e.is_final).count() as u64;
    runtime.block_on(async {
        let target = aldea_store_redis::RedisTarget::parse(&redis_url).unwrap();
        let queue = aldea_store_redis::RedisStore::connect(target).await.unwrap();
        for (i, e) in events.iter().enumerate() {
            queue.publish(e).await.unwrap();
            if i.is_multiple_of(EVENTS / DUPLICATES) {
                queue.publish(e).await.unwrap();
            }
        }
    });

    let worker = |name: &str| {
        let args = [
            "usage-worker",
            "--listen",
            "127.0.0.1:0",
            "--database",
            &proxied,
            "--redis",
            &redis_url,
            "--consumer",
            name,
        ];
        spawn_logged(home.path(), &args, "health on", "warn")
    };
    let (first, _, first_log) = worker("first");
    let (second, second_addr, second_log) = worker("second");
    let mut processes = Processes(vec![redis, first, second]);
    let totals = || runtime.block_on(store.totals(&org.id)).unwrap();

    // The first worker dies mid-run, without acknowledging what it holds.
    poll_until("some usage recorded", || totals().events >= 1_500);
    let killed = &mut processes.0[1];
    killed.kill().unwrap();
    killed.wait().unwrap();
    let at_kill = totals().events;
    // Then the database goes away for 10 s.
    poll_until("more usage recorded", || totals().events >= at_kill + 1_000);
    cut.store(true, Ordering::SeqCst);
    let cut_at = Instant::now();
    while cut_at.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let (status, _) = http(&second_addr, "GET", "/ready", &[], b"");
    eprintln!("worker /ready during the outage: {status}");
    cut.store(false, Ordering::SeqCst);
    eprintln!("killed the first worker at {at_kill} events; cut the database for 10 s");

    // Everything arrives (the killed worker's entries after the 30-s reclaim), once.
    let done_by = Instant::now() + Duration::from_secs(120);
    let mut last = totals();
    while last.events < EVENTS as u64 && Instant::now() < done_by {
        std::thread::sleep(Duration::from_millis(250));
        last = totals();
    }
    // A moment more: nothing may be counted twice after the last one arrived.
    std::thread::sleep(Duration::from_secs(2));
    let totals = totals();
    eprintln!(
        "recorded {} events, {} requests, {} ms (expected {EVENTS}, {expected_requests}, {expected_millis})",
        totals.events, totals.requests, totals.audio_millis
    );
    assert_eq!(totals.events, EVENTS as u64);
    assert_eq!(totals.requests, expected_requests);
    assert_eq!(totals.audio_millis, expected_millis);
    assert_eq!(status, 503, "the worker said it was not ready while the database was away");
    for log in [&first_log, &second_log] {
        // Batches are never refused for lock cycles between the two workers (only the outage
        // makes them retry).
        let log = log.lock().unwrap();
        assert!(!log.contains("usage batch refused"), "{log}");
    }
    runtime.block_on(async {
        assert_eq!(
            store.credit(&org.id).await.unwrap(),
            Credit::Millis(start_credit - expected_millis),
            "charged once each"
        );
        let all_time = aldea_store::UsageQuery::new(0, 4_000_000_000, aldea_store::UsageGroup::Kind).unwrap();
        let rows = store.usage(&org.id, &all_time).await.unwrap();
        assert_eq!(rows.iter().map(|r| r.audio_millis).sum::<i64>(), expected_millis, "the roll-ups agree");
        assert_eq!(rows.iter().map(|r| r.requests).sum::<u64>(), expected_requests);
        let target = aldea_store_redis::RedisTarget::parse(&redis_url).unwrap();
        let queue = aldea_store_redis::RedisStore::connect(target).await.unwrap();
        assert_eq!(queue.dead_letter_count().await.unwrap(), 0, "nothing dead-lettered");
    });
    drop(processes);
}
