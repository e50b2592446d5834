//! The one shape every API failure leaves in: OpenAI's `{"error": {...}}` object with a
//! fitting status code, so SDKs raise their usual exception types.
//!
//! One constructor per kind of failure keeps status, `type` and `code` consistent
//! across handlers instead of each call site spelling them out.

use hyper::header::HeaderValue;
use hyper::StatusCode;
use serde_json::{json, Value};

use crate::engine::generate::GenerateError;

/// An OpenAI-style error response.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub kind: &'static str,
    pub code: Option<&'static str>,
    pub param: Option<String>,
    pub retry_after_secs: Option<u64>,
    /// The methods the path allows (`Allow`, with a 405).
    pub allow: Option<Box<str>>,
}

impl ApiError {
    fn new(
        status: StatusCode,
        kind: &'static str,
        code: Option<&'static str>,
        param: Option<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            status,
            message: message.into(),
            kind,
            code,
            param,
            retry_after_secs: None,
            allow: None,
        }
    }

    /// 400: the request is wrong; `param` names the offending parameter when known.
    pub fn invalid(
        message: impl Into<String>,
        param: Option<String>,
        code: Option<&'static str>,
    ) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            code,
            param,
            message,
        )
    }

    /// 400 `context_length_exceeded`: the prompt has more tokens than this server takes.
    pub fn context_length_exceeded(param: &str, limit: usize, tokens: usize) -> Self {
        Self::invalid(
            format!(
                "This server's maximum prompt length is {limit} tokens. However, your {param} \
                 resulted in {tokens} tokens. Please reduce the length of the {param}."
            ),
            Some(param.to_string()),
            Some("context_length_exceeded"),
        )
    }

    /// 404 for a model this server does not serve.
    pub fn model_not_found(model: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            Some("model_not_found"),
            Some("model".into()),
            format!("The model `{model}` does not exist or you do not have access to it."),
        )
    }

    /// 404 for a path nothing is served at.
    pub fn unknown_url(method: &hyper::Method, path: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            Some("unknown_url"),
            None,
            format!("Unknown request URL: {method} {path}"),
        )
    }

    /// 404 `gpu_not_configured`: `GET /v1/attestation/gpu` on a guest without a GPU.
    pub fn gpu_not_configured() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            Some("gpu_not_configured"),
            None,
            "this guest serves from the CPU: it has no GPU evidence (its attestation binds none)",
        )
    }

    /// 405 for a known path with the wrong method; `allowed` are the path's methods.
    pub fn method_not_allowed(
        method: &hyper::Method,
        path: &str,
        allowed: &[hyper::Method],
    ) -> Self {
        let mut err = Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "invalid_request_error",
            Some("method_not_allowed"),
            None,
            format!("{method} is not allowed on {path}"),
        );
        let allowed: Vec<&str> = allowed.iter().map(hyper::Method::as_str).collect();
        err.allow = Some(allowed.join(", ").into());
        err
    }

    /// 408: the request body did not arrive in time.
    pub fn body_timeout() -> Self {
        Self::new(
            StatusCode::REQUEST_TIMEOUT,
            "invalid_request_error",
            Some("timeout"),
            None,
            "the request body did not arrive in time",
        )
    }

    /// 413: the request body is over the limit.
    pub fn too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            Some("request_too_large"),
            None,
            format!("the request body is larger than this server's limit of {limit} bytes"),
        )
    }

    /// 429 with `Retry-After`: the admission queue is full.
    pub fn busy(retry_after_secs: u64) -> Self {
        let mut err = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_error",
            Some("server_busy"),
            None,
            "the server is at its concurrency limit and its queue is full; retry later",
        );
        err.retry_after_secs = Some(retry_after_secs);
        err
    }

    /// 429 `kv_capacity` with `Retry-After`: the KV cache stayed too full for the
    /// request's worst case during its whole wait (`crate::kv`).
    pub fn kv_busy(waited_secs: u64, retry_after_secs: u64) -> Self {
        let mut err = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_error",
            Some("kv_capacity"),
            None,
            format!(
                "the server's KV cache has no room for this request's prompt and max_tokens \
                 (waited {waited_secs} s); retry later, or ask for fewer max_tokens"
            ),
        );
        err.retry_after_secs = Some(retry_after_secs);
        err
    }

    /// 400 `context_length_exceeded`: the request's worst case (prompt + `max_tokens` for
    /// every sequence) is more than the whole KV cache holds, so it could never run.
    pub fn kv_never_fits(param: &str, needed_tokens: usize, capacity_tokens: usize) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            Some("context_length_exceeded"),
            Some(param.to_string()),
            format!(
                "This server's KV cache holds {capacity_tokens} tokens. However, you requested \
                 {needed_tokens} tokens (the {param} plus max_tokens for every choice, each \
                 rounded up to whole KV blocks). Please reduce the length of the {param}, max_tokens \
                 or n."
            ),
        )
    }

    /// 500: something inside the server failed; `code` says what.
    pub fn internal(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            Some(code),
            None,
            message,
        )
    }

    /// 403: the internal API is off (no host token configured).
    pub fn internal_api_disabled() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "invalid_request_error",
            Some("internal_api_disabled"),
            None,
            "the internal API is disabled: start the guest with --host-token-file",
        )
    }

    /// 401: a missing or wrong bearer token on the internal API.
    pub fn invalid_host_token() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            Some("invalid_host_token"),
            None,
            "missing or wrong bearer token for the internal API",
        )
    }

    /// 401 `account_not_proven`: the request names an account without a valid proof of it
    /// in this TLS session, or names none where anonymous use is off.
    pub fn account_not_proven(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            Some("account_not_proven"),
            None,
            message,
        )
    }

    /// 503 `account_limit`: this boot serves no more new accounts.
    pub fn account_limit(max_accounts: usize) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "server_error",
            Some("account_limit"),
            None,
            format!(
                "this guest serves at most {max_accounts} accounts per boot and has no room \
                 for a new one; accounts it already serves are unaffected"
            ),
        )
    }

    /// 429 with `Retry-After`: no evidence slot came free within the wait.
    pub fn evidence_busy(wait_secs: u64) -> Self {
        let mut err = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_error",
            Some("server_busy"),
            None,
            format!("no evidence slot came free within {wait_secs} s; retry later"),
        );
        err.retry_after_secs = Some(1);
        err
    }

    /// 429 `evidence_limit` (no `Retry-After`: retrying on this connection cannot help):
    /// the connection has used up its evidence calls.
    pub fn evidence_limit(per_connection: usize) -> Self {
        Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_error",
            Some("evidence_limit"),
            None,
            format!(
                "a connection may ask for session evidence {per_connection} times; open a \
                 new TLS session for more"
            ),
        )
    }

    /// 503: the server is shutting down.
    pub fn shutting_down() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "server_error",
            Some("shutting_down"),
            None,
            "the server is shutting down",
        )
    }

    /// 503 with `Retry-After`: the host agent has stopped collecting usage receipts, and
    /// work served now could not be billed.
    pub fn billing_backlog(retry_after_secs: u64) -> Self {
        let mut err = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "server_error",
            Some("billing_backlog"),
            None,
            "usage receipts are not being collected by the operator; new requests are \
             paused until they are",
        );
        err.retry_after_secs = Some(retry_after_secs);
        err
    }

    /// 400 `invalid_escrow_authorization`: the `x-cocoon-escrow-authorization` header is
    /// malformed, not signed by the account key, or authorizes another escrow or key.
    pub fn invalid_escrow_authorization(detail: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            Some("invalid_escrow_authorization"),
            Some(crate::escrow::AUTHORIZATION_HEADER.into()),
            format!("{}: {detail}", crate::escrow::AUTHORIZATION_HEADER),
        )
    }

    /// 402 `escrow_authorization_required`: this guest bills through escrows and holds no
    /// authorization of its key by the account.
    pub fn escrow_authorization_required() -> Self {
        Self::new(
            StatusCode::PAYMENT_REQUIRED,
            "insufficient_quota",
            Some("escrow_authorization_required"),
            None,
            format!(
                "this guest is paid through the account's escrow contract: send {} (the \
                 account key's signed authorization of this guest's receipt key); \
                 `cocoon-client proxy --account-key FILE --spend-cap TON` does it after \
                 verifying the guest",
                crate::escrow::AUTHORIZATION_HEADER
            ),
        )
    }

    /// 402 `insufficient_quota`: the escrow does not cover this request.
    pub fn insufficient_credit(detail: &str) -> Self {
        Self::new(
            StatusCode::PAYMENT_REQUIRED,
            "insufficient_quota",
            Some("insufficient_quota"),
            None,
            format!("the account's escrow does not cover this request: {detail}"),
        )
    }

    /// 503 with `Retry-After`: the operator's host has not reported the escrow's on-chain
    /// state, without which the guest cannot tell what the escrow covers.
    pub fn escrow_state_unknown(escrow: &str, waited_secs: u32) -> Self {
        let mut err = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "server_error",
            Some("escrow_state_unknown"),
            None,
            format!(
                "the operator has not reported the state of escrow {escrow} within \
                 {waited_secs} s; retry later"
            ),
        );
        err.retry_after_secs = Some(5);
        err
    }

    /// The response for a request the escrow rules refuse.
    pub fn escrow_refusal(refusal: crate::escrow::Refusal) -> Self {
        use crate::escrow::Refusal;
        match refusal {
            Refusal::BadAuthorization(detail) => Self::invalid_escrow_authorization(&detail),
            Refusal::NoAuthorization => Self::escrow_authorization_required(),
            Refusal::StateUnknown {
                escrow,
                waited_secs,
            } => Self::escrow_state_unknown(&escrow, waited_secs),
            Refusal::Credit(detail) => Self::insufficient_credit(&detail),
            Refusal::Internal(detail) => Self::internal("escrow_error", detail),
        }
    }

    /// 504: generation ran past the request time limit.
    pub fn generation_timeout(secs: u64) -> Self {
        Self::new(
            StatusCode::GATEWAY_TIMEOUT,
            "server_error",
            Some("timeout"),
            None,
            format!("generation took longer than this server's limit of {secs} s"),
        )
    }

    /// 408: a streaming client did not take its events as fast as the engine made them
    /// (its buffer overflowed, or it made no progress within the stall timeout); the
    /// generation was cancelled so that it holds no engine capacity.
    pub fn client_too_slow() -> Self {
        Self::new(
            StatusCode::REQUEST_TIMEOUT,
            "invalid_request_error",
            Some("client_too_slow"),
            None,
            "the client did not read the stream fast enough; the generation was cancelled",
        )
    }

    /// 503: the engine has made no progress for longer than its bound (see `/healthz`).
    pub fn engine_stalled(silent_secs: u64) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "server_error",
            Some("engine_stalled"),
            None,
            format!("the inference engine has made no progress for {silent_secs} s"),
        )
    }

    /// The `{"error": {...}}` document.
    pub fn body(&self) -> Value {
        json!({
            "error": {
                "message": self.message,
                "type": self.kind,
                "param": self.param,
                "code": self.code,
            }
        })
    }

    /// `Retry-After`, when the error carries one.
    pub fn retry_after(&self) -> Option<HeaderValue> {
        self.retry_after_secs.map(HeaderValue::from)
    }
}

