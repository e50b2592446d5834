//! The generation endpoints: `/v1/chat/completions`, `/v1/completions` and
//! `/v1/embeddings`.
//!
//! Each request is parsed strictly, checked against the served model and the limits,
//! admitted through the bounded queue, measured with the engine's own tokenizer
//! (a prompt over `max_prompt_tokens` gets OpenAI's `context_length_exceeded`), then
//! generated; the answer is one JSON document or a Server-Sent-Events stream. When a
//! streaming client goes away, the body is dropped, the generation with it, and the
//! engine cancels the sequences.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Request, Response, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::sync::{mpsc, OwnedSemaphorePermit};
use tokio::time::Instant;

use crate::api::{json_response, read_body, AppState, Body};
use crate::api_error::ApiError;
use crate::generate::{Delta, Generation, Usage};
use crate::meter::{valid_account, ACCOUNT_HEADER, ANONYMOUS, RECEIPT_HEADER};
use crate::openai::{
    unsupported_reason, Bounds, ChatCompletionRequest, CompletionRequest, EmbeddingRequest,
    Endpoint, Invalid, Plan,
};
use crate::render::{self, Head, TokenTexts};
use crate::tokens::CallError;
use cocoon_attestation::receipt::TokenCounts;

/// The body as a JSON object, with `null` dropped from parameters we do not implement
/// (a null means "not set", so nothing is being ignored).
async fn read_json(state: &AppState, request: Request<Incoming>) -> Result<Value, ApiError> {
    let body = read_body(state, request).await?;
    let mut value: Value = serde_json::from_slice(&body).map_err(|e| {
        ApiError::invalid(
            format!("We could not parse the JSON body of your request: {e}. The body must be a JSON object."),
            None,
            Some("invalid_json"),
        )
    })?;
    let Some(map) = value.as_object_mut() else {
        return Err(ApiError::invalid(
            "The request body must be a JSON object.",
            None,
            Some("invalid_json"),
        ));
    };
    map.retain(|key, v| !(v.is_null() && unsupported_reason(key).is_some()));
    Ok(value)
}

/// Deserialises strictly; a failure becomes a 400 naming the parameter.
fn from_value<T: DeserializeOwned>(value: Value) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(value).map_err(|e| schema_error(&e))
}

fn schema_error(e: &serde_path_to_error::Error<serde_json::Error>) -> ApiError {
    let path = e.path().to_string();
    let top = path
        .split(['.', '['])
        .next()
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    let text = e.inner().to_string();
    let quoted = text.split('`').nth(1).map(str::to_string);
    if text.starts_with("missing field") {
        let field = quoted.unwrap_or_default();
        let param = top.unwrap_or_else(|| field.clone());
        let place = if path == "." {
            String::new()
        } else {
            format!(" in '{path}'")
        };
        ApiError::invalid(
            format!("Missing required parameter: '{field}'{place}."),
            Some(param),
            Some("missing_required_parameter"),
        )
    } else if text.starts_with("unknown field") {
        let field = quoted.unwrap_or_default();
        match top.filter(|t| *t != field) {
            Some(outer) => ApiError::invalid(
                format!("Unrecognized field '{field}' in '{path}' (this server rejects parameters it does not implement)."),
                Some(outer),
                Some("unknown_parameter"),
            ),
            None => match unsupported_reason(&field) {
                Some(reason) => ApiError::invalid(
                    format!("Unsupported parameter: '{field}': {reason}."),
                    Some(field),
                    Some("unsupported_parameter"),
                ),
                None => ApiError::invalid(
                    format!("Unrecognized request argument supplied: {field} (this server rejects parameters it does not implement)."),
                    Some(field),
                    Some("unknown_parameter"),
                ),
            },
        }
    } else {
        ApiError::invalid(
            format!("Invalid value for '{path}': {text}"),
            top,
            Some("invalid_type"),
        )
    }
}

fn check_model(state: &AppState, model: &str) -> Result<(), ApiError> {
    if model == state.engine.id {
        Ok(())
    } else {
        Err(ApiError::model_not_found(model))
    }
}

