//! `GET /healthz`.

use hyper::{Response, StatusCode};
use serde_json::json;

use crate::http::body::{json_response, Body};
use crate::http::state::AppState;

/// 200 while the engine makes progress, 503 when it has work and has been silent longer
/// than `--engine-stall-secs` (the host agent restarts such a guest). Also says what the
/// KV cache holds and how much of it requests have reserved (`crate::kv`).
pub fn health(state: &AppState) -> Response<Body> {
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
            "kv_cache": {
                "capacity_tokens": state.kv.capacity_tokens(),
                "block_tokens": state.kv.block_tokens(),
                "blocks_total": state.kv.blocks_total(),
                "blocks_reserved": state.kv.blocks_reserved(),
            },
        }),
    )
}
