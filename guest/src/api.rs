//! HTTP routing and the OpenAI endpoints.
//!
//! Every error leaves as OpenAI's JSON error object with a fitting status code, so SDKs
//! raise their usual exception types. Generation is admitted through a bounded queue:
//! past it, new requests get `429` with `Retry-After` instead of piling up.
//!
//! A generating request is billed to an account proven in its own TLS session
//! (`cocoon_attestation::account`): [`bill_to`] checks the proof against the exporter the
//! guest computed for the connection, before the body is read, and refuses with 401
//! otherwise. The host's internal API is routed only by [`handle_internal`], which serves
//! the separate internal listener; the public port answers 404 there.

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use cocoon_attestation::account::verify_claim;
use cocoon_attestation::evidence::{EvidencePayload, PAYLOAD_VERSION};
use cocoon_attestation::report_data::session_binding;
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{json, Value};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub use crate::api_error::ApiError;
use crate::config::MeasuredConfig;
use crate::engine::Engine;
use crate::meter::{ACCOUNT_HEADER, ACCOUNT_PROOF_HEADER, ANONYMOUS};

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
    /// Usage metering and receipt signing.
    pub meter: crate::meter::Meter,
    /// The host agent's bearer token for `/internal/…` (`None`: internal API disabled).
    pub host_token: Option<crate::internal_api::HostToken>,
    /// Evidence generations allowed at once for `POST /v1/attestation`; more wait for one
    /// in arrival order (tokio's semaphore is fair) for `limits.evidence_wait_secs`.
    pub evidence_slots: tokio::sync::Semaphore,
    /// Whether the engine makes progress (`/healthz`).
    pub watchdog: Arc<crate::watchdog::EngineWatchdog>,
    /// The tokenizer's end-of-text special tokens (`generate::end_of_text_markers`).
    pub end_of_text: Vec<String>,
}

/// Per-connection facts the handlers need.
#[derive(Clone)]
pub struct Session {
    /// RFC 9266 `EXPORTER-Channel-Binding` value of this TLS session, computed by the
    /// guest's own TLS stack (never taken from a request).
    pub tls_exporter: [u8; 32],
    /// `POST /v1/attestation` calls made on this connection so far.
    evidence_calls: Arc<AtomicUsize>,
}

impl Session {
    /// The facts of a new connection whose TLS session has this exporter.
    pub fn new(tls_exporter: [u8; 32]) -> Self {
        Self {
            tls_exporter,
            evidence_calls: Arc::new(AtomicUsize::new(0)),
        }
    }
}

/// The account a generating request is billed to (a request extension set by
/// [`bill_to`]): an `ed25519:` account id proven in the session, or `anonymous`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BilledAccount(pub String);

/// An error as its HTTP response.
pub(crate) fn error_response(err: ApiError) -> Response<Body> {
    let mut response = json_response(err.status, &err.body());
    if let Some(v) = err.retry_after() {
        response.headers_mut().insert(RETRY_AFTER, v);
    }
    response
}

pub(crate) fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed_unsync()
}

pub(crate) fn json_response(status: StatusCode, value: &Value) -> Response<Body> {
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
            return Err(ApiError::busy(2));
        }
        let _guard = WaitingGuard(&self.waiting);
        self.permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| ApiError::shutting_down())
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
        (Method::GET, "/openapi.json") => Ok(crate::openapi::document(&state)),
        (Method::POST, "/v1/chat/completions") => match bill_to(&state, &session, request) {
            Ok(request) => crate::inference::chat(state, request).await,
            Err(e) => Err(e),
        },
        (Method::POST, "/v1/completions") => match bill_to(&state, &session, request) {
            Ok(request) => crate::inference::completions(state, request).await,
            Err(e) => Err(e),
        },
        (Method::POST, "/v1/embeddings") => crate::inference::embeddings(state, request).await,
        (Method::POST, "/v1/attestation") => attestation(state, session, request).await,
        (Method::GET, "/v1/attestation/config") => Ok(measured_config(&state)),
        (
            _,
            "/healthz"
            | "/openapi.json"
            | "/v1/models"
            | "/v1/chat/completions"
            | "/v1/completions"
            | "/v1/embeddings"
            | "/v1/attestation"
            | "/v1/attestation/config",
        ) => Err(ApiError::method_not_allowed(&method, &path)),
        _ => Err(ApiError::unknown_url(&method, &path)),
    };
    result.unwrap_or_else(error_response)
}

/// The account `request` is billed to, checked before anything else of it is read: a
/// named account must come with its proof for this session's exporter, and an unnamed
/// request is `anonymous` only where the measured config allows it. The account must also
/// fit in the meter's account table. The result rides along as a [`BilledAccount`].
fn bill_to(
    state: &AppState,
    session: &Session,
    mut request: Request<Incoming>,
) -> Result<Request<Incoming>, ApiError> {
    let headers = request.headers();
    let single = |name: &str| {
        let mut values = headers.get_all(name).iter();
        let first = values.next().map(HeaderValue::as_bytes);
        match values.next() {
            Some(_) => Err(ApiError::account_not_proven(format!(
                "the {name} header appears more than once"
            ))),
            None => Ok(first),
        }
    };
    let claim = verify_claim(
        single(ACCOUNT_HEADER)?,
        single(ACCOUNT_PROOF_HEADER)?,
        &session.tls_exporter,
    )
    .map_err(|e| ApiError::account_not_proven(e.to_string()))?;
    let account = match claim {
        Some(id) => id.to_string(),
        None if state.config.accounts.allow_anonymous => ANONYMOUS.to_string(),
        None => {
            return Err(ApiError::account_not_proven(format!(
                "this guest bills only proven accounts: send {ACCOUNT_HEADER} (an Ed25519 \
                 account key, ed25519:<hex>) with {ACCOUNT_PROOF_HEADER} (its signature \
                 over this TLS session's exporter); `cocoon-client proxy --account-key FILE` \
                 does both"
            )))
        }
    };
    let admitted = state
        .meter
        .admit(&account)
        .map_err(|e| ApiError::internal("meter_error", e.to_string()))?;
    if !admitted {
        return Err(ApiError::account_limit(state.meter.max_accounts()));
    }
    request.extensions_mut().insert(BilledAccount(account));
    Ok(request)
}

