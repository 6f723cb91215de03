//! `POST /v1/listen` (and its aliases): the body — raw audio, or JSON `{"url"}` fetched here — is
//! read up to the size limit (413 as soon as it is passed, not after buffering it all), sent to the
//! least-loaded stt replica (the next one when a replica is full or unreachable), and the answer is
//! relayed as it came. The audio seconds in the answer's metadata are metered.

use std::net::IpAddr;

use aldea_store::UsageKind;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use futures_util::StreamExt;
use ipnet::IpNet;
use reqwest::Url;

use crate::admission::{self, Kind};
use crate::error::ApiError;
use aldea_http::RequestId;

use crate::http::{admit, refuse};
use crate::usage::Meter;
use crate::AppState;

/// Redirects followed when fetching a `url` body (each target checked again).
const MAX_REDIRECTS: usize = 5;

pub(crate) async fn listen_upload(
    State(state): State<AppState>,
    Extension(RequestId(request_id)): Extension<RequestId>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let (grant, lease) = match admit_upload(&state, &headers, &request_id).await {
        Ok(admitted) => admitted,
        Err(refusal) => return refusal,
    };
    let answer = async {
        let (audio, content_type) = read_audio(&state, &headers, body).await?;
        let query = uri.query().map(forwarded_query).unwrap_or_default();
        forward(&state, &request_id, &query, audio, content_type, headers.get("timestamps").cloned()).await
    }
    .await;
    let (response, seconds) = match answer {
        Ok(answer) => {
            let seconds = answer.seconds();
            (answer.into_response(), seconds)
        }
        Err(e) => (refuse(&state, e, &request_id), None),
    };
    finish_upload(&state, &grant, &request_id, response.status().as_u16(), seconds, lease).await;
    response
}

/// The checks before an upload: credentials and rate, then one of the organization's upload slots.
pub(crate) async fn admit_upload(
    state: &AppState,
    headers: &HeaderMap,
    request_id: &str,
) -> Result<(aldea_store::KeyGrant, admission::Lease), Response> {
    let grant = match admit(state, headers).await {
        Ok((grant, _, _)) => grant,
        Err(e) => return Err(refuse(state, e, request_id)),
    };
    match admission::acquire(state.0.limits.clone(), state.config(), &grant, Kind::Upload, request_id).await {
        Ok(lease) => {
            state.0.metrics.uploads_total.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Ok((grant, lease))
        }
        Err(e) => Err(refuse(state, e, request_id)),
    }
}

/// Meters an upload (the seconds stt reported; a refused or failed request meters nothing) and
/// gives its slot back.
pub(crate) async fn finish_upload(
    state: &AppState,
    grant: &aldea_store::KeyGrant,
    request_id: &str,
    status: u16,
    seconds: Option<f64>,
    lease: admission::Lease,
) {
    let seconds = seconds.unwrap_or(0.0);
    let mut meter = Meter::new(request_id, grant, UsageKind::Rest, &state.config().model_name);
    if let Some(event) = meter.event(seconds, true, status) {
        state.0.metrics.audio_ms.fetch_add((seconds * 1000.0).round() as u64, std::sync::atomic::Ordering::Relaxed);
        state.0.usage.record(event).await;
    }
    lease.release().await;
}

/// What an stt replica answered.
pub(crate) struct SttAnswer {
    pub(crate) status: StatusCode,
    pub(crate) content_type: Option<HeaderValue>,
    pub(crate) body: Bytes,
}

impl SttAnswer {
    /// The audio seconds a successful answer reports.
    pub(crate) fn seconds(&self) -> Option<f64> {
        if !self.status.is_success() {
            return None;
        }
        let value: serde_json::Value = serde_json::from_slice(&self.body).ok()?;
        value.pointer("/metadata/duration").and_then(|d| d.as_f64())
    }

    pub(crate) fn into_response(self) -> Response {
        let mut response = (self.status, Body::from(self.body)).into_response();
        if let Some(value) = self.content_type {
            response.headers_mut().insert(CONTENT_TYPE, value);
        }
        response
    }
}

