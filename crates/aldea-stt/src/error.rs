//! One error type that becomes the HTTP answer in the contract's form
//! (`{"err_code","err_msg","request_id"}`), with the status the contract gives each kind.

use aldea_audio::AudioError;
use aldea_proto::{codes, ErrorBody};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("missing or invalid service token")]
    Unauthorized,
    #[error("{0}")]
    TooLarge(String),
    #[error("{0}")]
    Unsupported(String),
    #[error("{0}")]
    Timeout(String),
    #[error("{0}")]
    NoCapacity(String),
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Unsupported(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Timeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::NoCapacity(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => codes::BAD_REQUEST,
            ApiError::Unauthorized => codes::INVALID_AUTH,
            ApiError::TooLarge(_) => codes::PAYLOAD_TOO_LARGE,
            ApiError::Unsupported(_) => codes::UNSUPPORTED_AUDIO,
            ApiError::Timeout(_) => codes::REQUEST_TIMEOUT,
            ApiError::NoCapacity(_) => codes::NO_CAPACITY,
            ApiError::Internal(_) => codes::INTERNAL,
        }
    }

    /// The answer, with the request id in the body (the middleware sets the headers).
    pub fn with_request_id(self, request_id: &str) -> Response {
        let status = self.status();
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
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert("retry-after", HeaderValue::from_static("1"));
        }
        response
    }
}

impl From<AudioError> for ApiError {
    fn from(e: AudioError) -> ApiError {
        match e {
            AudioError::TooLarge { .. } | AudioError::TooLong { .. } => ApiError::TooLarge(e.to_string()),
            AudioError::InvalidParams(_) => ApiError::BadRequest(e.to_string()),
            // Reading a spooled body back failing is this service's fault, not the audio's.
            AudioError::Resample(_) | AudioError::Io(_) => ApiError::Internal(e.to_string()),
            AudioError::Empty | AudioError::Unsupported(_) | AudioError::Corrupt(_) => {
                ApiError::Unsupported(e.to_string())
            }
        }
    }
}

/// An error on its way out of a handler, with the request's id.
#[derive(Debug)]
pub struct Failure {
    pub request_id: String,
    pub error: ApiError,
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        self.error.with_request_id(&self.request_id)
    }
}

impl From<aldea_http::spool::SpoolError<axum::Error>> for ApiError {
    fn from(e: aldea_http::spool::SpoolError<axum::Error>) -> ApiError {
        use aldea_http::spool::SpoolError;
        match e {
            e @ SpoolError::TooLarge { .. } => ApiError::TooLarge(e.to_string()),
            e @ SpoolError::Idle(_) => ApiError::Timeout(e.to_string()),
            e @ SpoolError::Read(_) => ApiError::BadRequest(e.to_string()),
            SpoolError::Io(e) => ApiError::Internal(format!("keeping the body: {e}")),
        }
    }
}
