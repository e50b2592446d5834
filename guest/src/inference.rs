//! The generation endpoints: `/v1/chat/completions`, `/v1/completions` and
//! `/v1/embeddings`.
//!
//! Each request is parsed strictly, checked against the served model and the limits,
//! admitted through the bounded queue, measured with the engine's own tokenizer
//! (a prompt over `max_prompt_tokens` gets OpenAI's `context_length_exceeded`), then
//! generated; the answer is one JSON document or a Server-Sent-Events stream. When a
//! streaming client goes away, the body is dropped, the generation with it, and the
//! engine cancels the sequences.
//!
//! A stream's events wait in a buffer bounded in bytes and in time
//! (`stream_buffer`): a client that stops reading is cancelled after the stall timeout
//! and never slows the engine, which writes into the generation's own bounded queue.
//! Every way a request ends is billed: a client that leaves or stalls pays for what was
//! generated, a stream the server cuts short (deadline, engine failure) for what the
//! client was sent, a non-streamed request whose client leaves through a drop guard.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Request, Response};
use serde::de::DeserializeOwned;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;

use crate::api::{read_body, AppState, Body};
use crate::api_error::ApiError;
use crate::generate::{BilledUsage, Delta, Generation, GenerationContext, UsageProbe};
use crate::meter::{Billed, RECEIPT_HEADER};
use crate::openai::{
    unsupported_reason, Bounds, ChatCompletionRequest, CompletionRequest, EmbeddingRequest,
    Endpoint, Invalid, Plan,
};
use crate::render::{self, Head, TokenTexts};
use crate::stream_buffer::{self, SendError};
use crate::tokens::CallError;
use cocoon_attestation::receipt::TokenCounts;

/// The body as a JSON object, with `null` dropped from parameters we do not implement
/// (a null means "not set", so nothing is being ignored), and the SHA-256 of the body
/// bytes as received (named in the receipt, so a client can match it to its request).
async fn read_json(
    state: &AppState,
    request: Request<Incoming>,
) -> Result<(Value, [u8; 32]), ApiError> {
    let body = read_body(state, request).await?;
    let body_sha256: [u8; 32] = Sha256::digest(&body).into();
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
    Ok((value, body_sha256))
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
    let (value, request_sha256) = read_json(&state, request).await?;
    let parsed: ChatCompletionRequest = from_value(value)?;
    check_model(&state, &parsed.model)?;
    let plan = parsed.plan(bounds(&state)).map_err(invalid)?;
    run(state, plan, account, request_sha256).await
}

