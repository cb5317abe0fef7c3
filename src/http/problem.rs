//! Errors as `application/problem+json` (RFC 9457): `{"type", "title", "status", "detail",
//! "code"}` in that order, and `current_version` after `code` for a version conflict.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::node::command::code;
use crate::node::Failure;

/// Codes of this front end's own (the protocol's are in [`crate::node::command::code`] and
/// [`crate::domain::code`]).
pub mod codes {
    /// No route, or no such user (`404`).
    pub const NOT_FOUND: &str = "not_found";
    pub const METHOD_NOT_ALLOWED: &str = "method_not_allowed";
    pub const UNAUTHORIZED: &str = "unauthorized";
    pub const PAYLOAD_TOO_LARGE: &str = "payload_too_large";
    pub const HOST_NOT_ALLOWED: &str = "host_not_allowed";
    pub const UNSUPPORTED_MEDIA_TYPE: &str = "unsupported_media_type";
    /// The store failed, or the node is stopping (the protocol's error 13).
    pub const UNAVAILABLE: &str = "unavailable";
}

/// One problem.
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    pub code: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current_version: Option<u64>,
}

impl Problem {
    pub fn new(status: StatusCode, code: &str, detail: impl Into<String>) -> Self {
        Self {
            kind: format!("urn:cqrs-node:problem:{code}"),
            title: status.canonical_reason().unwrap_or("Error").to_string(),
            status: status.as_u16(),
            detail: detail.into(),
            code: code.to_string(),
            current_version: None,
        }
    }

    pub fn malformed(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code::MALFORMED, detail)
    }

    pub fn invalid(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            code::VALIDATION_FAILED,
            detail,
        )
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, codes::NOT_FOUND, detail)
    }

    pub fn unavailable(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, codes::UNAVAILABLE, detail)
    }

    /// A failed command, by its code (`if_match`: the expected version came from `If-Match`,
    /// so a conflict is 412).
    pub fn command(f: Failure, if_match: bool) -> Self {
        let status = match f.code {
            code::VERSION_CONFLICT if if_match => StatusCode::PRECONDITION_FAILED,
            code::VERSION_CONFLICT | "already_exists" => StatusCode::CONFLICT,
            code::MALFORMED | code::UNKNOWN_COMMAND => StatusCode::BAD_REQUEST,
            "not_found" => StatusCode::NOT_FOUND,
            "deleted" => StatusCode::GONE,
            // validation_failed, command_id_reused, and a plug-in's own rejections.
            _ => StatusCode::UNPROCESSABLE_ENTITY,
        };
        let mut p = Self::new(status, f.code, f.error);
        p.current_version = f.current_version;
        p
    }

    /// A query that cannot be answered, by its code.
    pub fn query(f: Failure) -> Self {
        let status = match f.code {
            code::UNKNOWN_QUERY => StatusCode::BAD_REQUEST,
            _ => StatusCode::UNPROCESSABLE_ENTITY,
        };
        Self::new(status, f.code, f.error)
    }

    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

pub const PROBLEM_JSON: &str = "application/problem+json";

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&self).expect("a problem serialises");
        let mut r = (self.status(), body).into_response();
        r.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        r
    }
}