/// The audio of a request: the body itself, or the content of the `url` a JSON body names.
async fn read_audio(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<(Bytes, Option<HeaderValue>), ApiError> {
    let is_json = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().to_ascii_lowercase().starts_with("application/json"));
    if is_json {
        let json = read_limited(body, headers, 64 * 1024, state.config().body_idle_timeout).await?;
        let url = serde_json::from_slice::<serde_json::Value>(&json)
            .ok()
            .and_then(|v| v.get("url").and_then(|u| u.as_str()).map(str::to_owned))
            .ok_or_else(|| ApiError::BadRequest("a JSON body must be {\"url\": \"https://...\"}".to_owned()))?;
        fetch_url(state, &url).await
    } else {
        let content_type = headers.get(CONTENT_TYPE).cloned();
        Ok((
            read_limited(body, headers, state.config().max_body_bytes, state.config().body_idle_timeout).await?,
            content_type,
        ))
    }
}

/// Sends the audio to the replicas in order until one takes it; a full (503) or unreachable
/// replica is skipped, any other answer is final. A replica whose connection breaks before it
/// answers is asked once more on a fresh connection first: a pooled keep-alive connection that the
/// replica closed after its last answer (it does when it answered before reading a body) fails the
/// next request sent on it, and that says nothing about the replica.
pub(crate) async fn forward(
    state: &AppState,
    request_id: &str,
    query: &str,
    audio: Bytes,
    content_type: Option<HeaderValue>,
    timestamps: Option<HeaderValue>,
) -> Result<SttAnswer, ApiError> {
    for base in state.0.pool.ordered().await {
        let Ok(mut url) = base.join("/v1/listen") else { continue };
        url.set_query((!query.is_empty()).then_some(query));
        for attempt in 0..2 {
            let mut request =
                state.0.pool.client().post(url.clone()).header("x-request-id", request_id).body(audio.clone());
            if let Some(content_type) = &content_type {
                request = request.header(CONTENT_TYPE, content_type.clone());
            }
            if let Some(timestamps) = &timestamps {
                request = request.header("timestamps", timestamps.clone());
            }
            if let Some(token) = state.0.pool.token() {
                request = request.bearer_auth(token);
            }
            let answer = match request.send().await {
                Ok(answer) => answer,
                Err(e) if attempt == 0 && !e.is_timeout() && !e.is_connect() => {
                    tracing::debug!(request_id, replica = %base, error = %e, "stt connection broke before an answer; asking again");
                    state.0.metrics.upstream_retries.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    continue;
                }
                Err(e) => {
                    tracing::warn!(request_id, replica = %base, error = %e, "stt replica unreachable; trying the next");
                    state.0.metrics.upstream_retries.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    break;
                }
            };
            let status = answer.status();
            if status == reqwest::StatusCode::SERVICE_UNAVAILABLE {
                state.0.pool.note_full(&base);
                state.0.metrics.upstream_retries.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                break;
            }
            let content_type =
                answer.headers().get(CONTENT_TYPE).and_then(|v| HeaderValue::from_bytes(v.as_bytes()).ok());
            let body = match answer.bytes().await {
                Ok(bytes) => bytes,
                Err(e) => {
                    tracing::warn!(request_id, replica = %base, error = %e, "stt replica failed mid-answer; trying the next");
                    state.0.metrics.upstream_retries.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    break;
                }
            };
            let status = StatusCode::from_u16(status.as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
            return Ok(SttAnswer { status, content_type, body });
        }
    }
    Err(ApiError::NoCapacity("no stt replica can take this request now; retry shortly".to_owned()))
}

/// The body, refused with 413 as soon as it passes `limit` (a declared length over it is refused
/// before reading anything).
async fn read_limited(
    body: Body,
    headers: &HeaderMap,
    limit: usize,
    idle: std::time::Duration,
) -> Result<Bytes, ApiError> {
    let too_large = || ApiError::TooLarge(format!("the body is larger than the limit of {limit} bytes"));
    let declared = headers.get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    // The declared length is the client's word: memory follows what arrives, at most a MiB ahead.
    let mut collected: Vec<u8> = Vec::with_capacity(declared.map_or(64 * 1024, |n| (n as usize).min(1024 * 1024)));
    let mut stream = body.into_data_stream();
    loop {
        let next = tokio::time::timeout(idle, stream.next())
            .await
            .map_err(|_| ApiError::Timeout(format!("no part of the body arrived for {} s", idle.as_secs_f64())))?;
        let Some(chunk) = next else { break };
        let chunk = chunk.map_err(|e| ApiError::BadRequest(format!("the body could not be read: {e}")))?;
        if collected.len() + chunk.len() > limit {
            return Err(too_large());
        }
        collected.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(collected))
}

/// The client's query as stt gets it: decoded pair by pair and encoded again (one spelling for
/// every name, whatever the client's percent-encoding), without the names stt once read as its
/// resume handshake (`resume_*`: the handshake is the gateway's own header now, and an stt replica of
/// an older release still reads the query during a rolling update).
pub(crate) fn forwarded_query(query: &str) -> String {
    let mut out = form_urlencoded::Serializer::new(String::new());
    for (name, value) in form_urlencoded::parse(query.as_bytes()) {
        if !name.starts_with("resume_") {
            out.append_pair(&name, &value);
        }
    }
    out.finish()
}

/// Fetches a `url` body: http(s) only, every address it resolves to (and every redirect's) public
/// unless private targets are allowed, connecting to the address checked (no second lookup to
/// rebind), within the size and time limits.
async fn fetch_url(state: &AppState, url: &str) -> Result<(Bytes, Option<HeaderValue>), ApiError> {
    let limit = state.config().max_body_bytes;
    let mut current = Url::parse(url).map_err(|e| ApiError::BadRequest(format!("invalid url: {e}")))?;
    for _ in 0..=MAX_REDIRECTS {
        if !matches!(current.scheme(), "http" | "https") {
            return Err(ApiError::BadRequest("only http and https urls can be fetched".to_owned()));
        }
        let host = current.host_str().ok_or_else(|| ApiError::BadRequest("the url has no host".to_owned()))?.to_owned();
        let port = current.port_or_known_default().unwrap_or(80);
        let bare_host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
        let addrs: Vec<std::net::SocketAddr> = tokio::net::lookup_host((bare_host.as_str(), port))
            .await
            .map_err(|_| ApiError::BadRequest(format!("the url's host {host:?} does not resolve")))?
            .collect();
        if addrs.is_empty() {
            return Err(ApiError::BadRequest(format!("the url's host {host:?} does not resolve")));
        }
        if !state.config().allow_private_urls && addrs.iter().any(|a| !is_public(a.ip())) {
            return Err(ApiError::BadRequest(
                "the url points at a loopback or private address, which this server does not fetch".to_owned(),
            ));
        }
        // No proxy, whatever the environment says: the connection goes to the address checked.
        let client = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .resolve_to_addrs(&bare_host, &addrs)
            .timeout(state.config().url_fetch_timeout)
            .build()
            .map_err(|e| ApiError::Internal(format!("url client: {e}")))?;
        let answer = client
            .get(current.clone())
            .send()
            .await
            .map_err(|e| ApiError::BadRequest(format!("the url could not be fetched: {}", without_url(&e))))?;
        if answer.status().is_redirection() {
            let location = answer
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|l| l.to_str().ok())
                .ok_or_else(|| ApiError::BadRequest("the url redirected without a location".to_owned()))?;
            current = current.join(location).map_err(|e| ApiError::BadRequest(format!("bad redirect: {e}")))?;
            continue;
        }
        if !answer.status().is_success() {
            return Err(ApiError::BadRequest(format!("fetching the url answered {}", answer.status())));
        }
        if answer.content_length().is_some_and(|n| n > limit as u64) {
            return Err(ApiError::TooLarge(format!("the url's content is larger than the limit of {limit} bytes")));
        }
        let content_type = answer
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| HeaderValue::from_bytes(v.as_bytes()).ok());
        let mut collected: Vec<u8> = Vec::new();
        let mut stream = answer.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk =
                chunk.map_err(|e| ApiError::BadRequest(format!("the url could not be read: {}", without_url(&e))))?;
            if collected.len() + chunk.len() > limit {
                return Err(ApiError::TooLarge(format!("the url's content is larger than the limit of {limit} bytes")));
            }
            collected.extend_from_slice(&chunk);
        }
        return Ok((Bytes::from(collected), content_type));
    }
    Err(ApiError::BadRequest(format!("the url redirected more than {MAX_REDIRECTS} times")))
}

