//! What the services' OpenAPI documents share (feature `openapi`): every operation's errors are the
//! error body, and a document is serialized once per process.

use std::sync::OnceLock;

use utoipa::openapi::{ContentBuilder, OpenApi, Ref, RefOr, ResponseBuilder};

/// Gives every operation of `openapi` that lists no `default` answer the error body
/// ([`crate::ErrorBody`], which must be among its schemas) as `default`, described by `description`.
pub fn default_error_responses(openapi: &mut OpenApi, description: &str) {
    let error = ResponseBuilder::new()
        .description(description)
        .content("application/json", ContentBuilder::new().schema(Some(Ref::from_schema_name("ErrorBody"))).build())
        .build();
    for item in openapi.paths.paths.values_mut() {
        let operations = [&mut item.get, &mut item.post, &mut item.put, &mut item.patch, &mut item.delete];
        for operation in operations.into_iter().flatten() {
            operation.responses.responses.entry("default".to_owned()).or_insert_with(|| RefOr::T(error.clone()));
        }
    }
}

/// The document `build` makes, as JSON, made once into `cell`; `Err` with why it could not be.
pub fn json_once(
    cell: &'static OnceLock<Result<String, String>>,
    build: fn() -> OpenApi,
) -> Result<&'static str, String> {
    cell.get_or_init(|| build().to_pretty_json().map_err(|e| e.to_string())).as_deref().map_err(Clone::clone)
}
