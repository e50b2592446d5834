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
//! A generating request is billed to an account proven in its own TLS session
//! (`cocoon_attestation::account`): [`bill_to`] checks the proof against the exporter the
//! guest computed for the connection, before the body is read, and refuses with 401
//! otherwise. Every way a request ends is billed: streams as [`super::sse`] says, a
//! non-streamed request whose client leaves through a drop guard.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cocoon_attestation::account::{verify_claim, AccountId};

use hyper::body::Incoming;
use hyper::header::{HeaderMap, HeaderValue, CONTENT_TYPE};
use hyper::{Request, Response};
use serde::de::DeserializeOwned;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use crate::engine::generate::{Delta, Generation, GenerationContext};
use crate::engine::tokens::CallError;
use crate::escrow::{CreditHold, AUTHORIZATION_HEADER};
use crate::http::body::{full, read_body, Body};
use crate::http::error::ApiError;
use crate::http::handlers::answer::{token_texts, AnswerCtx, Bill, BillOnDrop};
use crate::http::handlers::sse;
use crate::http::state::{AppState, Session};
use crate::kv::{KvRefusal, KvReservation};
use crate::meter::{ACCOUNT_HEADER, ACCOUNT_PROOF_HEADER, ANONYMOUS, RECEIPT_HEADER};
use crate::openai::plan::{Bounds, Endpoint, Invalid, Plan};
use crate::openai::render::{self, Head};
use crate::openai::types::{
    unsupported_reason, ChatCompletionRequest, CompletionRequest, EmbeddingRequest,
};
use cocoon_attestation::receipt::TokenCounts;