/// reqwest's errors name the URL; the user knows it, and it may carry credentials in its query.
fn without_url(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "transfer failed"
    };
    kind.to_owned()
}

/// Address blocks that are not on the public internet, from IANA's IPv4 and IPv6 Special-Purpose
/// Address Registries (the entries whose "Globally Reachable" is False, plus the reserved and
/// multicast spaces). IPv6 outside 2000::/3 is refused as a whole; the forms that embed an IPv4
/// address (mapped, compatible, NAT64, 6to4) are judged by that address.
const NOT_PUBLIC: &[&str] = &[
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.0.2.0/24",
    "192.88.99.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "224.0.0.0/4",
    "240.0.0.0/4",
    "64:ff9b:1::/48",
    "100::/64",
    "2001::/23",
    "2001:db8::/32",
    "3fff::/20",
    "5f00::/16",
];

/// IPv6 blocks whose addresses carry an IPv4 address: where it sits (bit offset) in the address.
const EMBEDS_V4: &[(&str, u32)] = &[("::ffff:0:0/96", 96), ("::/96", 96), ("64:ff9b::/96", 96), ("2002::/16", 16)];

static NOT_PUBLIC_NETS: std::sync::LazyLock<Vec<IpNet>> =
    std::sync::LazyLock::new(|| NOT_PUBLIC.iter().filter_map(|n| n.parse().ok()).collect());

