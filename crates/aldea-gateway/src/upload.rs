//! `POST /v1/listen` (and its aliases): the body — raw audio, or JSON `{"url"}` fetched here — is
//! read up to the size limit (413 as soon as it is passed, not after buffering it all; in memory up
//! to the spool threshold, in an unnamed temporary file past it, so memory per upload stays
//! bounded whatever its size), sent to the
//! least-loaded stt replica (the next one when a replica is full or unreachable), and the answer is
//! relayed as it came. The audio seconds in the answer's metadata are metered.
//!
//! Invariant: the upload's slot is taken before its body is read, and given back with its usage
//! metered whatever the answer; a body is never held past `max_body_bytes` (a `url` body's JSON past
//! 64 KiB), and a stalled one gets 408; a `url` is fetched without a proxy, connecting to the
//! address checked, which must be public unless private targets are allowed.

use std::net::IpAddr;

use aldea_http::RequestId;
use axum::body::Body;
use axum::extract::State;
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use futures_util::StreamExt;
use ipnet::IpNet;
use reqwest::Url;

use aldea_http::spool::{spool, SpoolError, SpoolLimits, Spooled};

use crate::error::{ApiError, IntoApi};
use crate::extract::{SttQuery, UploadSlot};
use crate::{upstream, AppState};

/// Redirects followed when fetching a `url` body (each target checked again).
const MAX_REDIRECTS: usize = 5;
/// Largest JSON body (`{"url": …}`).
const MAX_JSON_BYTES: usize = 64 * 1024;

/// A JSON upload body: the audio is fetched from `url`.
#[derive(serde::Deserialize, utoipa::ToSchema)]
pub(crate) struct UrlBody {
    /// http or https; fetched by the server within the size and time limits.
    url: String,
}

#[utoipa::path(post, path = "/v1/listen", tag = "listen", operation_id = "listen_upload", security(("token" = []), ("bearer" = [])),
    request_body(description = "The audio's bytes (a container is detected; a headerless `encoding` is read as declared), or JSON `{\"url\"}`",
        content((String = "application/octet-stream"), (UrlBody = "application/json"))),
    responses((status = 200, description = "The transcript (Deepgram's pre-recorded form)", body = aldea_proto::PrerecordedResponse)))]
pub(crate) async fn listen_upload(
    State(state): State<AppState>,
    Extension(RequestId(request_id)): Extension<RequestId>,
    slot: UploadSlot,
    SttQuery(query): SttQuery,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let answer = async {
        let (audio, content_type) = read_audio(&state, &headers, body).await?;
        upstream::post_upload(&state, &request_id, &query, &audio, content_type, headers.get("timestamps").cloned())
            .await
    }
    .await;
    let (status, seconds) = match &answer {
        Ok(answer) => (answer.status, answer.seconds()),
        Err(e) => (e.status(), None),
    };
    slot.finish(&state, status, seconds).await;
    answer.map(IntoResponse::into_response)
}

/// The audio of a request: the body itself, or the content of the `url` a JSON body names.
async fn read_audio(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<(Spooled, Option<HeaderValue>), ApiError> {
    let is_json = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().to_ascii_lowercase().starts_with("application/json"));
    let declared = headers.get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    let idle = state.config().body_idle_timeout;
    let read_error = |e: axum::Error| ApiError::BadRequest(format!("the body could not be read: {e}"));
    if is_json {
        let limits = SpoolLimits { in_memory: MAX_JSON_BYTES, ..state.spool_limits(MAX_JSON_BYTES, idle) };
        let json = spool(body.into_data_stream(), declared, &limits).await.map_err(|e| e.into_api(read_error))?;
        let url = json
            .as_bytes()
            // An object (duplicate keys: the last wins), whatever else it holds besides `url`.
            .and_then(|json| serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(json).ok())
            .and_then(|object| serde_json::from_value::<UrlBody>(serde_json::Value::Object(object)).ok())
            .map(|body| body.url)
            .ok_or_else(|| ApiError::BadRequest("a JSON body must be {\"url\": \"https://...\"}".to_owned()))?;
        fetch_url(state, &url).await
    } else {
        let content_type = headers.get(CONTENT_TYPE).cloned();
        let limits = state.spool_limits(state.config().max_body_bytes, idle);
        let audio = spool(body.into_data_stream(), declared, &limits).await.map_err(|e| e.into_api(read_error))?;
        Ok((audio, content_type))
    }
}

/// Fetches a `url` body: http(s) only, every address it resolves to (and every redirect's) public
/// unless private targets are allowed, connecting to the address checked (no second lookup to
/// rebind), within the size and time limits.
async fn fetch_url(state: &AppState, url: &str) -> Result<(Spooled, Option<HeaderValue>), ApiError> {
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
        let content_type = answer
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| HeaderValue::from_bytes(v.as_bytes()).ok());
        let declared = answer.content_length();
        // reqwest's errors name the URL: only their kind is said.
        let chunks = answer.bytes_stream().map(|chunk| chunk.map_err(|e| without_url(&e)));
        let limits = state.spool_limits(limit, state.config().url_fetch_timeout);
        let content = spool(chunks, declared, &limits).await.map_err(|e| match e {
            SpoolError::TooLarge { .. } => {
                ApiError::TooLarge(format!("the url's content is larger than the limit of {limit} bytes"))
            }
            other => other.into_api(|kind| ApiError::BadRequest(format!("the url could not be read: {kind}"))),
        })?;
        return Ok((content, content_type));
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
}
