//! HTTP routing and the OpenAI endpoints.
//!
//! Every error leaves as OpenAI's JSON error object with a fitting status code, so SDKs
//! raise their usual exception types. Generation is admitted through a bounded queue:
//! past it, new requests get `429` with `Retry-After` instead of piling up.

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use cocoon_attestation::evidence::{EvidencePayload, PAYLOAD_VERSION};
use cocoon_attestation::report_data::session_binding;
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Full, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{json, Value};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

use crate::config::MeasuredConfig;
use crate::engine::Engine;
use crate::openai::{chat_chunk, chat_completion, finish_reason, ChatCompletionRequest, Usage};

/// Response body type: whole JSON documents or an SSE stream.
pub type Body = UnsyncBoxBody<Bytes, Infallible>;

/// Shared state of the API.
pub struct AppState {
    pub engine: Engine,
    pub config: MeasuredConfig,
    pub admission: Admission,
    /// The evidence provider, for fresh session-bound evidence.
    pub tee: Box<dyn crate::tee::EvidenceProvider>,
    /// The TLS key's SubjectPublicKeyInfo.
    pub spki_der: Vec<u8>,
    /// SHA-384 of the measured config.
    pub config_digest: [u8; 48],
    /// The runtime event log (CBOR) that explains the config register (empty on SEV-SNP).
    pub event_log: Vec<u8>,
}

/// Per-connection facts the handlers need.
#[derive(Clone, Copy)]
pub struct Session {
    /// RFC 9266 `EXPORTER-Channel-Binding` value of this TLS session.
    pub tls_exporter: [u8; 32],
}

/// An OpenAI-style error response.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub kind: &'static str,
    pub code: Option<&'static str>,
    pub param: Option<String>,
    pub retry_after_secs: Option<u64>,
}

impl ApiError {
    pub fn invalid(
        message: impl Into<String>,
        param: Option<String>,
        code: Option<&'static str>,
    ) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            kind: "invalid_request_error",
            code,
            param,
            retry_after_secs: None,
        }
    }

    fn new(
        status: StatusCode,
        kind: &'static str,
        code: Option<&'static str>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            status,
            message: message.into(),
            kind,
            code,
            param: None,
            retry_after_secs: None,
        }
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

    pub fn into_response(self) -> Response<Body> {
        let mut response = json_response(self.status, &self.body());
        if let Some(secs) = self.retry_after_secs {
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed_unsync()
}

fn json_response(status: StatusCode, value: &Value) -> Response<Body> {
    let mut response = Response::new(full(value.to_string()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// Bounded admission: `max_running` generate at once, `max_waiting` more may queue.
pub struct Admission {
    permits: Arc<Semaphore>,
    waiting: AtomicUsize,
    max_waiting: usize,
}

struct WaitingGuard<'a>(&'a AtomicUsize);

impl Drop for WaitingGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Admission {
    pub fn new(max_running: usize, max_waiting: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(max_running.max(1))),
            waiting: AtomicUsize::new(0),
            max_waiting,
        }
    }

    /// A slot to generate in, waiting in the queue if there is room in it.
    pub async fn admit(&self) -> Result<OwnedSemaphorePermit, ApiError> {
        if let Ok(permit) = self.permits.clone().try_acquire_owned() {
            return Ok(permit);
        }
        if self.waiting.fetch_add(1, Ordering::SeqCst) >= self.max_waiting {
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            let mut err = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                Some("server_busy"),
                "the server is at its concurrency limit and its queue is full; retry later",
            );
            err.retry_after_secs = Some(2);
            return Err(err);
        }
        let _guard = WaitingGuard(&self.waiting);
        self.permits.clone().acquire_owned().await.map_err(|_| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                Some("shutting_down"),
                "the server is shutting down",
            )
        })
    }
}

/// Routes one request.
pub async fn handle(
    state: Arc<AppState>,
    session: Session,
    request: Request<Incoming>,
) -> Response<Body> {
    let path = request.uri().path().to_string();
    let method = request.method().clone();
    let result = match (method.clone(), path.as_str()) {
        (Method::GET, "/healthz") => Ok(health(&state)),
        (Method::GET, "/v1/models") => Ok(models(&state)),
        (Method::GET, p) if p.starts_with("/v1/models/") => {
            model(&state, &p["/v1/models/".len()..])
        }
        (Method::POST, "/v1/chat/completions") => chat(state, request).await,
        (Method::POST, "/v1/attestation") => attestation(state, session, request).await,
        (Method::GET, "/v1/attestation/config") => Ok(measured_config(&state)),
        (
            _,
            "/healthz"
            | "/v1/models"
            | "/v1/chat/completions"
            | "/v1/attestation"
            | "/v1/attestation/config",
        ) => Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "invalid_request_error",
            Some("method_not_allowed"),
            format!("{method} is not allowed on {path}"),
        )),
        _ => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            Some("unknown_url"),
            format!("Unknown request URL: {method} {path}"),
        )),
    };
    result.unwrap_or_else(ApiError::into_response)
}