/// The account the request is billed to, proven in its TLS session by `api::bill_to`
/// before the request got here (a request without one is refused, never billed to a
/// default).
fn account_of(request: &Request<Incoming>) -> Result<String, ApiError> {
    request
        .extensions()
        .get::<crate::api::BilledAccount>()
        .map(|account| account.0.clone())
        .ok_or_else(|| {
            ApiError::internal(
                "account_error",
                "the request reached billing without a proven account",
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

/// Everything a request's receipt names besides its outcome.
#[derive(Clone)]
struct Bill {
    state: Arc<AppState>,
    account: String,
    id: String,
    request_sha256: [u8; 32],
}

impl Bill {
    /// Records the usage and returns the signed receipt (`None`, logged, if signing
    /// failed: the answer still goes out, the failure is the operator's to see).
    fn record(
        &self,
        finish: &str,
        usage: BilledUsage,
        response_sha256: [u8; 32],
    ) -> Option<String> {
        let tokens = TokenCounts {
            prompt_tokens: usage.prompt_tokens as u64,
            // The prefix cache is off (engine.rs): no prompt token is served from it.
            cached_tokens: 0,
            completion_tokens: usage.completion_tokens as u64,
        };
        let billed = Billed {
            request_id: &self.id,
            model: &self.state.engine.id,
            finish,
            tokens,
            request_sha256: self.request_sha256,
            response_sha256,
        };
        match self.state.meter.record(&self.account, &billed) {
            Ok(receipt) => Some(receipt),
            Err(e) => {
                tracing::error!(request = %self.id, "usage receipt not recorded: {e}");
                None
            }
        }
    }
}

/// Bills a non-streamed request as `cancelled` if its handler is dropped (the client
/// went away) before the answer was built: the engine did the work.
struct BillOnDrop {
    bill: Option<(Bill, UsageProbe)>,
}

impl BillOnDrop {
    /// The request ended another way (answered, or failed on the server's side).
    fn disarm(&mut self) {
        self.bill = None;
    }
}

impl Drop for BillOnDrop {
    fn drop(&mut self) {
        if let Some((bill, probe)) = self.bill.take() {
            bill.record("cancelled", probe.generated(), Sha256::digest(b"").into());
        }
    }
}

/// `POST /v1/completions`.
pub async fn completions(
    state: Arc<AppState>,
    request: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let account = account_of(&request)?;
    let (value, request_sha256) = read_json(&state, request).await?;
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
    run(state, plan, account, request_sha256).await
}

/// `POST /v1/embeddings`: the request is validated, then refused, because the engine
/// only embeds with embedding models and this server loads text-generation models.
pub async fn embeddings(
    state: Arc<AppState>,
    request: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let parsed: EmbeddingRequest = from_value(read_json(&state, request).await?.0)?;
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

/// Counts every prompt with the engine's tokenizer and enforces the prompt limit;
/// returns each prompt's token count.
async fn count_prompts(
    state: &AppState,
    plan: &Plan,
    deadline: Instant,
) -> Result<Vec<usize>, ApiError> {
    let param = match plan.endpoint {
        Endpoint::Chat => "messages",
        Endpoint::Completion => "prompt",
    };
    let limit = state.config.limits.max_prompt_tokens;
    let secs = state.config.limits.request_timeout_secs;
    let mut counts = Vec::with_capacity(plan.prompts.len());
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
        counts.push(ids.len());
    }
    Ok(counts)
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
    request_sha256: [u8; 32],
) -> Result<Response<Body>, ApiError> {
    if !state.meter.accepting() {
        return Err(ApiError::billing_backlog(30));
    }
    let engine = state.watchdog.health();
    if engine.stalled {
        return Err(ApiError::engine_stalled(engine.silent_for.as_secs()));
    }
    let permit = state.admission.admit().await?;
    let secs = state.config.limits.request_timeout_secs;
    let deadline = Instant::now() + Duration::from_secs(secs);
    let prompt_tokens = count_prompts(&state, &plan, deadline).await?;
    let context = GenerationContext {
        watchdog: &state.watchdog,
        max_buffer_bytes: state.config.limits.max_stream_buffer_bytes,
        end_of_text: &state.end_of_text,
    };
    let mut generation = Generation::start(
        &state.engine.model,
        &plan,
        &prompt_tokens,
        deadline,
        secs,
        &context,
    )
    .await?;
    let prefix = match plan.endpoint {
        Endpoint::Chat => "chatcmpl",
        Endpoint::Completion => "cmpl",
    };
    let bill = Bill {
        state: state.clone(),
        account,
        id: format!("{prefix}-{}", uuid::Uuid::new_v4().simple()),
        request_sha256,
    };
    let created = unix_now();
    if plan.stream {
        return Ok(stream(plan, generation, permit, bill, created, deadline));
    }
    let mut on_drop = BillOnDrop {
        bill: Some((bill.clone(), generation.probe())),
    };
    // A timeout or an engine failure delivers nothing to a non-streaming client: the
    // error is the server's and is not billed.
    let choices = generation
        .collect()
        .await
        .inspect_err(|_| on_drop.disarm())?;
    let usage = generation.usage();
    let billed = generation.probe().generated();
    drop(generation);
    drop(permit);
    let texts = token_texts(&state, &choices)
        .await
        .inspect_err(|_| on_drop.disarm())?;
    let head = Head {
        id: &bill.id,
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
    let body = Bytes::from(document.to_string());
    on_drop.disarm();
    let receipt = bill.record(finish_of(&choices), billed, Sha256::digest(&body).into());
    let mut response = Response::new(crate::api::full(body));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Some(value) = receipt.and_then(|r| HeaderValue::from_str(&r).ok()) {
        headers.insert(RECEIPT_HEADER, value);
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

fn sse(value: &Value) -> String {
    format!("data: {value}\n\n")
}

/// Pads a Server-Sent Event with spaces before its closing blank line (insignificant to
/// SSE and to JSON) so that its length is a multiple of `bucket` bytes: the host relay
/// sees TLS records whose sizes no longer follow the tokens' lengths. `bucket` 0: as is.
fn padded(event: String, bucket: usize) -> Bytes {
    let mut event = event;
    if bucket > 0 {
        let target = event.len().div_ceil(bucket) * bucket;
        if let Some(body) = event.strip_suffix("\n\n") {
            let mut out = String::with_capacity(target);
            out.push_str(body);
            out.extend(std::iter::repeat_n(' ', target - event.len()));
            out.push_str("\n\n");
            event = out;
        }
    }
    Bytes::from(event)
}

/// How a stream ended, for its receipt.
enum StreamEnd {
    /// Every choice finished; the first choice's finish reason.
    Finished(&'static str),
    /// The client went away, stopped reading, or let its buffer overflow: billed for
    /// everything generated.
    ClientGone,
    /// The deadline passed or the engine failed: billed for what was delivered.
    ServerSide(&'static str),
}

/// Streams the generation as Server-Sent Events.
fn stream(
    plan: Plan,
    mut generation: Generation,
    permit: OwnedSemaphorePermit,
    bill: Bill,
    created: u64,
    deadline: Instant,
) -> Response<Body> {
    let state = bill.state.clone();
    let limits = &state.config.limits;
    let bucket = limits.stream_pad_bytes;
    let (mut tx, rx) = stream_buffer::channel(
        limits.max_stream_buffer_bytes,
        Duration::from_secs(limits.stream_stall_timeout_secs),
        deadline,
    );
    tokio::spawn(async move {
        let _permit = permit;
        let head = Head {
            id: &bill.id,
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
        let gone = |e: SendError| match e {
            SendError::Deadline => StreamEnd::ServerSide("timeout"),
            SendError::Closed | SendError::Stalled => StreamEnd::ClientGone,
        };
        let end = 'stream: {
            if !opening.is_empty() {
                if let Err(e) = tx
                    .send(padded(sse(&chunk(opening, usage_field())), bucket))
                    .await
                {
                    break 'stream gone(e);
                }
            }
            let mut finish = "stop";
            while let Some(delta) = generation.next().await {
                let failed = |e: ApiError| {
                    if generation.overflowed() {
                        StreamEnd::ClientGone
                    } else if e.code == Some("timeout") {
                        StreamEnd::ServerSide("timeout")
                    } else {
                        StreamEnd::ServerSide("error")
                    }
                };
                let delta = match delta {
                    Ok(d) => d,
                    Err(e) => {
                        let end = failed(e.clone());
                        if !matches!(end, StreamEnd::ClientGone) {
                            let _ = tx.send(padded(sse(&e.body()), bucket)).await;
                        }
                        break 'stream end;
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
                        let _ = tx.send(padded(sse(&e.body()), bucket)).await;
                        break 'stream StreamEnd::ServerSide("error");
                    }
                };
                let choice = match plan.endpoint {
                    Endpoint::Chat => render::chat_chunk_choice(&delta, logprobs, &texts),
                    Endpoint::Completion => {
                        render::completion_chunk_choice(&delta, logprobs, &texts)
                    }
                };
                if let Err(e) = tx
                    .send(padded(sse(&chunk(vec![choice], usage_field())), bucket))
                    .await
                {
                    break 'stream gone(e);
                }
            }
            if include_usage {
                let usage = render::usage(generation.usage());
                if let Err(e) = tx
                    .send(padded(sse(&chunk(Vec::new(), Some(usage))), bucket))
                    .await
                {
                    break 'stream gone(e);
                }
            }
            StreamEnd::Finished(finish)
        };
        let (finish, usage) = match end {
            StreamEnd::Finished(finish) => (finish, generation.probe().generated()),
            // Dropping `generation` below cancels the sequences; what they made is billed.
            StreamEnd::ClientGone => ("cancelled", generation.probe().generated()),
            StreamEnd::ServerSide(finish) => (finish, generation.delivered()),
        };
        drop(generation);
        let finished = matches!(end, StreamEnd::Finished(_));
        if finished {
            // [DONE] belongs to the response the receipt hashes.
            if tx
                .send(padded("data: [DONE]\n\n".into(), bucket))
                .await
                .is_err()
            {
                bill.record("cancelled", usage, tx.sent_sha256());
                return;
            }
        }
        let receipt = bill.record(finish, usage, tx.sent_sha256());
        // After [DONE], so SDKs that stop reading there never see it; clients that want
        // the receipt read one more event.
        if let (true, Some(receipt)) = (finished, receipt) {
            let event = serde_json::json!({"object": "cocoon.receipt", "receipt": receipt});
            let _ = tx
                .send(padded(
                    format!("event: cocoon.receipt\ndata: {event}\n\n"),
                    bucket,
                ))
                .await;
        }
    });
    let mut response = Response::new(rx.into_body());
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert("cache-control", HeaderValue::from_static("no-cache"));
    response
}
