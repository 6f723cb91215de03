//! `aldea cluster up|down|status|restart`: the Helm chart's topology as processes on this machine,
//! for laptops and tests — 2 gateways, 2 stt, 2 platforms, the dashboard, the usage worker, a
//! 3-node Redis Cluster and PostgreSQL (the server `--database` names), behind a front door on one
//! port that routes `api.`, `backend.` and `platform.` host names as the Ingress does. Every
//! process is this binary (or `redis-server`) with the chart ConfigMap's settings names in its
//! environment; logs under `<dir>/logs`.
//!
//! `up` starts a supervisor in the background (`--foreground` keeps it in the terminal) and returns
//! once every replica answers `/ready`. The supervisor restarts a replica that dies, and `restart`
//! rolls the services one replica at a time as a Deployment's rolling update does: out of the
//! front door's rotation, SIGTERM, wait for its exit (its drain), start, wait ready, back in.

mod front_door;
mod supervisor;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, Subcommand};
use serde::{Deserialize, Serialize};

use crate::{output, Settings};

#[derive(Debug, Subcommand)]
pub(crate) enum ClusterCommand {
    /// Start the cluster in the background and print its URLs once every replica is ready.
    Up(UpArgs),
    /// Stop the cluster: the front door first, then each service with its drain.
    Down(DirArgs),
    /// Every replica: its port, process, readiness and restarts.
    Status(DirArgs),
    /// Rolling restart, one replica at a time (default: every service but Redis).
    Restart(RestartArgs),
    /// The supervisor itself, in the foreground (what `up` starts).
    #[command(hide = true)]
    Supervise(UpArgs),
}

#[derive(Debug, Clone, Args)]
pub(crate) struct DirArgs {
    /// The cluster's folder: Redis data, logs, secrets, state (default: $ALDEA_HOME/cluster).
    #[arg(long)]
    dir: Option<PathBuf>,
}

impl DirArgs {
    fn resolve(&self, settings: &Settings) -> PathBuf {
        self.dir.clone().unwrap_or_else(|| settings.home.join("cluster"))
    }
}

#[derive(Debug, Clone, Args)]
pub(crate) struct UpArgs {
    #[command(flatten)]
    dir: DirArgs,
    /// The front door's port (0: any free port; the URLs printed say which).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// The domain of the three host names: api.DOMAIN, backend.DOMAIN, platform.DOMAIN (browsers
    /// and curl send `*.localhost` to this machine by themselves).
    #[arg(long, default_value = "localhost")]
    domain: String,
    /// PostgreSQL for the platforms and the usage worker: `postgres://USER@HOST/DB` (e.g. the
    /// local server's). PostgreSQL refuses to run as root, so the cluster does not start its own.
    #[arg(long, env = "ALDEA_DATABASE_URL", hide_env_values = true)]
    database: Option<String>,
    /// The model every stt replica serves (pulled first when missing).
    #[arg(long, default_value = "tiny.en", env = "ALDEA_MODEL")]
    model: String,
    /// Inference threads per stt replica (default: half the cores, at least 1).
    #[arg(long)]
    stt_threads: Option<usize>,
    /// Seconds streams may go on after a gateway or stt replica is told to stop
    /// (ALDEA_GATEWAY_DRAIN_SECONDS and ALDEA_STT_DRAIN_SECONDS).
    #[arg(long, default_value_t = 30)]
    drain_seconds: u64,
    /// Stay in the terminal (Ctrl-C stops the cluster) instead of starting in the background.
    #[arg(long)]
    foreground: bool,
}

#[derive(Debug, Args)]
pub(crate) struct RestartArgs {
    #[command(flatten)]
    dir: DirArgs,
    /// Services to roll, in this order (default: stt, platform, usage-worker, gateway, web).
    #[arg(long = "service", value_delimiter = ',')]
    services: Vec<String>,
}

/// What the supervisor writes to `<dir>/cluster.json` for the other subcommands.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct StateFile {
    pub(crate) supervisor_pid: u32,
    /// The supervisor's control API (loopback).
    pub(crate) control: String,
    pub(crate) urls: Urls,
    /// Every process it started, for `down` when the supervisor itself is gone.
    pub(crate) pids: Vec<u32>,
    /// The replicas' drain, which bounds how long stopping takes.
    #[serde(default)]
    pub(crate) drain_seconds: u64,
    pub(crate) ready: bool,
}

/// The three hosts as a browser reaches them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Urls {
    pub(crate) dashboard: String,
    pub(crate) api: String,
    pub(crate) backend: String,
}

const STATE_FILE: &str = "cluster.json";