/// The engine's failures at the edge: each kind gets its status code here, so the
/// engine never sees HTTP.
impl From<GenerateError> for ApiError {
    fn from(e: GenerateError) -> Self {
        match e {
            GenerateError::Engine(message) => Self::internal("engine_error", message),
            GenerateError::Invalid {
                message,
                param,
                code,
            } => Self::invalid(message, Some(param.into()), Some(code)),
            GenerateError::Timeout { secs } => Self::generation_timeout(secs),
            GenerateError::ClientTooSlow => Self::client_too_slow(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_its_status_type_and_code() {
        let cases = [
            (
                ApiError::invalid("m", Some("p".into()), Some("c")),
                400,
                "invalid_request_error",
            ),
            (
                ApiError::context_length_exceeded("messages", 4, 9),
                400,
                "invalid_request_error",
            ),
            (ApiError::model_not_found("x"), 404, "invalid_request_error"),
            (
                ApiError::unknown_url(&hyper::Method::GET, "/x"),
                404,
                "invalid_request_error",
            ),
            (
                ApiError::method_not_allowed(&hyper::Method::PUT, "/x", &[hyper::Method::GET]),
                405,
                "invalid_request_error",
            ),
            (ApiError::body_timeout(), 408, "invalid_request_error"),
            (ApiError::too_large(1), 413, "invalid_request_error"),
            (ApiError::busy(2), 429, "rate_limit_error"),
            (ApiError::kv_busy(5, 5), 429, "rate_limit_error"),
            (
                ApiError::kv_never_fits("messages", 600, 512),
                400,
                "invalid_request_error",
            ),
            (ApiError::internal("engine_error", "x"), 500, "server_error"),
            (ApiError::shutting_down(), 503, "server_error"),
            (ApiError::billing_backlog(30), 503, "server_error"),
            (
                ApiError::internal_api_disabled(),
                403,
                "invalid_request_error",
            ),
            (ApiError::invalid_host_token(), 401, "invalid_request_error"),
            (
                ApiError::account_not_proven("m"),
                401,
                "invalid_request_error",
            ),
            (ApiError::account_limit(3), 503, "server_error"),
            (ApiError::evidence_busy(10), 429, "rate_limit_error"),
            (ApiError::evidence_limit(4), 429, "rate_limit_error"),
            (ApiError::generation_timeout(5), 504, "server_error"),
            (ApiError::client_too_slow(), 408, "invalid_request_error"),
            (ApiError::engine_stalled(9), 503, "server_error"),
        ];
        for (err, status, kind) in cases {
            assert_eq!(err.status.as_u16(), status, "{err:?}");
            let body = err.body();
            assert_eq!(body["error"]["type"], kind);
            assert!(body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()));
        }
        let ctx = ApiError::context_length_exceeded("messages", 4, 9).body();
        assert_eq!(ctx["error"]["code"], "context_length_exceeded");
        assert_eq!(ctx["error"]["param"], "messages");
        assert!(ctx["error"]["message"]
            .as_str()
            .unwrap()
            .contains("9 tokens"));
        assert_eq!(
            ApiError::busy(2).retry_after(),
            Some(HeaderValue::from(2u64))
        );
        let kv = ApiError::kv_busy(0, 1);
        assert_eq!(kv.code, Some("kv_capacity"));
        assert_eq!(kv.retry_after(), Some(HeaderValue::from(1u64)));
        let never = ApiError::kv_never_fits("prompt", 600, 512).body();
        assert_eq!(never["error"]["code"], "context_length_exceeded");
        assert_eq!(never["error"]["param"], "prompt");
        let message = never["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("holds 512 tokens") && message.contains("600"),
            "{message}"
        );
    }

    #[test]
    fn generation_errors_get_their_status_at_the_edge() {
        let cases = [
            (
                GenerateError::Engine("boom".into()),
                500,
                Some("engine_error"),
            ),
            (
                GenerateError::Invalid {
                    message: "Invalid grammar".into(),
                    param: "response_format",
                    code: "invalid_value",
                },
                400,
                Some("invalid_value"),
            ),
            (GenerateError::Timeout { secs: 5 }, 504, Some("timeout")),
            (GenerateError::ClientTooSlow, 408, Some("client_too_slow")),
        ];
        for (e, status, code) in cases {
            let message = e.to_string();
            let api = ApiError::from(e);
            assert_eq!((api.status.as_u16(), api.code), (status, code));
            assert_eq!(api.message, message);
        }
    }
}
