//! The conformance suite on the Redis of this machine (`ALDEA_TEST_REDIS_URL`) and on a 3-node
//! Redis Cluster started here from `redis-server`.

use super::*;

fn redis_url() -> String {
    std::env::var("ALDEA_TEST_REDIS_URL")
        .expect("ALDEA_TEST_REDIS_URL must name a Redis server (scripts/test.sh sets it and starts one)")
}

async fn single() -> RedisStore {
    RedisStore::connect(RedisTarget::parse(&redis_url()).unwrap()).await.unwrap()
}

/// Three cluster-enabled `redis-server` processes joined by `redis-cli --cluster create`; they are
/// killed when this is dropped.
struct Cluster {
    children: Vec<std::process::Child>,
    dir: std::path::PathBuf,
    urls: Vec<String>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A port whose cluster-bus port (+10000) is free too.
fn free_port() -> u16 {
    loop {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        if port < 55_000 && std::net::TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
}

async fn start_cluster() -> Cluster {
    let (cluster, addresses) = start_servers(3, true).await;
    let created = std::process::Command::new("redis-cli")
        .arg("--cluster")
        .arg("create")
        .args(&addresses)
        .args(["--cluster-replicas", "0", "--cluster-yes"])
        .output()
        .unwrap();
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stdout));
    let port = addresses[0].rsplit(':').next().unwrap().to_owned();
    aldea_store::conformance::eventually(Duration::from_secs(20), || {
        let port = port.clone();
        async move {
            std::process::Command::new("redis-cli")
                .args(["-p", &port, "cluster", "info"])
                .output()
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("cluster_state:ok"))
        }
    })
    .await
    .then_some(())
    .expect("the cluster forms");
    cluster
}

/// `n` `redis-server` processes of this test alone (cluster-enabled or not), answering pings.
async fn start_servers(n: usize, cluster_enabled: bool) -> (Cluster, Vec<String>) {
    let dir = std::env::temp_dir().join(format!("aldea-redis-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut cluster = Cluster { children: Vec::new(), dir: dir.clone(), urls: Vec::new() };
    let mut addresses = Vec::new();
    for _ in 0..n {
        let port = free_port();
        let enabled = if cluster_enabled { "yes" } else { "no" };
        let child = std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--cluster-enabled", enabled])
            .args(["--cluster-config-file", &format!("nodes-{port}.conf"), "--save", "", "--appendonly", "no"])
            .current_dir(&dir)
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server runs (apt-get install redis-server)");
        cluster.children.push(child);
        addresses.push(format!("127.0.0.1:{port}"));
        cluster.urls.push(format!("redis://127.0.0.1:{port}"));
    }
    for address in &addresses {
        let port = address.rsplit(':').next().unwrap().to_owned();
        aldea_store::conformance::eventually(Duration::from_secs(10), || {
            let port = port.clone();
            async move {
                std::process::Command::new("redis-cli")
                    .args(["-p", &port, "ping"])
                    .output()
                    .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("PONG"))
            }
        })
        .await
        .then_some(())
        .expect("the node answers");
    }
    (cluster, addresses)
}

#[test]
fn targets_parse() {
    assert_eq!(
        RedisTarget::parse("redis://a:1").unwrap(),
        RedisTarget { urls: vec!["redis://a:1".to_owned()], cluster: false }
    );
    assert!(RedisTarget::parse("redis://a:1?cluster=true").unwrap().cluster);
    let seeds = RedisTarget::parse("redis://a:1, redis://b:2").unwrap();
    assert_eq!((seeds.urls.len(), seeds.cluster), (2, true));
    assert!(RedisTarget::parse(" , ").is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_on_a_single_node() {
    let store = single().await;
    store.ping().await.unwrap();
    aldea_store::conformance::key_cache(&store).await;
    aldea_store::conformance::limits(&store).await;
    aldea_store::conformance::usage_queue(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_on_a_three_node_cluster() {
    let cluster = start_cluster().await;
    let store = RedisStore::connect(RedisTarget::parse(&cluster.urls.join(",")).unwrap()).await.unwrap();
    store.ping().await.unwrap();
    aldea_store::conformance::key_cache(&store).await;
    aldea_store::conformance::limits(&store).await;
    aldea_store::conformance::usage_queue(&store).await;
    drop(cluster);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_server_is_unavailable_not_a_panic() {
    let port = free_port();
    let target = RedisTarget::parse(&format!("redis://127.0.0.1:{port}")).unwrap();
    match RedisStore::connect(target).await {
        Err(StoreError::Unavailable(_)) => {}
        Err(other) => panic!("expected Unavailable, got {other}"),
        Ok(_) => panic!("nothing listens on {port}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reclaimed_entries_carry_their_exact_delivery_counts() {
    // A server of this test alone: the usage stream's name is fixed.
    let (server, _) = start_servers(1, false).await;
    let store = RedisStore::connect(RedisTarget::parse(&server.urls[0]).unwrap()).await.unwrap();
    let event = |seq: u32| UsageEvent {
        event_id: UsageEvent::event_id("req", seq),
        request_id: "req".to_owned(),
        seq,
        org_id: "org".to_owned(),
        key_id: "key".to_owned(),
        kind: aldea_store::UsageKind::Stream,
        model: "tiny.en".to_owned(),
        audio_seconds: 1.0,
        started_at: 1,
        ended_at: 2,
        is_final: false,
        status: 1000,
    };
    for seq in 0..22 {
        store.publish(&event(seq)).await.unwrap();
    }
    let hour = Duration::from_secs(3600);
    // A consumer that dies holds the first and the last entry, delivered 4 times already; the
    // live consumer holds the 20 between (recent, not reclaimable).
    let first = store.take("dead", 1, Duration::ZERO, hour).await.unwrap();
    let between = store.take("live", 20, Duration::ZERO, hour).await.unwrap();
    let last = store.take("dead", 1, Duration::ZERO, hour).await.unwrap();
    assert_eq!((first.len(), between.len(), last.len()), (1, 20, 1));
    let mut age = redis::cmd("XCLAIM");
    age.arg(USAGE_STREAM).arg(USAGE_GROUP).arg("dead").arg(0).arg(&first[0].id).arg(&last[0].id);
    age.arg("IDLE").arg(7_200_000).arg("RETRYCOUNT").arg(4).arg("JUSTID");
    age.query_async::<Value>(&mut store.queue_conn.clone()).await.unwrap();

    let reclaimed = store.take("live", 10, Duration::ZERO, hour).await.unwrap();
    let got: Vec<(&str, u32)> = reclaimed.iter().map(|d| (d.id.as_str(), d.deliveries)).collect();
    assert_eq!(
        got,
        vec![(first[0].id.as_str(), 5), (last[0].id.as_str(), 5)],
        "each reclaimed entry counts every delivery, however many entries lie between them"
    );
    drop(server);
}
