//! The idle-connection load client (a separate process, run with a raised open-file limit):
//! `idle_clients N GATEWAY_ADDR KEY HOLD_SECONDS` opens N WebSocket streams to the gateway, keeps
//! each alive with a KeepAlive every 5 s, prints when all are open, holds them, then closes them.
//! Used by `scripts/bench-idle.sh`.
#![allow(clippy::print_stdout)] // A benchmark tool reports on stdout.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args.get(1).and_then(|v| v.parse().ok()).expect("N");
    let addr = args.get(2).expect("GATEWAY_ADDR").clone();
    let key = args.get(3).expect("KEY").clone();
    let hold = Duration::from_secs(args.get(4).and_then(|v| v.parse().ok()).unwrap_or(20));
    let started = Instant::now();
    let (opened_tx, mut opened_rx) = tokio::sync::mpsc::channel::<bool>(1024);
    let stop = tokio_util::sync::CancellationToken::new();
    // Opened a few hundred at a time so the listen backlog keeps up.
    let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(256));
    for _ in 0..n {
        let (addr, key, opened_tx, stop, gate) =
            (addr.clone(), key.clone(), opened_tx.clone(), stop.clone(), gate.clone());
        tokio::spawn(async move {
            let permit = gate.acquire_owned().await.expect("the gate stays open");
            let mut request = format!("ws://{addr}/v1/listen?encoding=linear16").into_client_request().expect("a URL");
            request.headers_mut().insert("authorization", format!("Token {key}").parse().expect("a header"));
            let Ok((ws, _)) = tokio_tungstenite::connect_async(request).await else {
                let _ = opened_tx.send(false).await;
                return;
            };
            drop(permit);
            let _ = opened_tx.send(true).await;
            let (mut tx, mut rx) = ws.split();
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tick.tick() => {
                        if tx.send(Message::Text(r#"{"type":"KeepAlive"}"#.into())).await.is_err() { return; }
                    }
                    message = rx.next() => if !matches!(message, Some(Ok(_))) { return; },
                }
            }
            let _ = tx.send(Message::Text(r#"{"type":"CloseStream"}"#.into())).await;
            let _ = tx.close().await;
        });
    }
    drop(opened_tx);
    let (mut ok, mut failed) = (0usize, 0usize);
    while ok + failed < n {
        match opened_rx.recv().await {
            Some(true) => ok += 1,
            Some(false) => failed += 1,
            None => break,
        }
    }
    println!("open: {ok} streams ({failed} failed) in {:.1} s", started.elapsed().as_secs_f64());
    tokio::time::sleep(hold).await;
    println!("held for {} s", hold.as_secs());
    stop.cancel();
    tokio::time::sleep(Duration::from_secs(1)).await;
}
