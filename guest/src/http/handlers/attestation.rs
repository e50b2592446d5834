//! The attestation endpoints: fresh session-bound evidence (`POST /v1/attestation`) and
//! the measured config document its digest commits to (`GET /v1/attestation/config`).

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use cocoon_attestation::evidence::{EvidencePayload, PAYLOAD_VERSION};
use cocoon_attestation::report_data::session_binding;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Request, Response, StatusCode};
use serde_json::{json, Value};

use crate::http::body::{full, json_response, read_body, Body};
use crate::http::error::ApiError;
use crate::http::state::{AppState, Session};

/// `POST /v1/attestation {"nonce": "<hex, 16 to 64 bytes>"}`: fresh evidence whose
/// REPORTDATA binds the certificate key, the config digest, the nonce and this TLS
/// session's exporter. Nothing is cached: every call asks the TEE anew.
pub async fn attestation(
    state: Arc<AppState>,
    session: Session,
    request: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let per_connection = state.config.limits.max_evidence_per_connection;
    if !session.take_evidence_call(per_connection) {
        return Err(ApiError::evidence_limit(per_connection));
    }
    let body = read_body(&state.config.limits, request).await?;
    let (nonce_hex, nonce) = nonce_of(&body)?;
    let report_data = session_binding(
        &state.spki_der,
        &state.config_digest,
        &nonce,
        &session.tls_exporter,
    );
    let cbor = session_evidence(&state, report_data).await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "object": "attestation",
            "nonce": nonce_hex.to_ascii_lowercase(),
            "evidence": base64::engine::general_purpose::STANDARD.encode(cbor),
        }),
    ))
}

/// The body's nonce, as sent (hex) and decoded; the body must hold nothing else.
fn nonce_of(body: &[u8]) -> Result<(String, Vec<u8>), ApiError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
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
    Ok((nonce_hex.to_string(), nonce))
}

/// The evidence payload (CBOR) over `report_data`, asked of the TEE in an evidence slot.
async fn session_evidence(
    state: &Arc<AppState>,
    report_data: [u8; 64],
) -> Result<Vec<u8>, ApiError> {
    let internal = |e: String| ApiError::internal("evidence_error", e);
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
        gpu_evidence_digest: state.gpu.as_ref().map(|g| g.digest.to_vec()),
        receipt_key: Some(state.meter.public_key().to_vec()),
        snp_certificates: evidence.certificates.map(|table| table.encode()),
        vtpm: evidence.vtpm,
    };
    payload.to_cbor().map_err(|e| internal(e.to_string()))
}

/// `GET /v1/attestation/gpu`: the GPUs' SPDM evidence the certificate's evidence binds
/// (its digest is the payload's `gpu_evidence_digest`); 404 `gpu_not_configured` on a
/// guest without a GPU.
pub fn gpu_evidence(state: &AppState) -> Result<Response<Body>, ApiError> {
    let gpu = state
        .gpu
        .as_ref()
        .ok_or_else(ApiError::gpu_not_configured)?;
    let mut response = Response::new(full(gpu.document.to_json()));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(response)
}

/// `GET /v1/attestation/config`: the measured config document, byte for byte as hashed,
/// so a client can check SHA-384(body) against the digest the evidence commits to.
pub fn measured_config(state: &AppState) -> Response<Body> {
    let mut response = Response::new(full(state.config.canonical_json()));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Ok(v) = HeaderValue::from_str(&hex::encode(state.config_digest)) {
        headers.insert("x-cocoon-config-sha384", v);
    }
    response
}
