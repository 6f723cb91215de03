//! Extractors: what the Speech API handlers take before any work. [`Admitted`]: who is asking
//! (credential, key, scope, credit) and the key's request rate. [`UploadSlot`]: an admitted upload
//! holding one of its organization's upload slots, given back with its usage metered.
//! [`SttQuery`]: the client's query as stt gets it.
//!
//! Invariant: a rejection is an [`ApiError`] (the contract's body, counted as a refusal); nothing
//! here reads a request body, so an upload is refused before its body is read; the client's
//! `resume_*` parameters never reach stt (the resume handshake is the gateway's own).

use std::convert::Infallible;

use aldea_http::RequestId;
use aldea_store::{KeyGrant, UsageKind};
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::StatusCode;

use crate::admission::{self, Kind, Lease};
use crate::auth::{self, Via};
use crate::error::ApiError;
use crate::usage::Meter;
use crate::AppState;

/// A Speech API request that passed the checks every one passes first: who it is, whether its key
/// may listen and its organization has credit, and the key's request rate.
pub(crate) struct Admitted {
    pub(crate) grant: KeyGrant,
    /// How the credential came (a WebSocket answer echoes its subprotocol).
    pub(crate) via: Via,
    /// The SHA-256 of the API key it came with (none for a browser token): a stream is rechecked
    /// by it, so a rotated secret past its grace ends the stream too.
    pub(crate) key_hash: Option<String>,
}

impl FromRequestParts<AppState> for Admitted {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Admitted, ApiError> {
        let (credential, via) = auth::credential(&parts.headers).ok_or_else(|| {
            ApiError::Unauthorized(
                "missing credentials: send Authorization: Token <key> or the token subprotocol".to_owned(),
            )
        })?;
        let grant = state.0.auth.authenticate(&credential).await?;
        admission::check_rate(state.0.limits.as_ref(), state.config(), &grant).await?;
        let key_hash = match &credential {
            auth::Credential::Key(secret) => Some(aldea_store::hash_key(secret)),
            auth::Credential::Jwt(_) => None,
        };
        Ok(Admitted { grant, via, key_hash })
    }
}

/// An admitted upload holding one of its organization's upload slots, taken before its body is
/// read; [`UploadSlot::finish`] meters it and gives the slot back (dropped without: the slot frees
/// itself by its TTL).
pub(crate) struct UploadSlot {
    grant: KeyGrant,
    lease: Lease,
    request_id: String,
}

impl FromRequestParts<AppState> for UploadSlot {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<UploadSlot, ApiError> {
        let Admitted { grant, .. } = Admitted::from_request_parts(parts, state).await?;
        let request_id = parts.extensions.get::<RequestId>().map(|id| id.0.clone()).unwrap_or_default();
        let lease =
            admission::acquire(state.0.limits.clone(), state.config(), &grant, Kind::Upload, &request_id).await?;
        state.0.metrics.uploads_total.inc();
        Ok(UploadSlot { grant, lease, request_id })
    }
}

impl UploadSlot {
    /// Meters the upload (the seconds stt reported; a refused or failed request meters nothing)
    /// and gives its slot back.
    pub(crate) async fn finish(self, state: &AppState, status: StatusCode, seconds: Option<f64>) {
        let seconds = seconds.unwrap_or(0.0);
        let mut meter = Meter::new(&self.request_id, &self.grant, UsageKind::Rest, &state.config().model_name);
        if let Some(event) = meter.event(seconds, true, status.as_u16()) {
            state.0.metrics.add_audio(seconds);
            state.0.usage.record(event).await;
        }
        self.lease.release().await;
    }
}

/// The client's query as stt gets it ([`forwarded_query`]; empty when there is none).
pub(crate) struct SttQuery(pub(crate) String);

impl<S: Send + Sync> FromRequestParts<S> for SttQuery {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<SttQuery, Infallible> {
        Ok(SttQuery(parts.uri.query().map(forwarded_query).unwrap_or_default()))
    }
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

#[cfg(test)]
mod tests {
    use super::*;

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
