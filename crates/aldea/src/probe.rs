//! `aldea probe [URL ...]`: exits 0 when one of the URLs answers 2xx within 2 s (default: `/live`
//! on this machine's service ports, whichever service the container runs). A container's
//! HEALTHCHECK without curl or a shell in the image.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use crate::output;

const DEFAULT_URLS: &[&str] = &[
    "http://127.0.0.1:8000/live",
    "http://127.0.0.1:8800/live",
    "http://127.0.0.1:3000/live",
    "http://127.0.0.1:8080/live",
];
const TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Args)]
pub(crate) struct ProbeArgs {
    /// http:// URLs to ask (default: /live on ports 8000, 8800, 3000 and 8080 of 127.0.0.1).
    urls: Vec<String>,
}

/// The status line's code of a plain-http GET, or why there is none.
pub(crate) fn status(url: &str) -> Result<u16, String> {
    let rest = url.strip_prefix("http://").ok_or_else(|| format!("{url}: only http:// URLs"))?;
    let (authority, path) = rest.split_once('/').map_or((rest, "/".to_owned()), |(a, p)| (a, format!("/{p}")));
    let address: SocketAddr = authority
        .to_socket_addrs()
        .map_err(|e| format!("{authority}: {e}"))?
        .next()
        .ok_or_else(|| format!("{authority}: no address"))?;
    let mut stream = TcpStream::connect_timeout(&address, TIMEOUT).map_err(|e| format!("{url}: {e}"))?;
    stream
        .set_read_timeout(Some(TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(TIMEOUT)))
        .map_err(|e| e.to_string())?;
    // The request in one write.
    let request = format!("GET {path} HTTP/1.0\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).map_err(|e| format!("{url}: {e}"))?;
    // The status line, however it arrives (at most 64 bytes are looked at).
    let mut head = Vec::new();
    let mut buf = [0u8; 64];
    while !head.contains(&b'\n') && head.len() < 64 {
        let n = stream.read(&mut buf).map_err(|e| format!("{url}: {e}"))?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&head);
    line.split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("{url}: not an HTTP answer"))
}

pub(crate) fn run(args: &ProbeArgs) -> anyhow::Result<ExitCode> {
    let urls: Vec<&str> =
        if args.urls.is_empty() { DEFAULT_URLS.to_vec() } else { args.urls.iter().map(String::as_str).collect() };
    let mut reasons = Vec::new();
    for url in urls {
        match status(url) {
            Ok(code) if (200..300).contains(&code) => {
                output::info(&format!("{url}: {code}"));
                return Ok(ExitCode::SUCCESS);
            }
            Ok(code) => reasons.push(format!("{url}: {code}")),
            Err(reason) => reasons.push(reason),
        }
    }
    output::error(&format!("no service answers: {}", reasons.join("; ")));
    Ok(ExitCode::FAILURE)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_closed_port_or_another_scheme_is_not_healthy() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        assert!(super::status(&format!("http://127.0.0.1:{port}/live")).is_err());
        assert!(super::status("https://127.0.0.1/live").is_err());
    }

    #[test]
    fn the_status_code_is_read_from_the_answer() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/live", listener.local_addr().unwrap());
        let server = std::thread::spawn(move || {
            use std::io::{Read, Write};
            let (mut socket, _) = listener.accept().unwrap();
            // The whole head, however it arrives.
            let mut request = Vec::new();
            let mut buf = [0u8; 256];
            while !request.ends_with(b"\r\n\r\n") {
                let n = socket.read(&mut buf).unwrap();
                assert!(n > 0, "the request ended early: {:?}", String::from_utf8_lossy(&request));
                request.extend_from_slice(&buf[..n]);
            }
            assert!(String::from_utf8_lossy(&request).starts_with("GET /live HTTP/1.0\r\nHost: 127.0.0.1:"));
            socket.write_all(b"HTTP/1.1 503 Service Unavailable\r\n\r\n").unwrap();
        });
        assert_eq!(super::status(&url), Ok(503));
        server.join().unwrap();
    }
}