fn health(state: &AppState) -> Response<Body> {
    json_response(
        StatusCode::OK,
        &json!({
            "status": "ok",
            "model": state.engine.id,
            "tee": state.tee.kind().tee_name(),
            "simulated": state.tee.kind().is_simulated(),
        }),
    )
}

fn model_object(state: &AppState) -> Value {
    json!({
        "id": state.engine.id,
        "object": "model",
        "created": state.engine.created,
        "owned_by": "cocoon",
    })
}

fn models(state: &AppState) -> Response<Body> {
    json_response(
        StatusCode::OK,
        &json!({"object": "list", "data": [model_object(state)]}),
    )
}

fn model_not_found(model: &str) -> ApiError {
    ApiError {
        status: StatusCode::NOT_FOUND,
        message: format!("The model `{model}` does not exist or you do not have access to it."),
        kind: "invalid_request_error",
        code: Some("model_not_found"),
        param: Some("model".into()),
        retry_after_secs: None,
    }
}

fn model(state: &AppState, id: &str) -> Result<Response<Body>, ApiError> {
    if id == state.engine.id {
        Ok(json_response(StatusCode::OK, &model_object(state)))
    } else {
        Err(model_not_found(id))
    }
}

async fn read_body(state: &AppState, request: Request<Incoming>) -> Result<Bytes, ApiError> {
    let limit = state.config.limits.max_body_bytes;
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            Some("request_too_large"),
            format!("the request body is larger than this server's limit of {limit} bytes"),
        )
    };
    let declared = request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(too_large());
    }
    let collected = tokio::time::timeout(
        Duration::from_secs(state.config.limits.request_timeout_secs),
        Limited::new(request.into_body(), limit).collect(),
    )
    .await
    .map_err(|_| {
        ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "invalid_request_error",
            Some("timeout"),
            "the request body did not arrive in time",
        )
    })?;
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

/// Turns a serde error into an OpenAI-style 400 naming the parameter.
fn schema_error(e: &serde_json::Error) -> ApiError {
    let text = e.to_string();
    let quoted = text.split('`').nth(1).map(str::to_string);
    if text.starts_with("missing field") {
        let p = quoted.unwrap_or_default();
        ApiError::invalid(
            format!("Missing required parameter: '{p}'."),
            Some(p),
            Some("missing_required_parameter"),
        )
    } else if text.starts_with("unknown field") {
        let p = quoted.unwrap_or_default();
        ApiError::invalid(
            format!("Unrecognized request argument supplied: {p} (this server rejects parameters it does not implement)"),
            Some(p),
            Some("unknown_parameter"),
        )
    } else {
        ApiError::invalid(
            format!("Invalid request: {text}"),
            None,
            Some("invalid_type"),
        )
    }
}

fn engine_error(e: mistralrs::error::Error) -> ApiError {
    match e {
        mistralrs::error::Error::RequestValidation(message) => {
            ApiError::invalid(message, Some("messages".into()), Some("invalid_value"))
        }
        other => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            Some("engine_error"),
            format!("the inference engine failed: {other}"),
        ),
    }
}

fn timeout_error(secs: u64) -> ApiError {
    ApiError::new(
        StatusCode::GATEWAY_TIMEOUT,
        "server_error",
        Some("timeout"),
        format!("generation took longer than this server's limit of {secs} s"),
    )
}

