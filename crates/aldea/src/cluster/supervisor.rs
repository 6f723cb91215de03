//! The cluster's supervisor: starts Redis, the migrations and every replica in dependency order,
//! keeps them running, serves the front door and the internal platform Service, rolls restarts
//! and stops everything in order. Its control API (loopback, port in `cluster.json`): `GET
//! /status`, `POST /rollout[?services=a,b]`, `POST /shutdown`.
//!
//! Invariant: one rolling restart at a time, and a replica is touched by one task at a time (its
//! process lock): the health loop skips a replica that a start, a restart or the shutdown holds.
//! Invariant: a replica gets new connections only after its `/ready` answered 200, and none once
//! it is being stopped.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::routing::{get, post};
use tokio::process::{Child, Command};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use super::front_door::{self, Pool, Routes};
use super::{StateFile, UpArgs, Urls, STATE_FILE};
use crate::{output, Settings};

/// How long a replica may take to answer `/ready` after it starts (a first model load included).
const READY_TIMEOUT: Duration = Duration::from_secs(300);
const PROBE_EVERY: Duration = Duration::from_millis(500);
/// Probes that must fail in a row before a running replica leaves its pools (a readiness probe's
/// `failureThreshold`): one slow answer does not take it out.
const FAILURE_THRESHOLD: u32 = 3;
/// Beyond its drain, how long a stopping process gets before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(15);
/// How long a restarted replica serves before the next one goes down (a Deployment's
/// `minReadySeconds`): the gateways read stt's capacity every 250 ms, and a client retrying a
/// refused connection lands on the replica that is back.
const MIN_READY: Duration = Duration::from_secs(1);
/// The rolling order (dependencies first, as the chart's readiness gates make it).
const ROLL_ORDER: [Service; 5] =
    [Service::Stt, Service::Platform, Service::UsageWorker, Service::Gateway, Service::Web];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Service {
    Redis,
    Stt,
    Platform,
    UsageWorker,
    Gateway,
    Web,
}

impl Service {
    fn name(self) -> &'static str {
        match self {
            Service::Redis => "redis",
            Service::Stt => "stt",
            Service::Platform => "platform",
            Service::UsageWorker => "usage-worker",
            Service::Gateway => "gateway",
            Service::Web => "web",
        }
    }

    fn parse(name: &str) -> Option<Service> {
        ROLL_ORDER.into_iter().find(|s| s.name() == name.trim())
    }

    /// The variable that sets where the service listens.
    fn listen_var(self) -> &'static str {
        match self {
            Service::Redis => "",
            Service::Stt => "ALDEA_STT_LISTEN",
            Service::Platform => "ALDEA_PLATFORM_LISTEN",
            Service::UsageWorker => "ALDEA_USAGE_WORKER_LISTEN",
            Service::Gateway => "ALDEA_GATEWAY_LISTEN",
            Service::Web => "ALDEA_WEB_LISTEN",
        }
    }
}

/// A running (or stopped) process of a replica; one task at a time holds it.
#[derive(Default)]
struct Proc {
    child: Option<Child>,
    started_at: Option<Instant>,
    /// Crashes in a row within 10 s of a start (the backoff's exponent).
    quick_crashes: u32,
    /// When the health loop may start it again after a crash (backoff).
    retry_at: Option<Instant>,
    /// Stopped by the shutdown: never started again.
    retired: bool,
    /// Probes failed in a row while the process runs.
    failed_probes: u32,
}

/// What `status` and `cluster.json` show of a replica, readable while a task holds its process.
#[derive(Debug, Clone, Copy, Default)]
struct Info {
    pid: Option<u32>,
    ready: bool,
    restarts: u32,
}

/// One replica: how to start it, and its process.
struct Replica {
    name: String,
    service: Service,
    port: u16,
    program: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    log: PathBuf,
    /// The pools that route to it (the front door's, an internal Service's).
    pools: Vec<Arc<Pool>>,
    proc: Mutex<Proc>,
    info: std::sync::Mutex<Info>,
}

