//! One error type that becomes the HTTP answer in the contract's form
//! (`{"err_code","err_msg","request_id"}`), with the status the contract gives each kind; errors an
//! stt replica answered are relayed as they came.
//!
//! Invariant: every answer made from an [`ApiError`] carries the request's id (the one the
//! `aldea_http::request_id` middleware holds while the request is answered) and is marked as a
//! [`Refusal`], which the router counts by status; no other answer is marked. A 5xx body is generic
//! and its cause is logged once, where the answer is made.

use aldea_proto::{codes, ErrorBody};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    PaymentRequired(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("{0}")]
    Timeout(String),
    #[error("{message}")]
    RateLimited { message: String, retry_after_s: u32 },
    #[error("{0}")]
    NoCapacity(String),
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::PaymentRequired(_) => StatusCode::PAYMENT_REQUIRED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Timeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::NoCapacity(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => codes::BAD_REQUEST,
            ApiError::Unauthorized(_) => codes::INVALID_AUTH,
            ApiError::PaymentRequired(_) => codes::INSUFFICIENT_CREDIT,
            ApiError::Forbidden(_) => codes::INSUFFICIENT_PERMISSIONS,
            ApiError::TooLarge(_) => codes::PAYLOAD_TOO_LARGE,
            ApiError::Timeout(_) => codes::REQUEST_TIMEOUT,
            ApiError::RateLimited { .. } => codes::TOO_MANY_REQUESTS,
            ApiError::NoCapacity(_) => codes::NO_CAPACITY,
            ApiError::Internal(_) => codes::INTERNAL,
        }
    }

    /// The answer, with the request id in the body (the middleware sets the headers).
    fn answer(self, request_id: &str) -> Response {
        let status = self.status();
        let retry_after = match &self {
            ApiError::RateLimited { retry_after_s, .. } => Some(retry_after_s.max(&1).to_string()),
            ApiError::NoCapacity(_) => Some("1".to_owned()),
            _ => None,
        };
        // 5xx bodies stay generic; the cause is logged once, here.
        let message = match &self {
            ApiError::Internal(cause) => {
                tracing::error!(request_id, error = %cause, "internal error");
                "internal error".to_owned()
            }
            other => other.to_string(),
        };
        let body = ErrorBody { err_code: self.code().to_owned(), err_msg: message, request_id: request_id.to_owned() };
        let mut response = (status, axum::Json(body)).into_response();
        if let Some(value) = retry_after.and_then(|v| HeaderValue::from_str(&v).ok()) {
            response.headers_mut().insert("retry-after", value);
        }
        response
    }
}

/// Marks an answer made from an [`ApiError`]: a refusal of the gateway's own (an answer stt gave and
/// the gateway relays is not one).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Refusal;

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let request_id = aldea_http::current_request_id().unwrap_or_default();
        let mut response = self.answer(&request_id);
        response.extensions_mut().insert(Refusal);
        response
    }
}

impl From<aldea_store::StoreError> for ApiError {
    fn from(e: aldea_store::StoreError) -> ApiError {
        ApiError::from(&e)
    }
}

/// A store error shared by every request that waited for one lookup (the key caches).
impl From<&aldea_store::StoreError> for ApiError {
    fn from(e: &aldea_store::StoreError) -> ApiError {
        match e {
            aldea_store::StoreError::Unavailable(_) => {
                ApiError::NoCapacity("the key store is unavailable; retry shortly".to_owned())
            }
            other => ApiError::Internal(other.to_string()),
        }
    }
}

/// A body that could not be read, as the contract's answer: 413 past the limit, 408 when it stalls
/// (the spool's own words), `read` for the source's own error, 500 when it could not be kept.
pub(crate) trait IntoApi<E> {
    fn into_api(self, read: impl FnOnce(E) -> ApiError) -> ApiError;
}

impl<E: std::fmt::Display> IntoApi<E> for aldea_http::spool::SpoolError<E> {
    fn into_api(self, read: impl FnOnce(E) -> ApiError) -> ApiError {
        use aldea_http::spool::SpoolError;
        match self {
            e @ SpoolError::TooLarge { .. } => ApiError::TooLarge(e.to_string()),
            e @ SpoolError::Idle(_) => ApiError::Timeout(e.to_string()),
            SpoolError::Read(e) => read(e),
            SpoolError::Io(e) => ApiError::Internal(format!("keeping the body: {e}")),
        }
    }
}