fn bounds(state: &AppState) -> Bounds<'_> {
    Bounds {
        default_max_tokens: state.config.limits.default_max_tokens,
        max_tokens_limit: state.config.limits.max_tokens_limit,
        default_temperature: state.config.sampling.temperature,
        default_top_p: state.config.sampling.top_p,
        schema: state.config.limits.response_format_schema,
        special_tokens: &state.engine.special_tokens,
    }
}

fn invalid(e: Invalid) -> ApiError {
    ApiError::invalid(e.message, Some(e.param), Some(e.code))
}

/// `POST /v1/chat/completions`.
pub async fn chat(
    state: Arc<AppState>,
    request: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let account = account_of(&request)?;
    let parsed: ChatCompletionRequest = from_value(read_json(&state, request).await?)?;
    check_model(&state, &parsed.model)?;
    let plan = parsed.plan(bounds(&state)).map_err(invalid)?;
    run(state, plan, account).await
}

/// The client account named by the `x-cocoon-account` header (`anonymous` without one).
fn account_of(request: &Request<Incoming>) -> Result<String, ApiError> {
    let Some(value) = request.headers().get(ACCOUNT_HEADER) else {
        return Ok(ANONYMOUS.to_string());
    };
    value
        .to_str()
        .ok()
        .filter(|a| valid_account(a))
        .map(str::to_string)
        .ok_or_else(|| {
            ApiError::invalid(
                format!(
                    "the {ACCOUNT_HEADER} header must be 1 to 128 characters of A-Z a-z 0-9 . _ : @ -"
                ),
                None,
                Some("invalid_account"),
            )
        })
}

/// How a request ended, for its receipt: the first choice's finish reason.
fn finish_of(choices: &[Delta]) -> &'static str {
    choices
        .first()
        .and_then(|c| c.finish_reason)
        .unwrap_or("stop")
}

/// Records the usage and returns the signed receipt (`None`, logged, if signing failed:
/// the answer still goes out, the failure is the operator's to see).
fn bill(state: &AppState, account: &str, id: &str, finish: &str, usage: Usage) -> Option<String> {
    let tokens = TokenCounts {
        prompt_tokens: usage.prompt_tokens as u64,
        // The prefix cache is off (engine.rs): no prompt token is served from it.
        cached_tokens: 0,
        completion_tokens: usage.completion_tokens as u64,
    };
    match state
        .meter
        .record(account, id, &state.engine.id, finish, tokens)
    {
        Ok(receipt) => Some(receipt),
        Err(e) => {
            tracing::error!(request = %id, "usage receipt not recorded: {e}");
            None
        }
    }
}

/// `POST /v1/completions`.
pub async fn completions(
    state: Arc<AppState>,
    request: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let account = account_of(&request)?;
    let value = read_json(&state, request).await?;
    let token_prompt = value
        .get("prompt")
        .and_then(Value::as_array)
        .is_some_and(|a| a.iter().any(|v| v.is_number() || v.is_array()));
    if token_prompt {
        return Err(ApiError::invalid(
            "'prompt' as token ids is not supported; send the prompt as text",
            Some("prompt".into()),
            Some("invalid_type"),
        ));
    }
    let parsed: CompletionRequest = from_value(value)?;
    check_model(&state, &parsed.model)?;
    let plan = parsed.plan(bounds(&state)).map_err(invalid)?;
    run(state, plan, account).await
}