impl Replica {
    fn info(&self) -> Info {
        *self.info.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn update(&self, change: impl FnOnce(&mut Info)) {
        change(&mut self.info.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
    }

    /// Its readiness, in its snapshot and in every pool that routes to it.
    fn set_ready(&self, ready: bool) {
        self.update(|info| info.ready = ready);
        for pool in &self.pools {
            pool.set_ready(&self.name, ready);
        }
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    fn spawn(&self) -> anyhow::Result<Child> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("opening {}", self.log.display()))?;
        let mut command = Command::new(&self.program);
        command
            .args(&self.args)
            // The database's URL (a password, perhaps) only where `env` gives it.
            .env_remove("ALDEA_DATABASE_URL")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            // Its own process group: a Ctrl-C at the supervisor's terminal reaches the supervisor
            // alone, which stops the replicas in order.
            .process_group(0);
        command.spawn().with_context(|| format!("starting {} ({})", self.name, self.program.display()))
    }

    /// Whether it answers: `/ready` 200 for the services, a TCP connection for Redis.
    async fn probe(&self) -> bool {
        let addr = self.addr();
        if self.service == Service::Redis {
            return tokio::net::TcpStream::connect(addr).await.is_ok();
        }
        let url = format!("http://{addr}/ready");
        tokio::task::spawn_blocking(move || crate::probe::status(&url).is_ok_and(|code| code == 200))
            .await
            .unwrap_or(false)
    }

    /// Starts the process (the caller holds `proc`), back in its pools' rotation: it gets
    /// connections once its probe answers.
    fn start(&self, proc: &mut Proc) -> anyhow::Result<()> {
        anyhow::ensure!(!proc.retired, "{} was stopped with the cluster", self.name);
        let child = self.spawn()?;
        let pid = child.id();
        proc.child = Some(child);
        proc.started_at = Some(Instant::now());
        proc.failed_probes = 0;
        self.set_ready(false);
        self.update(|info| info.pid = pid);
        for pool in &self.pools {
            pool.set_in_rotation(&self.name, true);
        }
        tracing::info!(replica = %self.name, port = self.port, "started");
        Ok(())
    }

    /// Waits until it answers its probe; fails when it exits or the timeout passes.
    async fn wait_ready(&self, proc: &mut Proc) -> anyhow::Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if self.probe().await {
                self.set_ready(true);
                return Ok(());
            }
            if let Some(child) = proc.child.as_mut() {
                if let Some(exit) = child.try_wait()? {
                    proc.child = None;
                    self.update(|info| info.pid = None);
                    anyhow::bail!("{} exited ({exit}) before it was ready; see {}", self.name, self.log.display());
                }
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "{} was not ready within {} s; see {}",
                self.name,
                READY_TIMEOUT.as_secs(),
                self.log.display()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Out of its pools' rotation, SIGTERM, then its exit within `drain` + grace (SIGKILL after
    /// that). The process stays in `proc` until it has exited.
    async fn stop(&self, proc: &mut Proc, drain: Duration) {
        for pool in &self.pools {
            pool.set_in_rotation(&self.name, false);
        }
        self.set_ready(false);
        let Some(child) = proc.child.as_mut() else { return };
        if let Some(pid) = child.id() {
            super::signal(pid, rustix::process::Signal::TERM);
        }
        match tokio::time::timeout(drain + STOP_GRACE, child.wait()).await {
            Ok(Ok(exit)) => tracing::info!(replica = %self.name, %exit, "stopped"),
            _ => {
                tracing::warn!(replica = %self.name, "did not stop in time: killed");
                let _ = child.kill().await;
            }
        }
        proc.child = None;
        self.update(|info| info.pid = None);
    }
}

/// The whole cluster, shared by the health loop, the control API and the shutdown.
struct Cluster {
    replicas: Vec<Arc<Replica>>,
    drain: Duration,
    dir: PathBuf,
    urls: Urls,
    control: SocketAddr,
    /// Held by the rolling restart that runs (one at a time).
    rollout: Arc<Mutex<()>>,
    /// Held while `cluster.json` is written.
    state_file: std::sync::Mutex<()>,
    shutdown: CancellationToken,
    /// Set once the shutdown begins: the health loop no longer restarts anything.
    stopping: CancellationToken,
}

impl Cluster {
    fn of(&self, service: Service) -> impl Iterator<Item = &Arc<Replica>> {
        self.replicas.iter().filter(move |r| r.service == service)
    }

    /// Writes `cluster.json`: every process running now.
    fn write_state(&self, ready: bool) -> anyhow::Result<()> {
        let _one = self.state_file.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let pids = self.replicas.iter().filter_map(|r| r.info().pid).collect();
        let state = StateFile {
            supervisor_pid: std::process::id(),
            control: self.control.to_string(),
            urls: self.urls.clone(),
            pids,
            drain_seconds: self.drain.as_secs(),
            ready,
        };
        // Whole or not at all: written aside, then renamed.
        let aside = self.dir.join(format!("{STATE_FILE}.tmp"));
        std::fs::write(&aside, serde_json::to_vec_pretty(&state)?)?;
        std::fs::rename(&aside, self.dir.join(STATE_FILE))?;
        Ok(())
    }

    /// Starts a service's replicas together and waits until each is ready.
    async fn start_service(&self, service: Service) -> anyhow::Result<()> {
        let starts = self.of(service).map(|replica| async move {
            let mut proc = replica.proc.lock().await;
            replica.start(&mut proc)?;
            replica.wait_ready(&mut proc).await
        });
        for result in futures_util::future::join_all(starts).await {
            result?;
        }
        output::info(&format!("{}: ready", service.name()));
        Ok(())
    }

    /// Restarts a replica that died, and keeps the pools' readiness up to date.
    async fn health_loop(self: Arc<Self>) {
        loop {
            tokio::select! {
                _ = self.stopping.cancelled() => return,
                _ = tokio::time::sleep(PROBE_EVERY) => {}
            }
            let mut changed = false;
            for replica in &self.replicas {
                let Ok(mut proc) = replica.proc.try_lock() else { continue };
                // The shutdown may have stopped this one since the loop woke.
                if proc.retired || self.stopping.is_cancelled() {
                    return;
                }
                let exited = match proc.child.as_mut() {
                    Some(child) => match child.try_wait() {
                        Ok(Some(exit)) => Some(exit.to_string()),
                        Ok(None) => None,
                        Err(e) => Some(e.to_string()),
                    },
                    None => Some("not running".to_owned()),
                };
                if let Some(exit) = exited {
                    if proc.child.take().is_some() {
                        tracing::warn!(replica = %replica.name, %exit, "exited: restarting");
                        // Quick crashes in a row back off: 2 s doubling to 30 s.
                        let quick = proc.started_at.is_some_and(|t| t.elapsed() < Duration::from_secs(10));
                        proc.quick_crashes = if quick { proc.quick_crashes + 1 } else { 0 };
                        let wait = if quick {
                            Duration::from_secs(1 << proc.quick_crashes.min(5)).min(Duration::from_secs(30))
                        } else {
                            Duration::ZERO
                        };
                        proc.retry_at = Some(Instant::now() + wait);
                        replica.set_ready(false);
                        replica.update(|info| info.pid = None);
                    }
                    if proc.retry_at.is_none_or(|t| Instant::now() >= t) {
                        replica.update(|info| info.restarts += 1);
                        proc.retry_at = None;
                        if let Err(e) = replica.start(&mut proc) {
                            tracing::error!(replica = %replica.name, error = %e, "cannot restart");
                            proc.retry_at = Some(Instant::now() + Duration::from_secs(5));
                        }
                        changed = true;
                    }
                    continue;
                }
                let answered = replica.probe().await;
                proc.failed_probes = if answered { 0 } else { proc.failed_probes + 1 };
                let was_ready = replica.info().ready;
                let ready = answered || (was_ready && proc.failed_probes < FAILURE_THRESHOLD);
                if ready != was_ready {
                    tracing::info!(replica = %replica.name, ready, "readiness changed");
                }
                replica.set_ready(ready);
            }
            if changed {
                let _ = self.write_state(true);
            }
        }
    }

    /// Restarts `services`' replicas one at a time; what each took.
    async fn rollout(&self, services: &[Service]) -> anyhow::Result<Vec<serde_json::Value>> {
        let mut steps = Vec::new();
        for &service in services {
            for replica in self.of(service) {
                let mut proc = replica.proc.lock().await;
                anyhow::ensure!(!proc.retired && !self.stopping.is_cancelled(), "the cluster is stopping");
                let began = Instant::now();
                replica.stop(&mut proc, self.drain).await;
                let stopped = began.elapsed();
                replica.start(&mut proc)?;
                replica.wait_ready(&mut proc).await?;
                let ready = began.elapsed();
                tracing::info!(replica = %replica.name, stopped_ms = stopped.as_millis() as u64, ready_ms = ready.as_millis() as u64, "rolled");
                steps.push(serde_json::json!({
                    "replica": replica.name,
                    "stopped_ms": stopped.as_millis() as u64,
                    "ready_ms": ready.as_millis() as u64,
                }));
                drop(proc);
                let _ = self.write_state(true);
                tokio::time::sleep(MIN_READY).await;
            }
        }
        Ok(steps)
    }

    /// Stops every replica, dependants first; each service's replicas together.
    async fn stop_all(&self) {
        self.stopping.cancel();
        let order = [
            vec![Service::Gateway, Service::Web],
            vec![Service::UsageWorker],
            vec![Service::Platform],
            vec![Service::Stt],
            vec![Service::Redis],
        ];
        for services in order {
            let stops = self.replicas.iter().filter(|r| services.contains(&r.service)).map(|replica| async move {
                let mut proc = replica.proc.lock().await;
                replica.stop(&mut proc, self.drain).await;
                proc.retired = true;
            });
            futures_util::future::join_all(stops).await;
        }
    }

    fn status_json(&self) -> serde_json::Value {
        let replicas: Vec<serde_json::Value> = self
            .replicas
            .iter()
            .map(|replica| {
                let Info { pid, ready, restarts } = replica.info();
                serde_json::json!({
                    "name": replica.name,
                    "service": replica.service.name(),
                    "port": replica.port,
                    "pid": pid,
                    "ready": ready,
                    "restarts": restarts,
                })
            })
            .collect();
        serde_json::json!({ "urls": self.urls, "replicas": replicas })
    }
}

fn json_answer(
    status: StatusCode,
    value: &serde_json::Value,
) -> (StatusCode, [(&'static str, &'static str); 1], String) {
    (status, [("content-type", "application/json")], value.to_string())
}

async fn status_handler(State(cluster): State<Arc<Cluster>>) -> impl axum::response::IntoResponse {
    json_answer(StatusCode::OK, &cluster.status_json())
}

async fn rollout_handler(State(cluster): State<Arc<Cluster>>, uri: Uri) -> impl axum::response::IntoResponse {
    let asked = uri.query().and_then(|q| q.split('&').find_map(|pair| pair.strip_prefix("services=")));
    let services: Result<Vec<Service>, String> = match asked {
        None | Some("") => Ok(ROLL_ORDER.to_vec()),
        Some(list) => list
            .split(',')
            .map(|name| {
                Service::parse(name).ok_or_else(|| {
                    format!("unknown service {name:?}; services: stt, platform, usage-worker, gateway, web")
                })
            })
            .collect(),
    };
    let services = match services {
        Ok(services) => services,
        Err(message) => return json_answer(StatusCode::BAD_REQUEST, &serde_json::json!({ "error": message })),
    };
    let Ok(one) = cluster.rollout.clone().try_lock_owned() else {
        return json_answer(
            StatusCode::CONFLICT,
            &serde_json::json!({ "error": "a rolling restart is already running" }),
        );
    };
    // Its own task: a client that goes away does not stop it half-way.
    let rolling = tokio::spawn(async move {
        let _one = one;
        cluster.rollout(&services).await
    });
    match rolling.await {
        Ok(Ok(steps)) => json_answer(StatusCode::OK, &serde_json::json!({ "steps": steps })),
        Ok(Err(e)) => json_answer(StatusCode::INTERNAL_SERVER_ERROR, &serde_json::json!({ "error": format!("{e:#}") })),
        Err(e) => json_answer(StatusCode::INTERNAL_SERVER_ERROR, &serde_json::json!({ "error": e.to_string() })),
    }
}

async fn shutdown_handler(State(cluster): State<Arc<Cluster>>) -> StatusCode {
    cluster.shutdown.cancel();
    StatusCode::ACCEPTED
}

/// A loopback port nothing listens on now.
fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A secret generated once into `<dir>/<name>` (owner-only), read back on later starts.
fn dir_secret(dir: &Path, name: &str) -> anyhow::Result<String> {
    use secrecy::ExposeSecret;
    let folder = dir.join("secrets").join(name);
    Ok(crate::settings::home_jwt_secret(&folder)?.expose_secret().to_owned())
}

/// The Redis nodes' ports, kept across starts in `<dir>/redis/ports` (each node's nodes.conf
/// names its peers by address).
fn redis_ports(dir: &Path) -> anyhow::Result<Vec<u16>> {
    let path = dir.join("redis/ports");
    if let Ok(text) = std::fs::read_to_string(&path) {
        let ports: Vec<u16> = text.split_whitespace().filter_map(|p| p.parse().ok()).collect();
        if ports.len() == 3 {
            for &port in &ports {
                anyhow::ensure!(
                    std::net::TcpListener::bind(("127.0.0.1", port)).is_ok(),
                    "Redis port {port} (from {}) is taken: is another cluster running there? `aldea cluster down` it, or remove {}",
                    path.display(),
                    dir.join("redis").display()
                );
            }
            return Ok(ports);
        }
    }
    let ports = vec![free_port()?, free_port()?, free_port()?];
    std::fs::create_dir_all(dir.join("redis"))?;
    std::fs::write(&path, ports.iter().map(u16::to_string).collect::<Vec<_>>().join(" "))?;
    Ok(ports)
}

/// `redis-cli` against one node; its output.
async fn redis_cli(port: u16, args: &[&str]) -> anyhow::Result<String> {
    let mut command = Command::new("redis-cli");
    command.args(["-h", "127.0.0.1", "-p", &port.to_string()]).args(args);
    run_to_end(&mut command, &format!("redis-cli {}", args.join(" "))).await
}

/// Runs a helper command to its end (stdin closed): its stdout, or an error with its stderr.
async fn run_to_end(command: &mut Command, what: &str) -> anyhow::Result<String> {
    let output = command.stdin(Stdio::null()).output().await.with_context(|| format!("running {what}"))?;
    anyhow::ensure!(output.status.success(), "{what} failed: {}", String::from_utf8_lossy(&output.stderr).trim());
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Forms the Redis Cluster on a first start (all 16384 slots over the three masters), then waits
/// until every node reports `cluster_state:ok`.
async fn form_redis_cluster(ports: &[u16]) -> anyhow::Result<()> {
    let info = redis_cli(ports[0], &["cluster", "info"]).await?;
    if info.contains("cluster_slots_assigned:0") {
        let nodes: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let mut args: Vec<&str> = vec!["--cluster", "create"];
        args.extend(nodes.iter().map(String::as_str));
        args.extend(["--cluster-replicas", "0", "--cluster-yes"]);
        redis_cli(ports[0], &args).await.context("forming the Redis Cluster")?;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    for &port in ports {
        loop {
            if redis_cli(port, &["cluster", "info"]).await.is_ok_and(|info| info.contains("cluster_state:ok")) {
                break;
            }
            anyhow::ensure!(Instant::now() < deadline, "the Redis Cluster did not reach cluster_state:ok in 60 s");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    Ok(())
}

/// Runs the supervisor until `aldea cluster down`, SIGTERM or Ctrl-C.
pub(crate) fn run(settings: &Settings, args: &UpArgs) -> anyhow::Result<ExitCode> {
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the async runtime")?;
    runtime.block_on(supervise(settings, args))
}

async fn supervise(settings: &Settings, args: &UpArgs) -> anyhow::Result<ExitCode> {
    let dir = args.dir.resolve(settings);
    let database = args
        .database
        .clone()
        .filter(|d| !d.is_empty())
        .context("the cluster needs PostgreSQL: --database postgres://USER@HOST/DB (or ALDEA_DATABASE_URL)")?;
    anyhow::ensure!(
        database.starts_with("postgres://") || database.starts_with("postgresql://"),
        "--database must be a postgres:// URL: the cluster runs the production topology"
    );
    for folder in ["logs", "redis", "home"] {
        std::fs::create_dir_all(dir.join(folder))
            .with_context(|| format!("creating {}", dir.join(folder).display()))?;
    }
    if let Some(state) = super::running(&dir).filter(|s| s.supervisor_pid != std::process::id()) {
        anyhow::bail!("a cluster already runs in {} (supervisor {})", dir.display(), state.supervisor_pid);
    }
    let program = std::env::current_exe().context("finding this program")?;

    // The front door first: its port is in the URLs every service is told.
    let front = tokio::net::TcpListener::bind(("127.0.0.1", args.port))
        .await
        .with_context(|| format!("binding the front door on 127.0.0.1:{}", args.port))?;
    let port = front.local_addr()?.port();
    let urls = Urls {
        dashboard: format!("http://platform.{}:{port}", args.domain),
        api: format!("http://api.{}:{port}", args.domain),
        backend: format!("http://backend.{}:{port}", args.domain),
    };
    let platform_service = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let platform_url = format!("http://{}", platform_service.local_addr()?);
    let control = tokio::net::TcpListener::bind("127.0.0.1:0").await?;

    // Model files before two stt replicas would fetch them at once.
    {
        let store = settings.model_store();
        let model = args.model.clone();
        tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
            let mut report = |line: &str| output::info(line);
            store.resolve(&model, &mut report).context("resolving the model")?;
            store.resolve("silero-vad", &mut report).context("resolving the VAD model")?;
            Ok(())
        })
        .await??;
    }

    let service_token = dir_secret(&dir, "service-token")?;
    let jwt_secret = dir_secret(&dir, "jwt-secret")?;
    let redis_ports = redis_ports(&dir)?;
    let redis_url = redis_ports.iter().map(|p| format!("redis://127.0.0.1:{p}")).collect::<Vec<_>>().join(",");
    let stt_ports = [free_port()?, free_port()?];
    let stt_urls = stt_ports.iter().map(|p| format!("http://127.0.0.1:{p}")).collect::<Vec<_>>().join(",");
    let threads =
        args.stt_threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1)));
    let drain = args.drain_seconds.to_string();
    let log_filter = std::env::var("ALDEA_LOG").unwrap_or_else(|_| "info".to_owned());

    // The ConfigMap's settings, the same for every replica.
    let models = settings.models.display().to_string();
    let threads = threads.to_string();
    let configmap: &[(&str, &str)] = &[
        ("ALDEA_MODEL", &args.model),
        ("ALDEA_MODELS", &models),
        ("ALDEA_LOG", &log_filter),
        ("ALDEA_REDIS_URL", &redis_url),
        ("ALDEA_PLATFORM_URL", &platform_url),
        ("ALDEA_STT_URLS", &stt_urls),
        ("ALDEA_API_URL", &urls.api),
        ("ALDEA_CORS_ORIGINS", &urls.dashboard),
        ("ALDEA_GATEWAY_DRAIN_SECONDS", &drain),
        ("ALDEA_STT_DRAIN_SECONDS", &drain),
        ("ALDEA_THREADS", &threads),
        // Plain http on loopback: cookies without the Secure flag.
        ("ALDEA_INSECURE_COOKIES", "true"),
        ("ALDEA_SERVICE_TOKEN", &service_token),
        ("ALDEA_JWT_SECRET", &jwt_secret),
    ];
    let common: Vec<(String, String)> = configmap.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();

    let front_pools =
        [("api", Pool::new("gateway")), ("backend", Pool::new("platform")), ("platform", Pool::new("web"))];
    let platform_pool = Pool::new("platform");
    let mut replicas = Vec::new();
    for (index, &port) in redis_ports.iter().enumerate() {
        let data = dir.join(format!("redis/{index}"));
        std::fs::create_dir_all(&data)?;
        let (port_arg, data_arg) = (port.to_string(), data.display().to_string());
        let args: &[&str] = &[
            "--port",
            &port_arg,
            "--bind",
            "127.0.0.1",
            "--dir",
            &data_arg,
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-node-timeout",
            "5000",
            "--cluster-require-full-coverage",
            "no",
            // The usage queue is billing data: every write in the append-only file.
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
            "--save",
            "",
        ];
        let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        replicas.push(Replica {
            name: format!("redis-{}", index + 1),
            service: Service::Redis,
            port,
            program: PathBuf::from("redis-server"),
            args,
            env: Vec::new(),
            log: dir.join(format!("logs/redis-{}.log", index + 1)),
            pools: Vec::new(),
            proc: Mutex::default(),
            info: std::sync::Mutex::default(),
        });
    }
    let mut stt_ports = stt_ports.into_iter();
    for (service, count) in
        [(Service::Stt, 2), (Service::Platform, 2), (Service::UsageWorker, 1), (Service::Gateway, 2), (Service::Web, 1)]
    {
        for index in 1..=count {
            let name = if count == 1 { service.name().to_owned() } else { format!("{}-{index}", service.name()) };
            let port = if service == Service::Stt { stt_ports.next().unwrap_or_default() } else { free_port()? };
            let home = dir.join("home").join(&name);
            std::fs::create_dir_all(&home)?;
            let mut env = common.clone();
            env.push((service.listen_var().to_owned(), format!("127.0.0.1:{port}")));
            env.push(("ALDEA_HOME".to_owned(), home.display().to_string()));
            if matches!(service, Service::Platform | Service::UsageWorker) {
                // Only these reach the database, as the chart's NetworkPolicy allows.
                env.push(("ALDEA_DATABASE_URL".to_owned(), database.clone()));
            }
            // The platform has two doors: the backend host, and its internal Service.
            let pools = match service {
                Service::Gateway => vec![front_pools[0].1.clone()],
                Service::Platform => vec![front_pools[1].1.clone(), platform_pool.clone()],
                Service::Web => vec![front_pools[2].1.clone()],
                _ => Vec::new(),
            };
            for pool in &pools {
                pool.add(&name, SocketAddr::from(([127, 0, 0, 1], port)));
            }
            replicas.push(Replica {
                name: name.clone(),
                service,
                port,
                program: program.clone(),
                args: vec![service.name().to_owned()],
                env,
                log: dir.join(format!("logs/{name}.log")),
                pools,
                proc: Mutex::default(),
                info: std::sync::Mutex::default(),
            });
        }
    }
    let cluster = Arc::new(Cluster {
        replicas: replicas.into_iter().map(Arc::new).collect(),
        drain: Duration::from_secs(args.drain_seconds),
        dir: dir.clone(),
        urls: urls.clone(),
        control: control.local_addr()?,
        rollout: Arc::new(Mutex::new(())),
        state_file: std::sync::Mutex::new(()),
        shutdown: CancellationToken::new(),
        stopping: CancellationToken::new(),
    });
    tokio::spawn(crate::stt::stop_on_signal(cluster.shutdown.clone()));
    cluster.write_state(false)?;

    // The platform is also reached from inside (gateways and the dashboard): its Service, open
    // from the start (a gateway is ready only once it reaches the platform) until the supervisor
    // exits. The front door answers 503 until a replica behind a host is ready.
    let door = CancellationToken::new();
    tokio::spawn(front_door::serve_service(platform_service, platform_pool, CancellationToken::new()));
    tokio::spawn(front_door::serve_front_door(front, Routes(front_pools.to_vec()), door.clone()));
    let started = tokio::select! {
        started = start_everything(&cluster, &redis_ports, &program, &database) => started,
        _ = cluster.shutdown.cancelled() => Err(anyhow::anyhow!("stopped while starting")),
    };
    if let Err(e) = started {
        output::error(&format!("error: {e:#}"));
        door.cancel();
        cluster.stop_all().await;
        let _ = std::fs::remove_file(dir.join(STATE_FILE));
        return Ok(ExitCode::FAILURE);
    }

    tokio::spawn(cluster.clone().health_loop());
    let app = axum::Router::new()
        .route("/status", get(status_handler))
        .route("/rollout", post(rollout_handler))
        .route("/shutdown", post(shutdown_handler))
        .with_state(cluster.clone());
    let control_stop = cluster.stopping.clone();
    let control_server = tokio::spawn(async move {
        let _ = axum::serve(control, app).with_graceful_shutdown(control_stop.cancelled_owned()).await;
    });
    cluster.write_state(true)?;
    output::info("the cluster is ready");
    super::print_urls(&urls, &dir);

    cluster.shutdown.cancelled().await;
    output::info("stopping the cluster…");
    // No new connections; those open go on while their replicas drain.
    door.cancel();
    cluster.stop_all().await;
    let _ = control_server.await;
    let _ = std::fs::remove_file(dir.join(STATE_FILE));
    output::info("the cluster stopped");
    Ok(ExitCode::SUCCESS)
}

async fn start_everything(
    cluster: &Cluster,
    redis_ports: &[u16],
    program: &Path,
    database: &str,
) -> anyhow::Result<()> {
    cluster.start_service(Service::Redis).await?;
    form_redis_cluster(redis_ports).await?;
    output::info("redis: a 3-node cluster");
    run_to_end(Command::new(program).arg("migrate").env("ALDEA_DATABASE_URL", database), "migrating the database")
        .await?;
    for service in ROLL_ORDER {
        cluster.start_service(service).await?;
        cluster.write_state(false)?;
    }
    Ok(())
}
