//! `GET /openapi.json`: an OpenAPI 3.1 description of exactly what this server serves.
//!
//! The document is `guest/openapi.json`, compiled in; the served copy has the running
//! configuration filled in (the model id as the only accepted `model`, the server's
//! `max_tokens` limit as the maximum), so a client or a property-based tester
//! (`schemathesis`, run by the tests) sees the real bounds. Request schemas forbid
//! additional properties, as the server does.

use hyper::StatusCode;
use serde_json::{json, Value};

use crate::http::body::{json_response, Body};
use crate::http::state::AppState;

const DOCUMENT: &str = include_str!("../../../openapi.json");

/// Request schemas whose `model` is the served model.
const MODEL_SCHEMAS: [&str; 3] = [
    "ChatCompletionRequest",
    "CompletionRequest",
    "EmbeddingRequest",
];

/// `(schema, property)` pairs bounded by the `max_tokens` limit.
const MAX_TOKENS: [(&str, &str); 3] = [
    ("ChatCompletionRequest", "max_tokens"),
    ("ChatCompletionRequest", "max_completion_tokens"),
    ("CompletionRequest", "max_tokens"),
];

/// The document for a server with this model id and `max_tokens` limit.
pub fn render(model_id: &str, max_tokens_limit: usize) -> Value {
    // The document is a compile-time constant checked by the tests below.
    let mut doc: Value = serde_json::from_str(DOCUMENT).unwrap_or(Value::Null);
    for schema in MODEL_SCHEMAS {
        let pointer = format!("/components/schemas/{schema}/properties/model");
        if let Some(model) = doc.pointer_mut(&pointer) {
            *model = json!({"type": "string", "enum": [model_id]});
        }
    }
    for (schema, property) in MAX_TOKENS {
        let pointer = format!("/components/schemas/{schema}/properties/{property}/maximum");
        if let Some(max) = doc.pointer_mut(&pointer) {
            *max = json!(max_tokens_limit);
        }
    }
    doc
}

/// `GET /openapi.json`.
pub fn document(state: &AppState) -> hyper::Response<Body> {
    json_response(
        StatusCode::OK,
        &render(&state.engine.id, state.config.limits.max_tokens_limit),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_is_openapi_3_1_with_the_running_limits() {
        let doc = render("m-1", 7);
        assert_eq!(doc["openapi"], "3.1.0");
        let schemas = &doc["components"]["schemas"];
        for schema in MODEL_SCHEMAS {
            assert_eq!(
                schemas[schema]["properties"]["model"]["enum"],
                json!(["m-1"])
            );
            assert_eq!(schemas[schema]["additionalProperties"], false);
        }
        for (schema, property) in MAX_TOKENS {
            assert_eq!(schemas[schema]["properties"][property]["maximum"], 7);
        }
        for path in [
            "/healthz",
            "/openapi.json",
            "/v1/models",
            "/v1/models/{model}",
            "/v1/chat/completions",
            "/v1/completions",
            "/v1/embeddings",
            "/v1/attestation",
            "/v1/attestation/config",
            "/v1/billing/account",
        ] {
            assert!(doc["paths"][path].is_object(), "{path} is documented");
        }
        // Every $ref resolves.
        let text = doc.to_string();
        for piece in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
            let name = piece.split('"').next().unwrap_or_default();
            assert!(schemas[name].is_object(), "dangling $ref {name}");
        }
    }
}