/// `POST /v1/embeddings`: the request is validated, then refused, because the engine
/// only embeds with embedding models and this server loads text-generation models.
pub async fn embeddings(
    state: Arc<AppState>,
    request: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let parsed: EmbeddingRequest = from_value(read_json(&state, request).await?)?;
    check_model(&state, &parsed.model)?;
    Err(ApiError::invalid(
        format!(
            "The model `{}` is a text-generation model; mistral.rs computes embeddings only \
             with embedding models, and this server serves none.",
            parsed.model
        ),
        Some("model".into()),
        Some("model_not_supported"),
    ))
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Counts every prompt with the engine's tokenizer and enforces the prompt limit.
async fn count_prompts(
    state: &AppState,
    plan: &Plan,
    deadline: Instant,
) -> Result<usize, ApiError> {
    let param = match plan.endpoint {
        Endpoint::Chat => "messages",
        Endpoint::Completion => "prompt",
    };
    let limit = state.config.limits.max_prompt_tokens;
    let secs = state.config.limits.request_timeout_secs;
    let mut total = 0;
    for prompt in &plan.prompts {
        let ids = tokio::time::timeout_at(
            deadline,
            crate::tokens::prompt_tokens(&state.engine.model, prompt),
        )
        .await
        .map_err(|_| ApiError::generation_timeout(secs))?
        .map_err(|e| match e {
            CallError::Unavailable(m) => ApiError::internal("engine_error", m),
            CallError::Refused(m) => ApiError::invalid(
                format!("the engine could not tokenize the {param}: {m}"),
                Some(param.into()),
                Some("invalid_value"),
            ),
        })?;
        if ids.is_empty() {
            return Err(ApiError::invalid(
                format!("the {param} is empty: it has no tokens"),
                Some(param.into()),
                Some("invalid_value"),
            ));
        }
        if ids.len() > limit {
            return Err(ApiError::context_length_exceeded(param, limit, ids.len()));
        }
        total += ids.len();
    }
    Ok(total)
}

/// Spells out the tokens of `deltas` for `logprobs`.
async fn token_texts(state: &AppState, deltas: &[Delta]) -> Result<TokenTexts, ApiError> {
    let ids = render::token_ids(deltas);
    if ids.is_empty() {
        return Ok(TokenTexts::new());
    }
    let texts = state
        .engine
        .texts
        .texts(&state.engine.model, &ids)
        .await
        .map_err(|e| ApiError::internal("engine_error", format!("detokenizing failed: {e:?}")))?;
    Ok(ids.into_iter().zip(texts).collect())
}

async fn run(
    state: Arc<AppState>,
    plan: Plan,
    account: String,
) -> Result<Response<Body>, ApiError> {
    if !state.meter.accepting() {
        return Err(ApiError::billing_backlog(30));
    }
    let permit = state.admission.admit().await?;
    let secs = state.config.limits.request_timeout_secs;
    let deadline = Instant::now() + Duration::from_secs(secs);
    let prompt_tokens = count_prompts(&state, &plan, deadline).await?;
    let mut generation =
        Generation::start(&state.engine.model, &plan, prompt_tokens, deadline, secs).await?;
    let prefix = match plan.endpoint {
        Endpoint::Chat => "chatcmpl",
        Endpoint::Completion => "cmpl",
    };
    let id = format!("{prefix}-{}", uuid::Uuid::new_v4().simple());
    let created = unix_now();
    if plan.stream {
        return Ok(stream(
            state, plan, generation, permit, id, account, created,
        ));
    }
    let choices = generation.collect().await?;
    let usage = generation.usage();
    drop(generation);
    drop(permit);
    let receipt = bill(&state, &account, &id, finish_of(&choices), usage);
    let texts = token_texts(&state, &choices).await?;
    let head = Head {
        id: &id,
        model: &state.engine.id,
        created,
    };
    let logprobs = plan.logprobs.is_some();
    let document = match plan.endpoint {
        Endpoint::Chat => head.chat_completion(&choices, logprobs, &texts, usage),
        Endpoint::Completion => {
            let prefixes = echo_prefixes(&plan);
            head.completion(&choices, &prefixes, logprobs, &texts, usage)
        }
    };
    let mut response = json_response(StatusCode::OK, &document);
    if let Some(value) = receipt.and_then(|r| HeaderValue::from_str(&r).ok()) {
        response.headers_mut().insert(RECEIPT_HEADER, value);
    }
    Ok(response)
}

/// The echoed prompt of each choice (empty without `echo`).
fn echo_prefixes(plan: &Plan) -> Vec<&str> {
    (0..plan.prompts.len() * plan.n)
        .map(|i| {
            if plan.echo {
                plan.prompt_texts[i / plan.n].as_str()
            } else {
                ""
            }
        })
        .collect()
}

fn sse(value: &Value) -> Bytes {
    Bytes::from(format!("data: {value}\n\n"))
}

/// Streams the generation as Server-Sent Events.
fn stream(
    state: Arc<AppState>,
    plan: Plan,
    mut generation: Generation,
    permit: OwnedSemaphorePermit,
    id: String,
    account: String,
    created: u64,
) -> Response<Body> {
    let (tx, rx) = mpsc::channel::<Bytes>(32);
    tokio::spawn(async move {
        let _permit = permit;
        let head = Head {
            id: &id,
            model: &state.engine.id,
            created,
        };
        let include_usage = plan.include_usage;
        let usage_field = || include_usage.then_some(Value::Null);
        let chunk = |choices: Vec<Value>, usage: Option<Value>| match plan.endpoint {
            Endpoint::Chat => head.chat_chunk(choices, usage),
            Endpoint::Completion => head.completion_chunk(choices, usage),
        };
        let logprobs = plan.logprobs.is_some();
        let jobs = plan.prompts.len() * plan.n;
        let opening: Vec<Value> = match plan.endpoint {
            Endpoint::Chat => (0..jobs)
                .map(|i| serde_json::json!({"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": null, "finish_reason": null}))
                .collect(),
            Endpoint::Completion if plan.echo => echo_prefixes(&plan)
                .iter()
                .enumerate()
                .map(|(i, p)| serde_json::json!({"index": i, "text": p, "logprobs": null, "finish_reason": null}))
                .collect(),
            Endpoint::Completion => Vec::new(),
        };
        // Every way out bills what was generated: a client that goes away pays for the
        // tokens made until then (its receipt reaches the host agent's journal only).
        let cancelled = |generation: &Generation| {
            bill(&state, &account, &id, "cancelled", generation.usage());
        };
        if !opening.is_empty() && tx.send(sse(&chunk(opening, usage_field()))).await.is_err() {
            cancelled(&generation);
            return;
        }
        let mut finish = "stop";
        while let Some(delta) = generation.next().await {
            let delta = match delta {
                Ok(d) => d,
                Err(e) => {
                    // Timeouts and engine failures are the server's: not billed.
                    let _ = tx.send(sse(&e.body())).await;
                    return;
                }
            };
            if delta.index == 0 {
                if let Some(reason) = delta.finish_reason {
                    finish = reason;
                }
            }
            let texts = match token_texts(&state, std::slice::from_ref(&delta)).await {
                Ok(t) => t,
                Err(e) => {
                    let _ = tx.send(sse(&e.body())).await;
                    return;
                }
            };
            let choice = match plan.endpoint {
                Endpoint::Chat => render::chat_chunk_choice(&delta, logprobs, &texts),
                Endpoint::Completion => render::completion_chunk_choice(&delta, logprobs, &texts),
            };
            if tx
                .send(sse(&chunk(vec![choice], usage_field())))
                .await
                .is_err()
            {
                // Client gone: dropping `generation` cancels the sequences.
                cancelled(&generation);
                return;
            }
        }
        if include_usage {
            let usage = render::usage(generation.usage());
            if tx.send(sse(&chunk(Vec::new(), Some(usage)))).await.is_err() {
                cancelled(&generation);
                return;
            }
        }
        let receipt = bill(&state, &account, &id, finish, generation.usage());
        if tx
            .send(Bytes::from_static(b"data: [DONE]\n\n"))
            .await
            .is_err()
        {
            return;
        }
        // After [DONE], so SDKs that stop reading there never see it; clients that want
        // the receipt read one more event.
        if let Some(receipt) = receipt {
            let event = serde_json::json!({"object": "cocoon.receipt", "receipt": receipt});
            let _ = tx
                .send(Bytes::from(format!(
                    "event: cocoon.receipt\ndata: {event}\n\n"
                )))
                .await;
        }
    });
    let frames = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|bytes| (Ok::<_, Infallible>(Frame::data(bytes)), rx))
    });
    let mut response = Response::new(BodyExt::boxed_unsync(StreamBody::new(frames)));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert("cache-control", HeaderValue::from_static("no-cache"));
    response
}
