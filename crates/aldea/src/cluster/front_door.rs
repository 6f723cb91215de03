//! The cluster's networking as a laptop can have it: a front door on one port that routes each
//! connection by its `Host` header's first label (`api.` → the gateways, `backend.` → the
//! platforms, `platform.` → the dashboard), as the chart's Ingress routes its three hosts, and
//! loopback listeners that stand for the internal Services (the gateways and the dashboard reach
//! "the platform" through one, which spreads connections over its replicas).
//!
//! Invariant: a connection goes to one replica for its whole life (WebSocket upgrades and
//! keep-alive included) and bytes pass through unchanged, the request head too.
//! Invariant: a replica out of rotation (being restarted) or not ready gets no new connection;
//! the connections it already has go on until it closes them (its own drain).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// The largest request head the front door reads to find the host.
const MAX_HEAD: usize = 16 * 1024;
/// How long a client may take to send its request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// One replica behind a pool.
#[derive(Debug, Clone)]
struct Member {
    replica: String,
    addr: SocketAddr,
    /// Answering `/ready` (the supervisor's probe).
    ready: bool,
    /// Not being restarted (the supervisor takes it out before SIGTERM).
    in_rotation: bool,
}

/// The replicas of one service, chosen round-robin among those ready and in rotation: what a
/// Kubernetes Service's endpoints are.
#[derive(Debug)]
pub(crate) struct Pool {
    name: &'static str,
    members: Mutex<Vec<Member>>,
    next: AtomicUsize,
}

impl Pool {
    pub(crate) fn new(name: &'static str) -> Arc<Pool> {
        Arc::new(Pool { name, members: Mutex::new(Vec::new()), next: AtomicUsize::new(0) })
    }

    pub(crate) fn name(&self) -> &'static str {
        self.name
    }

    fn members(&self) -> std::sync::MutexGuard<'_, Vec<Member>> {
        self.members.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Adds a replica, not ready until its probe says so.
    pub(crate) fn add(&self, replica: &str, addr: SocketAddr) {
        self.members().push(Member { replica: replica.to_owned(), addr, ready: false, in_rotation: true });
    }

    pub(crate) fn set_ready(&self, replica: &str, ready: bool) {
        if let Some(member) = self.members().iter_mut().find(|m| m.replica == replica) {
            member.ready = ready;
        }
    }

    pub(crate) fn set_in_rotation(&self, replica: &str, in_rotation: bool) {
        if let Some(member) = self.members().iter_mut().find(|m| m.replica == replica) {
            member.in_rotation = in_rotation;
            if !in_rotation {
                member.ready = false;
            }
        }
    }

    /// The addresses to try for a new connection: every serving replica, starting at the next in
    /// turn.
    fn candidates(&self) -> Vec<SocketAddr> {
        let members = self.members();
        let serving: Vec<SocketAddr> = members.iter().filter(|m| m.ready && m.in_rotation).map(|m| m.addr).collect();
        if serving.is_empty() {
            return serving;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed) % serving.len();
        serving[start..].iter().chain(&serving[..start]).copied().collect()
    }
}

/// Which pool serves a host: its first label (`api.localhost:8080` → `api`).
#[derive(Debug, Clone)]
pub(crate) struct Routes(pub(crate) Vec<(&'static str, Arc<Pool>)>);

impl Routes {
    fn pool_for(&self, host: &str) -> Option<&Arc<Pool>> {
        let label = host.split(['.', ':']).next().unwrap_or_default();
        self.0.iter().find(|(name, _)| name.eq_ignore_ascii_case(label)).map(|(_, pool)| pool)
    }

    fn names(&self) -> String {
        self.0.iter().map(|(name, _)| format!("{name}.*")).collect::<Vec<_>>().join(", ")
    }
}

/// The `Host` header of a request head (what was read may go on into the body), if it has one.
/// Lines are read as bytes: another header's odd bytes do not hide it.
fn host_of(read: &[u8]) -> Option<String> {
    let end = read.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(read.len());
    read[..end].split(|&b| b == b'\n').skip(1).find_map(|line| {
        let colon = line.iter().position(|&b| b == b':')?;
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        if !name.trim_ascii().eq_ignore_ascii_case(b"host") {
            return None;
        }
        std::str::from_utf8(value.trim_ascii()).ok().map(str::to_owned)
    })
}

/// A short plain-text answer with `headers`, then the connection is closed.
async fn answer(client: &mut TcpStream, status: &str, headers: &[(&str, &str)], message: &str) {
    let extra: String = headers.iter().map(|(name, value)| format!("{name}: {value}\r\n")).collect();
    let response = format!(
        "HTTP/1.1 {status}\r\ncontent-type: text/plain; charset=utf-8\r\n{extra}content-length: {}\r\nconnection: close\r\n\r\n{message}",
        message.len()
    );
    let _ = client.write_all(response.as_bytes()).await;
    let _ = client.shutdown().await;
}

/// Connects to the first of the pool's serving replicas that accepts.
async fn connect(pool: &Pool) -> Option<TcpStream> {
    for addr in pool.candidates() {
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => return Some(stream),
            Ok(Err(e)) => tracing::warn!(pool = pool.name(), %addr, error = %e, "front door: replica refused"),
            Err(_) => tracing::warn!(pool = pool.name(), %addr, "front door: replica did not accept in time"),
        }
    }
    None
}

/// How long a client may go on sending after the replica has answered and closed (its request
/// body, unread: a 401 before an upload's body) while the answer reaches it.
const LINGER: Duration = Duration::from_secs(5);

/// Joins the client to a replica until both sides are done. A replica that answers and closes
/// before it read the whole request still has its answer delivered: the client's remaining bytes
/// are read and dropped (for at most [`LINGER`]), so closing never resets the connection under an
/// answer the client has not read yet.
async fn splice(client: TcpStream, upstream: TcpStream, already_read: &[u8]) {
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let (mut client_read, mut client_write) = client.into_split();
    let (mut upstream_read, mut upstream_write) = upstream.into_split();
    let mut forwarding = upstream_write.write_all(already_read).await.is_ok();
    let up = async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match client_read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if forwarding && upstream_write.write_all(&buf[..n]).await.is_err() {
                forwarding = false;
            }
        }
        let _ = upstream_write.shutdown().await;
    };
    let down = async move {
        let _ = tokio::io::copy(&mut upstream_read, &mut client_write).await;
        let _ = client_write.shutdown().await;
    };
    tokio::pin!(up, down);
    tokio::select! {
        _ = &mut up => down.await,
        _ = &mut down => { let _ = tokio::time::timeout(LINGER, up).await; }
    }
}