/// `POST /v1/attestation {"nonce": "<hex, 16 to 64 bytes>"}`: fresh evidence whose
/// REPORTDATA binds the certificate key, the config digest, the nonce and this TLS
/// session's exporter. Nothing is cached: every call asks the TEE anew.
async fn attestation(
    state: Arc<AppState>,
    session: Session,
    request: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let internal = |e: String| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            Some("evidence_error"),
            e,
        )
    };
    let body = read_body(&state, request).await?;
    let value: Value = serde_json::from_slice(&body).map_err(|e| {
        ApiError::invalid(
            format!("the body must be JSON {{\"nonce\": \"<hex>\"}}: {e}"),
            None,
            Some("invalid_json"),
        )
    })?;
    let nonce_hex = value.get("nonce").and_then(Value::as_str).ok_or_else(|| {
        ApiError::invalid(
            "Missing required parameter: 'nonce' (hex string).",
            Some("nonce".into()),
            Some("missing_required_parameter"),
        )
    })?;
    let nonce = hex::decode(nonce_hex)
        .ok()
        .filter(|n| (16..=64).contains(&n.len()))
        .ok_or_else(|| {
            ApiError::invalid(
                "'nonce' must be 16 to 64 bytes, hex-encoded.",
                Some("nonce".into()),
                Some("invalid_value"),
            )
        })?;
    if value.as_object().is_some_and(|m| m.len() > 1) {
        return Err(ApiError::invalid(
            "only 'nonce' is accepted",
            None,
            Some("unknown_parameter"),
        ));
    }
    let report_data = session_binding(
        &state.spki_der,
        &state.config_digest,
        &nonce,
        &session.tls_exporter,
    );
    let provider = state.clone();
    let evidence = tokio::task::spawn_blocking(move || provider.tee.evidence(&report_data))
        .await
        .map_err(|e| internal(e.to_string()))?
        .map_err(|e| internal(e.to_string()))?;
    let payload = EvidencePayload {
        version: PAYLOAD_VERSION,
        kind: state.tee.kind(),
        evidence,
        event_log: state.event_log.clone(),
        config_digest: state.config_digest.to_vec(),
        gpu_evidence_digest: None,
    };
    let cbor = payload.to_cbor().map_err(|e| internal(e.to_string()))?;
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "object": "attestation",
            "nonce": nonce_hex.to_ascii_lowercase(),
            "evidence": base64::engine::general_purpose::STANDARD.encode(cbor),
        }),
    ))
}

/// `GET /v1/attestation/config`: the measured config document, byte for byte as hashed,
/// so a client can check SHA-384(body) against the digest the evidence commits to.
fn measured_config(state: &AppState) -> Response<Body> {
    let mut response = Response::new(full(state.config.canonical_json()));
    let headers = response.headers_mut();
    headers.insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    if let Ok(v) = hyper::header::HeaderValue::from_str(&hex::encode(state.config_digest)) {
        headers.insert("x-cocoon-config-sha384", v);
    }
    response
}

