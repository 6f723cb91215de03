//! `GET /openapi.json`: the OpenAPI 3.1 document of the public platform API, generated from the
//! handlers' `#[utoipa::path]` annotations and the request and response types they use. The
//! internal API (`/internal/…`, service to service) is not in it.

use std::sync::OnceLock;

use aldea_proto::ErrorBody;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::{admin, api, metrics, usage};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Aldea platform API",
        description = "People, organizations, API keys, usage and credit of an Aldea deployment. Every error \
                       answers with the Speech API's error body `{err_code, err_msg, request_id}`. A session \
                       authenticates with `Authorization: Bearer <token>` or the `aldea_session` cookie (then \
                       state-changing requests carry `X-CSRF-Token`, the `aldea_csrf` cookie's value); an API key \
                       with the `manage` scope with `Authorization: Token <key>`."
    ),
    paths(
        api::signup, api::login, api::logout, admin::reset_password, api::me,
        api::list_orgs, api::create_org, api::get_org, api::rename_org,
        api::list_keys, api::create_key, api::revoke_key, api::rotate_key, api::listen_token,
        usage::usage, usage::usage_csv, usage::requests,
        api::list_members, api::add_member, api::remove_member,
        api::balance, admin::add_credits,
        api::live, api::ready, metrics::metrics,
    ),
    components(schemas(ErrorBody)),
    modifiers(&Common),
    tags(
        (name = "auth", description = "Sign-up, log-in and sessions"),
        (name = "organizations"),
        (name = "keys", description = "API keys for the Speech API (`listen`) and this API (`manage`)"),
        (name = "usage", description = "Audio seconds and requests, from the gateways' usage events"),
        (name = "members"),
        (name = "billing"),
        (name = "probes", description = "For the orchestrator"),
    )
)]
struct PlatformApi;

/// What every operation shares: the ways to authenticate, and the error body of every status the
/// operation does not list (`default`).
struct Common;

impl Modify for Common {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "session",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("The session token from signup or login"))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "session_cookie",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                "aldea_session",
                "The session cookie login sets; state-changing requests also send X-CSRF-Token",
            ))),
        );
        components.add_security_scheme(
            "manage_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "Authorization",
                "`Token <key>`: an API key with the manage scope",
            ))),
        );
        aldea_proto::openapi::default_error_responses(
            openapi,
            "An error; the status says which (400 bad input, 401 not authenticated, 403 not allowed, 404 not found or not yours, 408 body too slow, 409 conflict, 413 body too large, 415 not JSON, 429 too many, 503 database unavailable)",
        );
    }
}

/// The document as JSON (built once).
fn document_json() -> Result<&'static str, String> {
    static DOCUMENT: OnceLock<Result<String, String>> = OnceLock::new();
    aldea_proto::openapi::json_once(&DOCUMENT, PlatformApi::openapi)
}

pub(crate) async fn document() -> Result<Response, crate::ApiError> {
    let json = document_json().map_err(|e| crate::ApiError::Internal(format!("the OpenAPI document: {e}")))?;
    Ok(([(CONTENT_TYPE, "application/json")], json).into_response())
}
