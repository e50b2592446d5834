//! The admin API's answers: JSON bodies, and errors in the OpenAI shape the rest of
//! Cocoon uses (`{"error":{"message","type","code"}}`, with `param` when a query
//! parameter is at fault), so one client-side parser serves every Cocoon API.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE, WWW_AUTHENTICATE};
use hyper::{Response, StatusCode};
use serde_json::{json, Value};

use super::auth::AuthFailure;

pub(super) type Reply = Response<Full<Bytes>>;

/// A response with `body` of `content_type`.
pub(super) fn with_body(status: StatusCode, content_type: &'static str, body: Bytes) -> Reply {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// 200 with `value` as JSON.
pub(super) fn json(value: &Value) -> Reply {
    with_body(
        StatusCode::OK,
        "application/json",
        Bytes::from(value.to_string()),
    )
}

/// An error answer.
#[derive(Debug)]
pub(super) struct ApiError {
    status: StatusCode,
    kind: &'static str,
    code: &'static str,
    message: String,
    param: Option<&'static str>,
    allow: Option<&'static str>,
}

impl ApiError {
    fn new(status: StatusCode, kind: &'static str, code: &'static str, message: String) -> Self {
        Self {
            status,
            kind,
            code,
            message,
            param: None,
            allow: None,
        }
    }

    pub(super) fn unauthorized(failure: AuthFailure) -> Self {
        let (code, message) = match failure {
            AuthFailure::Missing => (
                "missing_admin_token",
                "admin token required (Authorization: Bearer <token>)",
            ),
            AuthFailure::Invalid => ("invalid_admin_token", "invalid admin token"),
        };
        Self::new(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            code,
            message.into(),
        )
    }

    pub(super) fn not_found(message: String, code: &'static str) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found_error", code, message)
    }

    pub(super) fn method_not_allowed(allow: &'static str) -> Self {
        Self {
            allow: Some(allow),
            ..Self::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "invalid_request_error",
                "method_not_allowed",
                format!("method not allowed here; use {allow}"),
            )
        }
    }

    /// 400 naming the query parameter at fault.
    pub(super) fn bad_parameter(param: &'static str, message: String) -> Self {
        Self {
            param: Some(param),
            ..Self::new(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "invalid_parameter",
                message,
            )
        }
    }

    /// 400 for a query parameter this route does not take (its name is the client's, so
    /// it is in the message, not `param`).
    pub(super) fn unknown_parameter(name: &str, known: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "unknown_parameter",
            format!("unknown query parameter `{name}` (this route takes: {known})"),
        )
    }

    pub(super) fn too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            "body_too_large",
            format!("request body larger than {limit} bytes"),
        )
    }

    pub(super) fn bad_body(message: String) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "invalid_body",
            message,
        )
    }

    pub(super) fn internal(message: String) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "internal_error",
            message,
        )
    }

    /// A backend error: 404 for an unknown guest, 500 with the message for the rest (the
    /// caller holds the admin token, and the message is what they need to act).
    pub(super) fn from_backend(error: crate::Error) -> Self {
        match error {
            crate::Error::UnknownGuest { .. } => {
                Self::not_found(error.to_string(), "unknown_guest")
            }
            crate::Error::NoProof { .. } => Self::not_found(error.to_string(), "no_proof"),
            other => Self::internal(other.to_string()),
        }
    }

    pub(super) fn status(&self) -> StatusCode {
        self.status
    }

    pub(super) fn into_reply(self) -> Reply {
        let mut error = json!({
            "message": self.message,
            "type": self.kind,
            "code": self.code,
        });
        if let Some(param) = self.param {
            error["param"] = json!(param);
        }
        let mut reply = with_body(
            self.status,
            "application/json",
            Bytes::from(json!({ "error": error }).to_string()),
        );
        let headers = reply.headers_mut();
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(allow) = self.allow {
            headers.insert(ALLOW, HeaderValue::from_static(allow));
        }
        reply
    }
}