/// Whether an address is on the public internet: a `url` body is fetched only from such addresses
/// unless private targets are allowed.
pub(crate) fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => !v4.is_broadcast() && !NOT_PUBLIC_NETS.iter().any(|net| net.contains(&IpAddr::V4(v4))),
        IpAddr::V6(v6) => {
            if v6.is_unspecified() || v6.is_loopback() {
                return false;
            }
            let bits = u128::from(v6);
            for (block, offset) in EMBEDS_V4 {
                let Ok(net) = block.parse::<IpNet>() else { continue };
                if net.contains(&IpAddr::V6(v6)) {
                    let v4 = std::net::Ipv4Addr::from(((bits >> (128 - offset - 32)) & 0xffff_ffff) as u32);
                    return is_public(IpAddr::V4(v4));
                }
            }
            let global_unicast = (v6.segments()[0] & 0xe000) == 0x2000;
            global_unicast && !NOT_PUBLIC_NETS.iter().any(|net| net.contains(&IpAddr::V6(v6)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_reserved_and_embedded_private_addresses_are_not_public() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "198.18.0.1",
            "198.19.255.254",
            "192.0.0.8",
            "240.0.0.1",
            "255.255.255.255",
            "224.0.0.1",
            "192.0.2.1",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "fec0::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "::10.0.0.1",
            "64:ff9b::7f00:1",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b:1::1",
            "2002:7f00:1::",
            "2002:c0a8:101::1",
            "2001:db8::1",
            "2001::1",
            "100::1",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for public in [
            "8.8.8.8",
            "1.1.1.1",
            "198.20.0.1",
            "2606:4700:4700::1111",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
        ] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }

    #[test]
    fn clients_cannot_set_the_resume_parameters_in_any_spelling() {
        assert_eq!(
            forwarded_query("model=nova-3&resume_start=5&resume_prompt_tokens=1,2&punctuate=true"),
            "model=nova-3&punctuate=true"
        );
        for spelling in ["resume%5Fstart=5", "%72esume_start=5", "resume%5fstart=5", "%72%65sume_start=5"] {
            assert_eq!(forwarded_query(&format!("encoding=linear16&{spelling}")), "encoding=linear16", "{spelling}");
        }
        // Values keep their meaning, in one spelling.
        assert_eq!(forwarded_query("tag=a%20b&keywords=caf%C3%A9:2&tag=x+y"), "tag=a+b&keywords=caf%C3%A9%3A2&tag=x+y");
    }
}
