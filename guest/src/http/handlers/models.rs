//! `GET /v1/models` and `GET /v1/models/{model}`: the one model this guest serves.

use hyper::{Response, StatusCode};
use serde_json::{json, Value};

use crate::http::body::{json_response, Body};
use crate::http::error::ApiError;
use crate::http::state::AppState;

fn model_object(state: &AppState) -> Value {
    json!({
        "id": state.engine.id,
        "object": "model",
        "created": state.engine.created,
        "owned_by": "cocoon",
    })
}

/// `GET /v1/models`.
pub fn list(state: &AppState) -> Response<Body> {
    json_response(
        StatusCode::OK,
        &json!({"object": "list", "data": [model_object(state)]}),
    )
}

/// `GET /v1/models/{id}`.
pub fn get(state: &AppState, id: &str) -> Result<Response<Body>, ApiError> {
    if id == state.engine.id {
        Ok(json_response(StatusCode::OK, &model_object(state)))
    } else {
        Err(ApiError::model_not_found(id))
    }
}