async fn chat(
    state: Arc<AppState>,
    request: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let body = read_body(&state, request).await?;
    let value: Value = serde_json::from_slice(&body).map_err(|e| {
        ApiError::invalid(
            format!("We could not parse the JSON body of your request: {e}. The body must be a JSON object."),
            None,
            Some("invalid_json"),
        )
    })?;
    if !value.is_object() {
        return Err(ApiError::invalid(
            "The request body must be a JSON object.",
            None,
            Some("invalid_json"),
        ));
    }
    let parsed: ChatCompletionRequest =
        serde_json::from_value(value).map_err(|e| schema_error(&e))?;
    if parsed.model != state.engine.id {
        return Err(model_not_found(&parsed.model));
    }
    let limits = &state.config.limits;
    let prepared = parsed
        .prepare(limits.default_max_tokens, limits.max_tokens_limit)
        .map_err(|e| {
            ApiError::invalid(
                e.message,
                e.param.map(str::to_string),
                Some("invalid_value"),
            )
        })?;
    let permit = state.admission.admit().await?;
    let id = format!("chatcmpl-{}", uuid::Uuid::new_v4().simple());
    let created = unix_now();
    let timeout = Duration::from_secs(limits.request_timeout_secs);
    if !prepared.stream {
        let response = tokio::time::timeout(
            timeout,
            state.engine.model.send_chat_request(prepared.builder),
        )
        .await
        .map_err(|_| timeout_error(limits.request_timeout_secs))?
        .map_err(engine_error)?;
        drop(permit);
        let document = chat_completion(&id, &state.engine.id, created, &response);
        return Ok(json_response(StatusCode::OK, &document));
    }
    stream_chat(state.clone(), prepared, permit, id, created, timeout).await
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn sse(value: &Value) -> Bytes {
    Bytes::from(format!("data: {value}\n\n"))
}

/// Starts generation, waits for the first engine event (so request errors still get a
/// proper status), then streams Server-Sent Events. When the client goes away the body
/// is dropped, the channel closes, the task stops reading and the engine cancels the
/// sequence.
async fn stream_chat(
    state: Arc<AppState>,
    prepared: crate::openai::PreparedChat,
    permit: OwnedSemaphorePermit,
    id: String,
    created: u64,
    timeout: Duration,
) -> Result<Response<Body>, ApiError> {
    let (first_tx, first_rx) = tokio::sync::oneshot::channel::<Result<(), ApiError>>();
    let (tx, rx) = mpsc::channel::<Bytes>(32);
    let secs = timeout.as_secs();
    tokio::spawn(async move {
        let _permit = permit;
        let deadline = tokio::time::Instant::now() + timeout;
        let model_id = state.engine.id.clone();
        let mut stream = match state
            .engine
            .model
            .stream_chat_request(prepared.builder)
            .await
        {
            Ok(s) => s,
            Err(e) => {
                let _ = first_tx.send(Err(engine_error(e)));
                return;
            }
        };
        let first = match tokio::time::timeout_at(deadline, stream.next()).await {
            Err(_) => Err(timeout_error(secs)),
            Ok(None) => Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                Some("engine_error"),
                "the engine closed the stream before producing anything",
            )),
            Ok(Some(r)) => match r.as_result() {
                Ok(ok) => Ok(ok),
                Err(e) => Err(engine_error(mistralrs::error::Error::from(e))),
            },
        };
        let first = match first {
            Ok(first) => first,
            Err(e) => {
                let _ = first_tx.send(Err(e));
                return;
            }
        };
        if first_tx.send(Ok(())).is_err() {
            return;
        }
        let include_usage = prepared.include_usage;
        let usage_field = |u: Option<Value>| {
            if include_usage {
                Some(u.unwrap_or(Value::Null))
            } else {
                None
            }
        };
        let role_choices = (0..prepared.n)
            .map(|i| json!({"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": null, "finish_reason": null}))
            .collect();
        if tx
            .send(sse(&chat_chunk(
                &id,
                &model_id,
                created,
                role_choices,
                usage_field(None),
            )))
            .await
            .is_err()
        {
            return;
        }
        let mut usage: Option<Usage> = None;
        let mut finished = 0usize;
        let mut next = Some(Ok(first));
        loop {
            let event = match next.take() {
                Some(e) => e,
                None => match tokio::time::timeout_at(deadline, stream.next()).await {
                    Err(_) => {
                        let _ = tx.send(sse(&timeout_error(secs).body())).await;
                        break;
                    }
                    Ok(None) => break,
                    Ok(Some(r)) => r
                        .as_result()
                        .map_err(|e| engine_error(mistralrs::error::Error::from(e))),
                },
            };
            let chunk = match event {
                Ok(mistralrs::ResponseOk::Chunk(chunk)) => chunk,
                Ok(_) => continue,
                Err(e) => {
                    let _ = tx.send(sse(&e.body())).await;
                    break;
                }
            };
            if let Some(u) = &chunk.usage {
                usage = Some(Usage::from(u));
            }
            let choices: Vec<Value> = chunk
                .choices
                .iter()
                .map(|c| {
                    if c.finish_reason.is_some() {
                        finished += 1;
                    }
                    let mut delta = serde_json::Map::new();
                    if let Some(content) = &c.delta.content {
                        delta.insert("content".into(), content.clone().into());
                    }
                    json!({
                        "index": c.index,
                        "delta": delta,
                        "logprobs": null,
                        "finish_reason": c.finish_reason.as_deref().map(finish_reason),
                    })
                })
                .collect();
            if tx
                .send(sse(&chat_chunk(
                    &id,
                    &model_id,
                    created,
                    choices,
                    usage_field(None),
                )))
                .await
                .is_err()
            {
                return; // client gone: dropping `stream` cancels the sequence
            }
            if finished >= prepared.n {
                break;
            }
        }
        if include_usage {
            let usage = serde_json::to_value(usage.unwrap_or_default()).unwrap_or(Value::Null);
            if tx
                .send(sse(&chat_chunk(
                    &id,
                    &model_id,
                    created,
                    vec![],
                    Some(usage),
                )))
                .await
                .is_err()
            {
                return;
            }
        }
        let _ = tx.send(Bytes::from_static(b"data: [DONE]\n\n")).await;
    });
    match first_rx.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e),
        Err(_) => {
            return Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                Some("engine_error"),
                "the generation task ended unexpectedly",
            ))
        }
    }
    let frames = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|bytes| (Ok::<_, Infallible>(Frame::data(bytes)), rx))
    });
    let mut response = Response::new(BodyExt::boxed_unsync(StreamBody::new(frames)));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert("cache-control", HeaderValue::from_static("no-cache"));
    Ok(response)
}
