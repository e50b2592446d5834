//! Bodies in and out: the response body type, JSON documents and errors as responses,
//! and reading a request body within the limits.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER};
use hyper::{Request, Response, StatusCode};
use serde_json::Value;

use crate::config::Limits;
use crate::http::error::ApiError;

/// Response body type: whole JSON documents or an SSE stream.
pub type Body = UnsyncBoxBody<Bytes, Infallible>;

/// A whole body.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed_unsync()
}

/// `value` as an `application/json` response.
pub fn json_response(status: StatusCode, value: &Value) -> Response<Body> {
    let mut response = Response::new(full(value.to_string()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// An error as its HTTP response.
pub fn error_response(err: ApiError) -> Response<Body> {
    let mut response = json_response(err.status, &err.body());
    if let Some(v) = err.retry_after() {
        response.headers_mut().insert(RETRY_AFTER, v);
    }
    if let Some(v) = err
        .allow
        .as_deref()
        .and_then(|a| HeaderValue::from_str(a).ok())
    {
        response.headers_mut().insert(ALLOW, v);
    }
    response
}

/// The request body, at most `limits.max_body_bytes` (more: 413, also when the declared
/// length says so before anything is read), arriving within `limits.request_timeout_secs`
/// (else 408).
pub async fn read_body(limits: &Limits, request: Request<Incoming>) -> Result<Bytes, ApiError> {
    let limit = limits.max_body_bytes;
    let too_large = || ApiError::too_large(limit);
    let declared = request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(too_large());
    }
    let collected = tokio::time::timeout(
        Duration::from_secs(limits.request_timeout_secs),
        Limited::new(request.into_body(), limit).collect(),
    )
    .await
    .map_err(|_| ApiError::body_timeout())?;
    match collected {
        Ok(body) => Ok(body.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Err(e) => Err(ApiError::invalid(
            format!("could not read the request body: {e}"),
            None,
            None,
        )),
    }
}