/// The body as a JSON object, with `null` dropped from parameters we do not implement
/// (a null means "not set", so nothing is being ignored), and the SHA-256 of the body
/// bytes as received (named in the receipt, so a client can match it to its request).
async fn read_json(
    state: &AppState,
    request: Request<Incoming>,
) -> Result<(Value, [u8; 32]), ApiError> {
    let body = read_body(&state.config.limits, request).await?;
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

/// The one value of header `name`, if any; a repeated one is refused (an account header
/// named twice must not let the guest and a proxy read different values).
fn single_header<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a [u8]>, ApiError> {
    let mut values = headers.get_all(name).iter();
    let first = values.next().map(HeaderValue::as_bytes);
    match values.next() {
        Some(_) => Err(ApiError::account_not_proven(format!(
            "the {name} header appears more than once"
        ))),
        None => Ok(first),
    }
}

/// The account the request's headers prove for this TLS session (`None`: none named);
/// a named account without a valid proof is refused with 401 `account_not_proven`.
pub(crate) fn proven_account(
    session: &Session,
    headers: &HeaderMap,
) -> Result<Option<AccountId>, ApiError> {
    verify_claim(
        single_header(headers, ACCOUNT_HEADER)?,
        single_header(headers, ACCOUNT_PROOF_HEADER)?,
        &session.tls_exporter,
    )
    .map_err(|e| ApiError::account_not_proven(e.to_string()))
}

/// The account a generating request is billed to, checked before anything else of it is
/// read: a named account must come with its proof for this session's exporter, and an
/// unnamed request is `anonymous` only where the measured config allows it. The account
/// must also fit in the meter's account table.
fn bill_to(state: &AppState, session: &Session, headers: &HeaderMap) -> Result<String, ApiError> {
    let account = match proven_account(session, headers)? {
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
    if let (Some(escrows), Ok(owner)) = (&state.escrows, AccountId::parse(&account)) {
        if let Some(value) = single_header(headers, AUTHORIZATION_HEADER)? {
            escrows
                .authorize(&owner, value)
                .map_err(ApiError::escrow_refusal)?;
        }
    }
    let admitted = state
        .meter
        .admit(&account)
        .map_err(|e| ApiError::internal("meter_error", e.to_string()))?;
    if !admitted {
        return Err(ApiError::account_limit(state.meter.max_accounts()));
    }
    Ok(account)
}

/// `POST /v1/chat/completions`.
pub async fn chat(
    state: Arc<AppState>,
    session: Session,
    request: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let account = bill_to(&state, &session, request.headers())?;
    let (value, request_sha256) = read_json(&state, request).await?;
    let parsed: ChatCompletionRequest = from_value(value)?;
    check_model(&state, &parsed.model)?;
    let plan = parsed.plan(bounds(&state)).map_err(invalid)?;
    run(state, plan, account, request_sha256).await
}

/// How a request ended, for its receipt: the first choice's finish reason.
fn finish_of(choices: &[Delta]) -> &'static str {
    choices
        .first()
        .and_then(|c| c.finish_reason)
        .unwrap_or("stop")
}

/// `POST /v1/completions`.
pub async fn completions(
    state: Arc<AppState>,
    session: Session,
    request: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let account = bill_to(&state, &session, request.headers())?;
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
            crate::engine::tokens::prompt_tokens(&state.engine.model, prompt),
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

/// Admits a validated request, starts its generation and answers: a stream, or one
/// document.
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
    let kv = reserve_kv(&state, &plan, &prompt_tokens, deadline).await?;
    let credit = reserve_credit(&state, &account, &plan, &prompt_tokens).await?;
    let generation = start(&state, &plan, &prompt_tokens, deadline).await?;
    let prefix = match plan.endpoint {
        Endpoint::Chat => "chatcmpl",
        Endpoint::Completion => "cmpl",
    };
    let bill = Bill {
        state,
        account,
        id: format!("{prefix}-{}", uuid::Uuid::new_v4().simple()),
        request_sha256,
        credit,
    };
    let answer = AnswerCtx {
        plan,
        generation,
        permit,
        kv,
        bill,
        created: unix_now(),
        deadline,
    };
    if answer.plan.stream {
        Ok(sse::stream(answer))
    } else {
        whole(answer).await
    }
}

/// Reserves the KV cache blocks of the request's worst case: every choice of every
/// prompt holds its prompt and may generate `max_tokens`. Waits in arrival order for at
/// most `--kv-wait-secs` (then 429); a request larger than the whole cache gets 400.
async fn reserve_kv(
    state: &AppState,
    plan: &Plan,
    prompt_tokens: &[usize],
    deadline: Instant,
) -> Result<KvReservation, ApiError> {
    let sequences: Vec<usize> = prompt_tokens
        .iter()
        .flat_map(|&p| std::iter::repeat_n(p.saturating_add(plan.max_tokens), plan.n))
        .collect();
    let param = match plan.endpoint {
        Endpoint::Chat => "messages",
        Endpoint::Completion => "prompt",
    };
    let wait = state.config.limits.kv_wait_secs;
    state
        .kv
        .reserve(&sequences, deadline)
        .await
        .map_err(|refusal| match refusal {
            KvRefusal::NeverFits {
                needed_tokens,
                capacity_tokens,
            } => ApiError::kv_never_fits(param, needed_tokens, capacity_tokens),
            KvRefusal::Busy { waited_secs } => ApiError::kv_busy(waited_secs, wait.max(1)),
            KvRefusal::Closed => ApiError::shutting_down(),
        })
}

/// Reserves, for an account that pays through an escrow, the request's largest possible
/// charge: every choice prefills its prompt and may generate `max_tokens`. `None` where
/// there is nothing to reserve (no escrow billing, or an anonymous request).
async fn reserve_credit(
    state: &AppState,
    account: &str,
    plan: &Plan,
    prompt_tokens: &[usize],
) -> Result<Option<Arc<CreditHold>>, ApiError> {
    let (Some(escrows), Ok(owner)) = (&state.escrows, AccountId::parse(account)) else {
        return Ok(None);
    };
    let choices = plan.n as u64;
    let largest = TokenCounts {
        prompt_tokens: prompt_tokens.iter().map(|&t| t as u64 * choices).sum(),
        cached_tokens: 0,
        completion_tokens: plan.max_tokens as u64 * choices * prompt_tokens.len() as u64,
    };
    // Charges round up once on cumulative counts, so one request adds at most one unit
    // more than its own tokens priced alone.
    let largest_charge = state.config.prices.charge(&largest).saturating_add(1);
    let charged = state
        .meter
        .cumulative_charge(account)
        .map_err(|e| ApiError::internal("meter_error", e.to_string()))?;
    let hold = escrows
        .reserve(&owner, charged, largest_charge)
        .await
        .map_err(ApiError::escrow_refusal)?;
    Ok(Some(Arc::new(hold)))
}

/// Sends every choice to the engine; `prompt_tokens` holds each prompt's token count.
async fn start(
    state: &AppState,
    plan: &Plan,
    prompt_tokens: &[usize],
    deadline: Instant,
) -> Result<Generation, ApiError> {
    let context = GenerationContext {
        watchdog: &state.watchdog,
        max_buffer_bytes: state.config.limits.max_stream_buffer_bytes,
        end_of_text: &state.end_of_text,
    };
    let secs = state.config.limits.request_timeout_secs;
    Ok(Generation::start(
        &state.engine.model,
        plan,
        prompt_tokens,
        deadline,
        secs,
        &context,
    )
    .await?)
}

/// The answer as one JSON document, its receipt in a header.
async fn whole(answer: AnswerCtx) -> Result<Response<Body>, ApiError> {
    let AnswerCtx {
        plan,
        mut generation,
        permit,
        kv,
        bill,
        created,
        ..
    } = answer;
    let state = bill.state.clone();
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
    drop(kv);
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
            let prefixes = render::echo_prefixes(&plan);
            head.completion(&choices, &prefixes, logprobs, &texts, usage)
        }
    };
    let body = Bytes::from(document.to_string());
    on_drop.disarm();
    let receipt = bill.record(finish_of(&choices), billed, Sha256::digest(&body).into());
    let mut response = Response::new(full(body));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Some(value) = receipt.and_then(|r| HeaderValue::from_str(&r).ok()) {
        headers.insert(RECEIPT_HEADER, value);
    }
    Ok(response)
}
