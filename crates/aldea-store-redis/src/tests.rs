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
    let dir = std::env::temp_dir().join(format!("aldea-redis-cluster-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut cluster = Cluster { children: Vec::new(), dir: dir.clone(), urls: Vec::new() };
    let mut addresses = Vec::new();
    for _ in 0..3 {
        let port = free_port();
        let child = std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--cluster-enabled", "yes"])
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