pub(crate) fn run(settings: &Settings, command: ClusterCommand) -> anyhow::Result<ExitCode> {
    match command {
        ClusterCommand::Up(args) if args.foreground => supervisor::run(settings, &args),
        ClusterCommand::Up(args) => up(settings, &args),
        ClusterCommand::Supervise(args) => supervisor::run(settings, &args),
        ClusterCommand::Down(args) => down(&args.resolve(settings)),
        ClusterCommand::Status(args) => status(&args.resolve(settings)),
        ClusterCommand::Restart(args) => restart(&args.dir.resolve(settings), &args.services),
    }
}

fn read_state(dir: &Path) -> Option<StateFile> {
    serde_json::from_slice(&std::fs::read(dir.join(STATE_FILE)).ok()?).ok()
}

/// Whether a process with this id is alive (signal 0); one that has exited but was not reaped yet
/// (a zombie, its parent gone or busy) is not.
pub(crate) fn alive(pid: u32) -> bool {
    let exists =
        rustix::process::Pid::from_raw(pid as i32).is_some_and(|pid| rustix::process::test_kill_process(pid).is_ok());
    // `/proc/PID/stat`: "PID (COMMAND) STATE …"; the command may hold spaces and parentheses.
    let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| stat.rsplit_once(')').map(|(_, rest)| rest.trim_start().starts_with('Z')))
        .unwrap_or(false);
    exists && !zombie
}

/// Sends a signal to a process (gone already is not an error).
pub(crate) fn signal(pid: u32, signal: rustix::process::Signal) {
    if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
        let _ = rustix::process::kill_process(pid, signal);
    }
}

/// The supervisor of `dir` when one is running.
fn running(dir: &Path) -> Option<StateFile> {
    read_state(dir).filter(|state| alive(state.supervisor_pid))
}

fn print_urls(urls: &Urls, dir: &Path) {
    output::result_line(&format!("dashboard:    {}", urls.dashboard));
    output::result_line(&format!("Speech API:   {}", urls.api));
    output::result_line(&format!("platform API: {}", urls.backend));
    output::info(&format!(
        "logs in {}; `aldea cluster status|restart|down --dir {}`",
        dir.join("logs").display(),
        dir.display()
    ));
}