/// Why no request head was read.
#[derive(Debug, PartialEq)]
enum HeadError {
    /// The client closed the connection or it failed: nobody to answer.
    Gone,
    /// An HTTP status to answer with.
    Answer(&'static str),
}

/// Reads until the end of the request head (or `MAX_HEAD` bytes, or the timeout).
async fn read_head(client: &mut TcpStream) -> Result<Vec<u8>, HeadError> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 4096];
    let read = async {
        loop {
            if head.windows(4).any(|w| w == b"\r\n\r\n") {
                return Ok(());
            }
            if head.len() >= MAX_HEAD {
                return Err(HeadError::Answer("431 Request Header Fields Too Large"));
            }
            match client.read(&mut buf).await {
                Ok(0) | Err(_) => return Err(HeadError::Gone),
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
    };
    match tokio::time::timeout(HEAD_TIMEOUT, read).await {
        Ok(Ok(())) => Ok(head),
        Ok(Err(error)) => Err(error),
        Err(_) => Err(HeadError::Answer("408 Request Timeout")),
    }
}

async fn route(mut client: TcpStream, routes: Arc<Routes>) {
    let head = match read_head(&mut client).await {
        Ok(head) => head,
        Err(HeadError::Gone) => return,
        Err(HeadError::Answer(status)) => {
            return answer(&mut client, status, &[], "the request head was not read\n").await;
        }
    };
    let Some(host) = host_of(&head) else {
        return answer(&mut client, "400 Bad Request", &[], "a Host header is required\n").await;
    };
    let Some(pool) = routes.pool_for(&host) else {
        let message = format!("no service answers to {host}; this front door routes {}\n", routes.names());
        return answer(&mut client, "404 Not Found", &[], &message).await;
    };
    match connect(pool).await {
        Some(upstream) => splice(client, upstream, &head).await,
        None => {
            let message = format!("no {} replica is ready; try again shortly\n", pool.name());
            answer(&mut client, "503 Service Unavailable", &[("retry-after", "1")], &message).await;
        }
    }
}

/// Serves the front door until `stop`; connections already joined go on by themselves.
pub(crate) async fn serve_front_door(listener: TcpListener, routes: Routes, stop: CancellationToken) {
    let routes = Arc::new(routes);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((client, _)) => { tokio::spawn(route(client, routes.clone())); }
                Err(e) => {
                    tracing::warn!(error = %e, "front door: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}

/// Serves an internal Service: every connection goes to one of `pool`'s replicas, bytes unread.
pub(crate) async fn serve_service(listener: TcpListener, pool: Arc<Pool>, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((client, _)) => {
                    let pool = pool.clone();
                    tokio::spawn(async move {
                        // Nobody to answer HTTP errors to: an internal client sees the connection
                        // close and retries, as it would with no endpoint behind a Service.
                        if let Some(upstream) = connect(&pool).await {
                            splice(client, upstream, &[]).await;
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "service listener: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_header_is_found_whatever_its_case() {
        let head = b"GET /v1/listen HTTP/1.1\r\nUser-Agent: x\r\nHOST: api.localhost:8080\r\n\r\n";
        assert_eq!(host_of(head).as_deref(), Some("api.localhost:8080"));
        assert_eq!(host_of(b"GET / HTTP/1.1\r\naccept: */*\r\n\r\n"), None);
        // A request line that mentions a host is not the header.
        assert_eq!(host_of(b"GET http://host:1/ HTTP/1.1\r\n\r\n"), None);
        // The body read with the head (binary audio) does not hide it, nor does a Host in it.
        let mut upload = b"POST /v1/listen HTTP/1.1\r\nhost: api.localhost\r\n\r\n".to_vec();
        upload.extend_from_slice(&[0xff, 0xfe, 0x00, 0x80]);
        assert_eq!(host_of(&upload).as_deref(), Some("api.localhost"));
        assert_eq!(host_of(b"POST / HTTP/1.1\r\n\r\nhost: x\r\n\r\n"), None);
        // Another header's bytes that are not UTF-8 do not hide it.
        assert_eq!(host_of(b"GET / HTTP/1.1\r\nx-odd: \xff\xfe\r\nHost: api.x\r\n\r\n").as_deref(), Some("api.x"));
    }

    #[test]
    fn hosts_route_by_their_first_label() {
        let (api, web) = (Pool::new("gateway"), Pool::new("web"));
        let routes = Routes(vec![("api", api), ("platform", web)]);
        assert_eq!(routes.pool_for("api.localhost:8080").map(|p| p.name()), Some("gateway"));
        assert_eq!(routes.pool_for("API.example.com").map(|p| p.name()), Some("gateway"));
        assert_eq!(routes.pool_for("platform.localhost").map(|p| p.name()), Some("web"));
        assert_eq!(routes.pool_for("api").map(|p| p.name()), Some("gateway"));
        assert!(routes.pool_for("backend.localhost").is_none());
        assert!(routes.pool_for("apix.localhost").is_none());
        assert_eq!(routes.names(), "api.*, platform.*");
    }

    #[test]
    fn only_ready_replicas_in_rotation_get_connections_in_turn() {
        let pool = Pool::new("gateway");
        let (a, b): (SocketAddr, SocketAddr) = ("127.0.0.1:1".parse().unwrap(), "127.0.0.1:2".parse().unwrap());
        pool.add("gateway-1", a);
        pool.add("gateway-2", b);
        assert!(pool.candidates().is_empty(), "not ready until probed");
        pool.set_ready("gateway-1", true);
        pool.set_ready("gateway-2", true);
        let firsts: Vec<SocketAddr> = (0..4).map(|_| pool.candidates()[0]).collect();
        assert_eq!(firsts, [a, b, a, b], "round-robin");
        assert_eq!(pool.candidates().len(), 2, "the others are tried next");
        pool.set_in_rotation("gateway-1", false);
        assert_eq!(pool.candidates(), [b]);
        // Back in rotation it waits for its probe again.
        pool.set_in_rotation("gateway-1", true);
        assert_eq!(pool.candidates(), [b]);
        pool.set_ready("gateway-1", true);
        assert_eq!(pool.candidates().len(), 2);
    }

    #[tokio::test]
    async fn a_connection_is_joined_to_the_replica_its_host_names_and_unknown_hosts_get_404() {
        // A replica that answers with the head it received.
        let replica = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let replica_addr = replica.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = replica.accept().await {
                tokio::spawn(async move {
                    let head = read_head(&mut socket).await.unwrap();
                    let body = String::from_utf8(head).unwrap();
                    let response = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}", body.len());
                    socket.write_all(response.as_bytes()).await.unwrap();
                });
            }
        });
        let pool = Pool::new("gateway");
        pool.add("gateway-1", replica_addr);
        pool.set_ready("gateway-1", true);
        let door = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let door_addr = door.local_addr().unwrap();
        let stop = CancellationToken::new();
        tokio::spawn(serve_front_door(door, Routes(vec![("api", pool.clone())]), stop.clone()));

        let ask = |head: &'static str| async move {
            let mut socket = TcpStream::connect(door_addr).await.unwrap();
            // The head in two pieces: the front door waits for all of it.
            socket.write_all(&head.as_bytes()[..10]).await.unwrap();
            socket.flush().await.unwrap();
            socket.write_all(&head.as_bytes()[10..]).await.unwrap();
            let mut answer = String::new();
            socket.read_to_string(&mut answer).await.unwrap();
            answer
        };
        let head = "GET /ready HTTP/1.1\r\nhost: api.localhost\r\nx-other: 1\r\nconnection: close\r\n\r\n";
        let answer = ask(head).await;
        assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
        assert!(answer.ends_with(head), "the head passes unchanged: {answer}");
        let answer = ask("GET / HTTP/1.1\r\nhost: nope.localhost\r\n\r\n").await;
        assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
        assert!(answer.contains("api.*"), "{answer}");
        let answer = ask("GET / HTTP/1.1\r\naccept: */*\r\n\r\n").await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
        pool.set_in_rotation("gateway-1", false);
        let answer = ask("GET / HTTP/1.1\r\nhost: api.localhost\r\n\r\n").await;
        assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
        assert!(answer.contains("retry-after: 1"), "{answer}");
        stop.cancel();
    }
}
