//! `response_format` schemas are bounded before they reach the engine (review finding
//! 16): mistral.rs compiles them (llguidance) inside the engine loop that serves every
//! client, so a 10 000-entry enum or a deeply nested schema must get a 400 naming
//! `response_format` at the door, while a schema at the caps still works and does not
//! keep another client's one-token request from being answered.
//!
//! The figures printed (`schema at the caps: …`) are how long a one-token request with
//! each at-cap schema took against the same request without a schema: the engine's
//! compile cost. They are reported, never asserted; waits are liveness bounds.

mod common;

use std::time::{Duration, Instant};

use cocoon_tests::{start_appliance, Appliance};
use common::{post, read_response, tls, BOUND};
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;

/// The guest's defaults (main.rs), restated so the at-cap schemas sit exactly on them.
const MAX_BYTES: usize = 32 * 1024;
const MAX_DEPTH: usize = 32;
const MAX_ENUM: usize = 1000;
const MAX_PATTERN_BYTES: usize = 1024;
const MAX_REFS: usize = 100;
const MAX_REPEAT: u64 = 1000;

fn body(schema: Value, max_tokens: u32) -> String {
    json!({
        "model": "smollm2-135m-instruct.q4_1",
        "messages": [{"role": "user", "content": "Give me JSON."}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "response_format": {"type": "json_schema", "json_schema": {"name": "s", "schema": schema}},
    })
    .to_string()
}

async fn send(app: &Appliance, body: &str) -> (u16, Value) {
    timed(app, body).await.0
}

/// Sends `body` on a fresh attested connection; the time is from the request's first
/// byte to the whole answer (the handshake and evidence check are not counted).
async fn timed(app: &Appliance, body: &str) -> ((u16, Value), Duration) {
    let mut s = tls(app).await;
    let started = Instant::now();
    s.write_all(post("/v1/chat/completions", body).as_bytes())
        .await
        .unwrap();
    let (head, text) = tokio::time::timeout(Duration::from_secs(300), read_response(&mut s))
        .await
        .expect("an answer within the liveness bound");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (
        (status, serde_json::from_str(&text).unwrap_or(Value::Null)),
        started.elapsed(),
    )
}

/// The fastest of three runs of `body`: the figure least disturbed by other work on a
/// shared machine.
async fn fastest(app: &Appliance, body: &str) -> ((u16, Value), Duration) {
    let mut best = timed(app, body).await;
    for _ in 0..2 {
        let next = timed(app, body).await;
        if next.1 < best.1 {
            best = next;
        }
    }
    best
}

fn plain_body() -> String {
    json!({
        "model": "smollm2-135m-instruct.q4_1",
        "messages": [{"role": "user", "content": "Give me JSON."}],
        "max_tokens": 1, "temperature": 0,
    })
    .to_string()
}

/// `{"type":"object","properties":{"a":…}}` nested until the JSON is `depth` deep.
fn nested(depth: usize) -> Value {
    let mut schema = json!({"type": "string"});
    let mut current = 1;
    while current + 2 <= depth {
        schema = json!({"type": "object", "properties": {"a": schema}, "required": ["a"]});
        current += 2;
    }
    schema
}

fn enum_of(n: usize) -> Value {
    json!({"type": "integer", "enum": (0..n).collect::<Vec<_>>()})
}

/// Schemas exactly at each default cap (or as close as their shape allows).
fn at_cap_schemas() -> Vec<(&'static str, Value)> {
    let pattern = format!("^{}$", "[a-z]?".repeat((MAX_PATTERN_BYTES - 2) / 6));
    let at_refs: serde_json::Map<String, Value> = (0..MAX_REFS)
        .map(|i| (format!("p{i}"), json!({"$ref": "#/$defs/x"})))
        .collect();
    let long_enum: Vec<String> = (0..MAX_ENUM)
        .map(|i| format!("{i:0>width$}", width = MAX_BYTES / MAX_ENUM - 6))
        .collect();
    vec![
        ("enum of 1000 integers", enum_of(MAX_ENUM)),
        (
            "enum of 1000 long strings",
            json!({"type": "string", "enum": long_enum}),
        ),
        ("nested 32 deep", nested(MAX_DEPTH)),
        (
            "1 KiB of pattern",
            json!({"type": "string", "pattern": pattern}),
        ),
        (
            "a DFA-hostile pattern",
            json!({"type": "string", "pattern": "^(a|b)*a(a|b){20}$"}),
        ),
        (
            "100 $refs",
            json!({"type": "object", "properties": at_refs, "$defs": {"x": {"type": "integer"}}}),
        ),
        (
            "maxLength 1000 in 100 properties",
            json!({"type": "object", "properties": (0..100).map(|i| (format!("p{i}"), json!({"type": "string", "minLength": MAX_REPEAT, "maxLength": MAX_REPEAT}))).collect::<serde_json::Map<_, _>>()}),
        ),
    ]
}

/// Schemas the default caps refuse.
fn over_cap_schemas() -> Vec<(&'static str, Value)> {
    let long: Vec<String> = (0..10_000).map(|i| format!("{i:0>26}")).collect();
    vec![
        ("enum of 10 000 integers", enum_of(10_000)),
        (
            "enum of 10 000 long strings",
            json!({"type": "string", "enum": long}),
        ),
        ("nested 120 deep", nested(120)),
        (
            "maxLength 20 000 in 100 properties",
            json!({"type": "object", "properties": (0..100).map(|i| (format!("p{i}"), json!({"type": "string", "minLength": 20_000, "maxLength": 20_000}))).collect::<serde_json::Map<_, _>>()}),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pathological_schemas_get_400_and_schemas_at_the_caps_still_work() {
    let app = start_appliance(&[]).expect("appliance starts");

    // Refused at the door, each naming response_format and the bound it broke.
    let refs: serde_json::Map<String, Value> = (0..=MAX_REFS)
        .map(|i| (format!("p{i}"), json!({"$ref": "#/$defs/x"})))
        .collect();
    for (name, schema, bound) in [
        ("a 10 000-entry enum", enum_of(10_000), "max_enum_values"),
        ("a schema nested 60 deep", nested(60), "max_depth"),
        (
            "a 40 KiB schema",
            json!({"type": "string", "description": "x".repeat(40 * 1024)}),
            "max_bytes",
        ),
        (
            "a 2 KiB pattern",
            json!({"type": "string", "pattern": "a?".repeat(1024)}),
            "max_pattern_bytes",
        ),
        (
            "101 $refs",
            json!({"type": "object", "properties": refs, "$defs": {"x": {"type": "integer"}}}),
            "max_refs",
        ),
        (
            "minItems 100 000",
            json!({"type": "array", "items": {"type": "integer"}, "minItems": 100_000}),
            "max_repeat",
        ),
    ] {
        let (status, error) = send(&app, &body(schema, 1)).await;
        assert_eq!(status, 400, "{name}: {error}");
        assert_eq!(
            error["error"]["param"], "response_format",
            "{name}: {error}"
        );
        let message = error["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(bound), "{name}: {message}");
    }

    // Schemas exactly at each cap are accepted and answered.
    let at_caps = at_cap_schemas();
    let ((status, plain), baseline) = fastest(&app, &plain_body()).await;
    assert_eq!(status, 200, "{plain}");
    for (name, schema) in at_caps {
        let bytes = schema.to_string().len();
        assert!(bytes <= MAX_BYTES, "{name} is {bytes} bytes");
        let ((status, answer), took) = fastest(&app, &body(schema, 1)).await;
        assert_eq!(status, 200, "{name}: {answer}");
        eprintln!(
            "schema at the caps: {name} ({bytes} bytes): {took:.2?} for one token, \
             fastest of 3 (without a schema: {baseline:.2?})"
        );
    }
}

/// What the caps keep out of the engine loop: the same guest with the caps lifted, and
/// the schemas the default caps refuse. A measurement, not a test: it prints figures
/// and asserts only that the guest answers; run it with `--ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "prints figures; run with --ignored --nocapture"]
async fn figures_for_schemas_over_the_caps() {
    let app = start_appliance(&[
        "--max-schema-bytes",
        "1000000",
        "--max-schema-depth",
        "200",
        "--max-schema-enum-values",
        "1000000",
        "--max-schema-pattern-bytes",
        "1000000",
        "--max-schema-refs",
        "1000000",
        "--max-schema-repeat",
        "1000000",
    ])
    .expect("appliance starts");
    let ((_, _), baseline) = fastest(&app, &plain_body()).await;
    for (name, schema) in over_cap_schemas() {
        let bytes = schema.to_string().len();
        let ((status, answer), took) = fastest(&app, &body(schema, 1)).await;
        assert_ne!(status, 0, "{name}: {answer}");
        eprintln!(
            "schema over the caps: {name} ({bytes} bytes): HTTP {status} in {took:.2?} for one \
             token (without a schema: {baseline:.2?})"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_client_is_answered_while_an_at_cap_schema_is_submitted() {
    let app = start_appliance(&[]).expect("appliance starts");
    let heavy: Vec<String> = (0..MAX_ENUM)
        .map(|i| format!("{i:0>width$}", width = MAX_BYTES / MAX_ENUM - 6))
        .collect();
    let heavy = body(json!({"type": "string", "enum": heavy}), 8);
    let light = json!({
        "model": "smollm2-135m-instruct.q4_1",
        "messages": [{"role": "user", "content": "Hi"}],
        "max_tokens": 1, "temperature": 0,
    })
    .to_string();
    // The heavy request goes first; the light client follows while its schema is being
    // compiled and used, and is answered within the liveness bound.
    let light_after_heavy = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        tokio::time::timeout(BOUND * 2, send(&app, &light))
            .await
            .expect("a one-token request answers while the schema is compiled")
    };
    let ((heavy_status, heavy_answer), (status, answer)) =
        tokio::join!(send(&app, &heavy), light_after_heavy);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(heavy_status, 200, "{heavy_answer}");
}

/// How long llguidance (the engine's grammar compiler, the same crate and version)
/// takes to compile each at-cap and over-cap schema into its grammar and lexer, timed
/// in-process without the HTTP, prompt and first-token costs around it: fastest of 5.
/// A measurement: run with `--ignored --nocapture`.
#[test]
#[ignore = "prints figures; run with --ignored --nocapture"]
fn grammar_compile_figures() {
    use mistralrs::llguidance::api::{GrammarInit, ParserLimits, TopLevelGrammar};
    for (kind, schemas) in [
        ("at the caps", at_cap_schemas()),
        ("over the caps", over_cap_schemas()),
    ] {
        for (name, schema) in schemas {
            let mut best = Duration::MAX;
            let mut outcome = String::new();
            for _ in 0..5 {
                let grammar =
                    GrammarInit::Serialized(TopLevelGrammar::from_json_schema(schema.clone()));
                let started = Instant::now();
                let result = grammar.validate(None, ParserLimits::default());
                best = best.min(started.elapsed());
                outcome = result.render(false);
            }
            eprintln!(
                "grammar compile {kind}: {name}: {best:.2?}{}",
                if outcome.is_empty() {
                    String::new()
                } else {
                    format!(" ({outcome})")
                }
            );
        }
    }
}