fn up(settings: &Settings, args: &UpArgs) -> anyhow::Result<ExitCode> {
    let dir = args.dir.resolve(settings);
    if let Some(state) = running(&dir) {
        output::info(&format!(
            "the cluster in {} is already running (supervisor {})",
            dir.display(),
            state.supervisor_pid
        ));
        print_urls(&state.urls, &dir);
        return Ok(ExitCode::SUCCESS);
    }
    anyhow::ensure!(
        args.database.as_deref().is_some_and(|d| !d.is_empty()),
        "aldea cluster up needs PostgreSQL: --database postgres://USER@HOST/DB (or ALDEA_DATABASE_URL)"
    );
    std::fs::create_dir_all(dir.join("logs")).with_context(|| format!("creating {}", dir.display()))?;
    let _ = std::fs::remove_file(dir.join(STATE_FILE));
    let log_path = dir.join("logs/supervisor.log");
    let log = std::fs::OpenOptions::new().create(true).append(true).open(&log_path)?;
    let mut command = std::process::Command::new(std::env::current_exe().context("finding this program")?);
    command
        .args(["cluster", "supervise", "--dir"])
        .arg(&dir)
        .args(["--port", &args.port.to_string(), "--domain", &args.domain, "--model", &args.model])
        .args(["--drain-seconds", &args.drain_seconds.to_string()])
        .args(args.stt_threads.map(|t| format!("--stt-threads={t}")))
        // The URL may hold a password: the environment, not the command line `ps` shows.
        .env("ALDEA_DATABASE_URL", args.database.as_deref().unwrap_or_default())
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // Its own process group: Ctrl-C in this terminal later does not reach it.
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    let mut supervisor = command.spawn().context("starting the supervisor")?;
    output::info(&format!("starting the cluster in {} (log: {})", dir.display(), log_path.display()));
    let deadline = Instant::now() + Duration::from_secs(900);
    loop {
        if let Some(state) = read_state(&dir).filter(|s| s.ready) {
            print_urls(&state.urls, &dir);
            return Ok(ExitCode::SUCCESS);
        }
        if let Some(exit) = supervisor.try_wait()? {
            let text = std::fs::read_to_string(&log_path).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(20).collect();
            for line in tail.into_iter().rev() {
                output::error(line);
            }
            anyhow::bail!("the cluster did not start ({exit}); the supervisor's log is {}", log_path.display());
        }
        if Instant::now() >= deadline {
            signal(supervisor.id(), rustix::process::Signal::TERM);
            anyhow::bail!(
                "the cluster was not ready within 15 minutes; it is being stopped (see {}; `aldea cluster down --dir {}` waits for it)",
                log_path.display(),
                dir.display()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// One request to the supervisor's control API: the status and the body.
fn control(state: &StateFile, method: &str, path: &str, timeout: Duration) -> anyhow::Result<(u16, String)> {
    let mut stream = std::net::TcpStream::connect(&state.control)
        .with_context(|| format!("reaching the supervisor at {}", state.control))?;
    stream.set_read_timeout(Some(timeout))?;
    let request = format!(
        "{method} {path} HTTP/1.1\r\nhost: {}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
        state.control
    );
    stream.write_all(request.as_bytes())?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).context("reading the supervisor's answer")?;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text.split_once("\r\n\r\n").context("a malformed answer from the supervisor")?;
    let code = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).context("no status from the supervisor")?;
    Ok((code, body.to_owned()))
}

fn down(dir: &Path) -> anyhow::Result<ExitCode> {
    let Some(state) = read_state(dir) else {
        output::info(&format!("no cluster in {}", dir.display()));
        return Ok(ExitCode::SUCCESS);
    };
    // Each of the five tiers (dashboard and gateways, usage worker, platforms, stt, Redis) drains
    // and may take its grace before a kill.
    let per_tier = Duration::from_secs(state.drain_seconds.max(30) + 15);
    if alive(state.supervisor_pid) {
        output::info("stopping the cluster (each service drains first)…");
        if control(&state, "POST", "/shutdown", Duration::from_secs(5)).is_err() {
            signal(state.supervisor_pid, rustix::process::Signal::TERM);
        }
        let deadline = Instant::now() + per_tier * 5 + Duration::from_secs(30);
        while alive(state.supervisor_pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        anyhow::ensure!(
            !alive(state.supervisor_pid),
            "the supervisor ({}) is still stopping the cluster; see {}",
            state.supervisor_pid,
            dir.join("logs/supervisor.log").display()
        );
    }
    // A supervisor that was killed leaves its children: they go too, SIGTERM then SIGKILL.
    let left: Vec<u32> = state.pids.iter().copied().filter(|&pid| alive(pid)).collect();
    for &pid in &left {
        signal(pid, rustix::process::Signal::TERM);
    }
    let deadline = Instant::now() + per_tier;
    while left.iter().any(|&pid| alive(pid)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    for &pid in left.iter().filter(|&&pid| alive(pid)) {
        signal(pid, rustix::process::Signal::KILL);
    }
    if !left.is_empty() {
        output::info(&format!("stopped {} processes the supervisor left", left.len()));
    }
    let _ = std::fs::remove_file(dir.join(STATE_FILE));
    output::info("the cluster is down");
    Ok(ExitCode::SUCCESS)
}

fn status(dir: &Path) -> anyhow::Result<ExitCode> {
    let state = running(dir).with_context(|| format!("no cluster is running in {}", dir.display()))?;
    let (code, body) = control(&state, "GET", "/status", Duration::from_secs(10))?;
    anyhow::ensure!(code == 200, "the supervisor answered {code}: {body}");
    let status: serde_json::Value = serde_json::from_str(&body)?;
    print_urls(&state.urls, dir);
    output::result_line(&format!("{:<16} {:>6} {:>8} {:<6} {:>8}", "REPLICA", "PORT", "PID", "READY", "RESTARTS"));
    for replica in status["replicas"].as_array().into_iter().flatten() {
        output::result_line(&format!(
            "{:<16} {:>6} {:>8} {:<6} {:>8}",
            replica["name"].as_str().unwrap_or_default(),
            replica["port"].as_u64().unwrap_or_default(),
            replica["pid"].as_u64().map_or_else(|| "-".to_owned(), |p| p.to_string()),
            if replica["ready"] == true { "yes" } else { "no" },
            replica["restarts"].as_u64().unwrap_or_default(),
        ));
    }
    Ok(ExitCode::SUCCESS)
}

fn restart(dir: &Path, services: &[String]) -> anyhow::Result<ExitCode> {
    let state = running(dir).with_context(|| format!("no cluster is running in {}", dir.display()))?;
    let query = if services.is_empty() { String::new() } else { format!("?services={}", services.join(",")) };
    output::info("rolling restart, one replica at a time…");
    let (code, body) = control(&state, "POST", &format!("/rollout{query}"), Duration::from_secs(3600))?;
    anyhow::ensure!(code == 200, "the rolling restart failed ({code}): {}", body.trim());
    let steps: serde_json::Value = serde_json::from_str(&body)?;
    for step in steps["steps"].as_array().into_iter().flatten() {
        output::result_line(&format!(
            "{:<16} stopped in {:>6} ms, ready again in {:>6} ms",
            step["replica"].as_str().unwrap_or_default(),
            step["stopped_ms"].as_u64().unwrap_or_default(),
            step["ready_ms"].as_u64().unwrap_or_default(),
        ));
    }
    Ok(ExitCode::SUCCESS)
}