/// `GET /healthz`: 200 while the engine makes progress, 503 when it has work and has
/// been silent longer than `--engine-stall-secs` (the host agent restarts such a guest).
fn health(state: &AppState) -> Response<Body> {
    let engine = state.watchdog.health();
    let (status, word) = if engine.stalled {
        (StatusCode::SERVICE_UNAVAILABLE, "engine_stalled")
    } else {
        (StatusCode::OK, "ok")
    };
    json_response(
        status,
        &json!({
            "status": word,
            "model": state.engine.id,
            "tee": state.tee.kind().tee_name(),
            "simulated": state.tee.simulated(),
            "engine": {
                "in_flight": engine.in_flight,
                "silent_secs": engine.silent_for.as_secs(),
                "stall_after_secs": state.config.limits.engine_stall_secs,
            },
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

fn model(state: &AppState, id: &str) -> Result<Response<Body>, ApiError> {
    if id == state.engine.id {
        Ok(json_response(StatusCode::OK, &model_object(state)))
    } else {
        Err(ApiError::model_not_found(id))
    }
}

pub(crate) async fn read_body(
    state: &AppState,
    request: Request<Incoming>,
) -> Result<Bytes, ApiError> {
    let limit = state.config.limits.max_body_bytes;
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
        Duration::from_secs(state.config.limits.request_timeout_secs),
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

/// `POST /v1/attestation {"nonce": "<hex, 16 to 64 bytes>"}`: fresh evidence whose
/// REPORTDATA binds the certificate key, the config digest, the nonce and this TLS
/// session's exporter. Nothing is cached: every call asks the TEE anew.
async fn attestation(
    state: Arc<AppState>,
    session: Session,
    request: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let internal = |e: String| ApiError::internal("evidence_error", e);
    let per_connection = state.config.limits.max_evidence_per_connection;
    if session.evidence_calls.fetch_add(1, Ordering::SeqCst) >= per_connection {
        return Err(ApiError::evidence_limit(per_connection));
    }
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
    // Each call costs the TEE a quote or report; bound how many run at once so a client
    // cannot queue up unbounded work on the quoting path. Callers past the bound wait in
    // arrival order (the semaphore is fair), so a client that keeps a few connections busy
    // delays others by a few quotes instead of refusing them; each waits at most
    // `evidence_wait_secs`.
    let wait = state.config.limits.evidence_wait_secs;
    let _slot = tokio::time::timeout(Duration::from_secs(wait), state.evidence_slots.acquire())
        .await
        .map_err(|_| ApiError::evidence_busy(wait))?
        .map_err(|_| ApiError::shutting_down())?;
    let provider = state.clone();
    let evidence = tokio::task::spawn_blocking(move || provider.tee.attest(&report_data))
        .await
        .map_err(|e| internal(e.to_string()))?
        .map_err(|e| internal(e.to_string()))?;
    let payload = EvidencePayload {
        version: PAYLOAD_VERSION,
        kind: state.tee.kind(),
        evidence: evidence.raw,
        event_log: state.event_log.clone(),
        config_digest: state.config_digest.to_vec(),
        gpu_evidence_digest: None,
        receipt_key: Some(state.meter.public_key().to_vec()),
        snp_certificates: evidence.certificates.map(|table| table.encode()),
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

/// Routes one request of the internal listener: the host agent's receipt collection
/// (see `internal_api`), nothing else.
pub async fn handle_internal(state: Arc<AppState>, request: Request<Incoming>) -> Response<Body> {
    use crate::internal_api as internal;
    if !request.uri().path().starts_with("/internal/") {
        return error_response(ApiError::unknown_url(
            request.method(),
            request.uri().path(),
        ));
    }
    let authorization = request
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    if let Err(e) = internal::authorize(state.host_token.as_ref(), authorization.as_deref()) {
        return error_response(e);
    }
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let answer = match (&method, path.as_str()) {
        (&Method::GET, "/internal/v1/receipts") => {
            internal::list_receipts(&state.meter, request.uri().query())
        }
        (&Method::POST, "/internal/v1/receipts/ack") => read_body(&state, request)
            .await
            .and_then(|bytes| internal::acknowledge(&state.meter, &bytes)),
        (_, "/internal/v1/receipts" | "/internal/v1/receipts/ack") => {
            Err(ApiError::method_not_allowed(&method, &path))
        }
        _ => Err(ApiError::unknown_url(&method, &path)),
    };
    match answer {
        Ok(body) => json_response(StatusCode::OK, &body),
        Err(e) => error_response(e),
    }
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
