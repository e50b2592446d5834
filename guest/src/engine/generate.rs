//! Runs a [`Plan`] on the engine and turns what it sends back into per-choice deltas.
//!
//! Every choice is its own engine request with `n_choices = 1` and its own
//! [`SeededSampler`]: mistral.rs keeps one usage record per request group that each
//! finished sequence overwrites (`Sequence::update_time_info`), so with `n > 1` it would
//! report one choice's tokens; separate requests keep each count exact and make a
//! seeded choice independent of how the scheduler batches it. Every request streams,
//! also for non-streamed answers, so both modes share one path: text goes through the
//! stop filter, token counts come from the samplers, and dropping a [`Generation`]
//! closes the channels, which makes the engine cancel the sequences.
//!
//! The engine serves every tenant from one loop that waits on each sequence's channel,
//! so no client's pace may reach it: a forwarder per choice drains the engine's channel
//! at once into this request's queue, which is bounded in bytes
//! ([`GenerationContext::max_buffer_bytes`]); a request whose queue overflows (its
//! client does not keep up) is cancelled instead of slowing the engine down.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use mistralrs::{NormalRequest, Request, Response, SamplingParams, StopTokens};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::engine::sampling::{
    step_of_reported_logprob, SamplerConfig, SeededSampler, TokenChoice,
};
use crate::engine::stop::StopFilter;
use crate::openai::plan::{Endpoint, Plan};
use crate::watchdog::{EngineJob, EngineWatchdog};

/// Why a generation failed. The engine knows no HTTP: the API turns each kind into its
/// status code at the edge (`From<GenerateError> for ApiError` in `http/error.rs`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GenerateError {
    /// The engine failed, stopped, or could not be reached (a server error).
    #[error("{0}")]
    Engine(String),
    /// The engine refused the request as invalid; `param` names what to change.
    #[error("{message}")]
    Invalid {
        message: String,
        param: &'static str,
        code: &'static str,
    },
    /// The generation ran past the request's deadline of `secs` seconds.
    #[error("generation took longer than this server's limit of {secs} s")]
    Timeout { secs: u64 },
    /// The client did not take its output as fast as the engine made it (its queue
    /// overflowed); the generation was cancelled.
    #[error("the client did not read the stream fast enough; the generation was cancelled")]
    ClientTooSlow,
}

/// What a generation needs besides the plan.
pub struct GenerationContext<'a> {
    /// Reports the engine's progress to `/healthz`.
    pub watchdog: &'a Arc<EngineWatchdog>,
    /// Engine output one request may hold unread before it is cancelled.
    pub max_buffer_bytes: usize,
    /// Special tokens that end a text (see [`end_of_text_markers`]): a constrained
    /// generation stops at them.
    pub end_of_text: &'a [String],
}

/// What one choice produced since its last delta.
#[derive(Debug, Clone, Default)]
pub struct Delta {
    pub index: usize,
    pub text: String,
    /// Sampled tokens (only when log probabilities were asked for).
    pub tokens: Vec<TokenChoice>,
    pub finish_reason: Option<&'static str>,
}

impl Delta {
    /// True when there is nothing to send.
    pub fn is_empty(&self) -> bool {
        self.text.is_empty() && self.tokens.is_empty() && self.finish_reason.is_none()
    }
}

/// Token counts of a finished generation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
}

/// The token counts a request is billed for: every choice is its own engine sequence,
/// and the prefix cache is off, so each choice prefills its prompt.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BilledUsage {
    /// Prompt tokens the engine processed: the prompt once per choice.
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
}

/// Counts of a generation that outlive it: whoever bills a request on an exit path
/// (a dropped response, an abandoned stream) reads them here.
#[derive(Clone)]
pub struct UsageProbe {
    samplers: Vec<Arc<SeededSampler>>,
    /// Prompt tokens of each choice.
    prompts: Vec<usize>,
}

impl UsageProbe {
    /// What the engine has processed so far: every choice's prompt and sampled tokens.
    pub fn generated(&self) -> BilledUsage {
        BilledUsage {
            prompt_tokens: self.prompts.iter().sum(),
            completion_tokens: self.samplers.iter().map(|s| s.count()).sum(),
        }
    }
}

enum JobEvent {
    /// An engine response (boxed: responses are large, the other events empty) and the
    /// bytes it holds in this request's queue.
    Engine(Box<Response>, usize),
    Closed,
    /// The queue overflowed: the choice was cancelled.
    Overflow,
}

/// Bytes of engine output a request holds and has not consumed yet.
struct QueueBudget {
    queued: AtomicUsize,
    max: usize,
    overflowed: AtomicBool,
}

impl QueueBudget {
    /// Takes `bytes`; false (and marks the overflow) when that would exceed the bound.
    fn take(&self, bytes: usize) -> bool {
        let before = self.queued.fetch_add(bytes, Ordering::SeqCst);
        if before + bytes > self.max {
            self.overflowed.store(true, Ordering::SeqCst);
            false
        } else {
            true
        }
    }

    fn give_back(&self, bytes: usize) {
        self.queued.fetch_sub(bytes, Ordering::SeqCst);
    }
}

/// What one engine response holds in memory, roughly: its text plus a fixed overhead
/// for the response structure.
fn response_bytes(response: &Response) -> usize {
    const OVERHEAD: usize = 256;
    OVERHEAD
        + match response {
            Response::Chunk(chunk) => chunk
                .choices
                .iter()
                .map(|c| c.delta.content.as_ref().map_or(0, String::len))
                .sum(),
            Response::CompletionChunk(chunk) => chunk.choices.iter().map(|c| c.text.len()).sum(),
            _ => 0,
        }
}

struct Choice {
    sampler: Arc<SeededSampler>,
    filter: StopFilter,
    delivered: usize,
    /// Tokens whose text has left in a delta (the step of the last delta + 1).
    emitted_tokens: usize,
    finished: bool,
}

/// A running generation: all choices of one request.
pub struct Generation {
    choices: Vec<Choice>,
    events: mpsc::UnboundedReceiver<(usize, JobEvent)>,
    buffered: VecDeque<(usize, JobEvent)>,
    budget: Arc<QueueBudget>,
    prompt_tokens: usize,
    prompt_of_choice: Vec<usize>,
    max_tokens: usize,
    logprobs: bool,
    endpoint: Endpoint,
    deadline: Instant,
    timeout_secs: u64,
}

/// The seed of choice `index`: the request's seed for the first choice, distinct
/// derived seeds for the others, fresh randomness without a seed.
fn choice_seed(seed: Option<u64>, index: usize) -> u64 {
    match seed {
        Some(s) => s ^ (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
        None => uuid::Uuid::new_v4().as_u64_pair().0,
    }
}

/// The end-of-text markers llguidance may end a grammar with (the names its tokenizer
/// environment recognises as EOS, `toktrie_hf_tokenizers`), kept where the loaded
/// tokenizer has them as one token, tokenized the way the engine tokenizes stop
/// sequences, so that the engine stops at them as stop tokens.
pub async fn end_of_text_markers(model: &mistralrs::Model) -> Result<Vec<String>, GenerateError> {
    const CANDIDATES: [&str; 5] = [
        "</s>",
        "<|endoftext|>",
        "<|end_of_text|>",
        "<\u{ff5c}end\u{2581}of\u{2581}sentence\u{ff5c}>",
        "<eos>",
    ];
    let mut markers = Vec::new();
    for candidate in CANDIDATES {
        let ids = crate::engine::tokens::text_tokens(model, candidate, true)
            .await
            .map_err(|e| GenerateError::Engine(format!("tokenizing {candidate}: {e:?}")))?;
        if ids.len() == 1 {
            markers.push(candidate.to_string());
        }
    }
    Ok(markers)
}

/// The stop sequences the engine gets: the client's, and with a grammar the special
/// tokens that end a text. llguidance ends a finished grammar with the tokenizer's
/// end-of-text token (`<|endoftext|>` for SmolLM2), while the engine stops only at the
/// chat template's end-of-turn token (`<|im_end|>`): without this a `json_object` answer
/// would be padded with end-of-text tokens up to `max_tokens`, and billed for them.
fn engine_stops(plan: &Plan, end_of_text: &[String]) -> Vec<String> {
    let mut stops = plan.stop.clone();
    if !matches!(plan.constraint, mistralrs::Constraint::None) {
        for marker in end_of_text {
            if !stops.contains(marker) {
                stops.push(marker.clone());
            }
        }
    }
    stops
}

fn engine_request(
    plan: &Plan,
    prompt: &mistralrs::core::RequestMessage,
    sampler: Arc<SeededSampler>,
    stops: Vec<String>,
    response: mpsc::Sender<Response>,
) -> Request {
    let mut sampling = SamplingParams::neutral();
    // The engine samples greedily from what our sampler leaves: exactly one token.
    sampling.temperature = Some(0.0);
    sampling.presence_penalty = plan.presence_penalty;
    sampling.frequency_penalty = plan.frequency_penalty;
    sampling.max_len = Some(plan.max_tokens);
    sampling.stop_toks = (!stops.is_empty()).then_some(StopTokens::Seqs(stops));
    Request::Normal(Box::new(NormalRequest {
        messages: prompt.clone(),
        sampling_params: sampling,
        response,
        // The engine's per-chunk "logprob" carries our step marker (see sampling.rs).
        return_logprobs: true,
        is_streaming: true,
        id: 0,
        constraint: plan.constraint.clone(),
        suffix: None,
        tools: None,
        tool_choice: None,
        logits_processors: Some(vec![sampler]),
        return_raw_logits: false,
        web_search_options: None,
        model_id: None,
        truncate_sequence: false,
    }))
}

/// A 400 or 500 for an error the engine reported for a request.
fn engine_error(endpoint: Endpoint, validation: bool, message: String) -> GenerateError {
    let prompt_param = match endpoint {
        Endpoint::Chat => "messages",
        Endpoint::Completion => "prompt",
    };
    if !validation {
        return GenerateError::Engine(format!("the inference engine failed: {message}"));
    }
    let (param, code) = if message.starts_with("Invalid grammar") {
        ("response_format", "invalid_value")
    } else if message.starts_with("Prompt sequence length") {
        (prompt_param, "context_length_exceeded")
    } else {
        (prompt_param, "invalid_value")
    };
    GenerateError::Invalid {
        message,
        param,
        code,
    }
}

/// Drains one choice's engine channel into the request's queue without ever waiting
/// on the consumer, so the engine loop never waits on a client. Ends (dropping the
/// engine's channel, which cancels the sequence) when the engine closes it, when the
/// request is gone, or when the queue would exceed its bound.
async fn forward(
    index: usize,
    mut rx: mpsc::Receiver<Response>,
    merged: mpsc::UnboundedSender<(usize, JobEvent)>,
    budget: Arc<QueueBudget>,
    job: EngineJob,
) {
    loop {
        let response = tokio::select! {
            response = rx.recv() => response,
            // The request is gone: stop at once, so the engine cancels at its next token.
            () = merged.closed() => return,
        };
        let Some(response) = response else {
            let _ = merged.send((index, JobEvent::Closed));
            return;
        };
        job.progress();
        let bytes = response_bytes(&response);
        if !budget.take(bytes) {
            let _ = merged.send((index, JobEvent::Overflow));
            return;
        }
        if merged
            .send((index, JobEvent::Engine(Box::new(response), bytes)))
            .is_err()
        {
            return;
        }
    }
}

impl Generation {
    /// Sends every choice to the engine and waits until each has answered once, so a
    /// request the engine refuses still gets its status code before any byte is sent.
    /// `prompt_tokens` holds the token count of each prompt of the plan.
    pub async fn start(
        model: &mistralrs::Model,
        plan: &Plan,
        prompt_tokens: &[usize],
        deadline: Instant,
        timeout_secs: u64,
        context: &GenerationContext<'_>,
    ) -> Result<Self, GenerateError> {
        let engine = model
            .inner()
            .get_sender(None)
            .map_err(|e| GenerateError::Engine(format!("engine unavailable: {e:?}")))?;
        let jobs = plan.prompts.len() * plan.n;
        let (merged_tx, events) = mpsc::unbounded_channel();
        let budget = Arc::new(QueueBudget {
            queued: AtomicUsize::new(0),
            max: context.max_buffer_bytes.max(1),
            overflowed: AtomicBool::new(false),
        });
        let stops = engine_stops(plan, context.end_of_text);
        let mut choices = Vec::with_capacity(jobs);
        for index in 0..jobs {
            let sampler = SeededSampler::new(SamplerConfig {
                temperature: plan.temperature,
                top_p: plan.top_p,
                top_logprobs: plan.logprobs.unwrap_or(0),
                seed: choice_seed(plan.seed, index),
            });
            let (tx, rx) = mpsc::channel(8);
            let request = engine_request(
                plan,
                &plan.prompts[index / plan.n],
                sampler.clone(),
                stops.clone(),
                tx,
            );
            let job = context.watchdog.job();
            engine
                .send(request)
                .await
                .map_err(|_| GenerateError::Engine("the inference engine stopped".into()))?;
            tokio::spawn(forward(index, rx, merged_tx.clone(), budget.clone(), job));
            choices.push(Choice {
                sampler,
                filter: StopFilter::new(plan.stop.clone()),
                delivered: 0,
                emitted_tokens: 0,
                finished: false,
            });
        }
        let prompt_of_choice = (0..jobs)
            .map(|index| prompt_tokens.get(index / plan.n).copied().unwrap_or(0))
            .collect();
        let mut generation = Self {
            choices,
            events,
            buffered: VecDeque::new(),
            budget,
            prompt_tokens: prompt_tokens.iter().sum(),
            prompt_of_choice,
            max_tokens: plan.max_tokens,
            logprobs: plan.logprobs.is_some(),
            endpoint: plan.endpoint,
            deadline,
            timeout_secs,
        };
        let mut answered = vec![false; jobs];
        while answered.iter().any(|a| !a) {
            let (index, event) = generation.receive().await?;
            if let JobEvent::Engine(response, _) = &event {
                if let Some(err) = response_error(plan.endpoint, response) {
                    return Err(err);
                }
            }
            generation.buffered.push_back((index, event));
            if let Some(slot) = answered.get_mut(index) {
                *slot = true;
            }
        }
        Ok(generation)
    }

    async fn receive(&mut self) -> Result<(usize, JobEvent), GenerateError> {
        match tokio::time::timeout_at(self.deadline, self.events.recv()).await {
            Err(_) => Err(GenerateError::Timeout {
                secs: self.timeout_secs,
            }),
            Ok(Some(event)) => {
                if let (_, JobEvent::Engine(_, bytes)) = &event {
                    self.budget.give_back(*bytes);
                }
                Ok(event)
            }
            Ok(None) => Err(GenerateError::Engine(
                "the generation ended unexpectedly".into(),
            )),
        }
    }

    /// True when the request's queue overflowed because its client did not keep up
    /// with the engine; the generation was cancelled.
    pub fn overflowed(&self) -> bool {
        self.budget.overflowed.load(Ordering::SeqCst)
    }

    /// The counts that bill this request, readable after it is gone.
    pub fn probe(&self) -> UsageProbe {
        UsageProbe {
            samplers: self.choices.iter().map(|c| c.sampler.clone()).collect(),
            prompts: self.prompt_of_choice.clone(),
        }
    }

    /// What the client has received: every choice's prompt, and the tokens whose text
    /// has left in a delta (all sampled tokens of a finished choice).
    pub fn delivered(&self) -> BilledUsage {
        BilledUsage {
            prompt_tokens: self.prompt_of_choice.iter().sum(),
            completion_tokens: self
                .choices
                .iter()
                .map(|c| {
                    if c.finished {
                        c.sampler.count()
                    } else {
                        c.emitted_tokens.min(c.sampler.count())
                    }
                })
                .sum(),
        }
    }

    /// Token counts; exact once every choice has finished.
    pub fn usage(&self) -> Usage {
        Usage {
            prompt_tokens: self.prompt_tokens,
            completion_tokens: self.choices.iter().map(|c| c.sampler.count()).sum(),
        }
    }

    /// The next delta of some choice; `None` when every choice has finished.
    pub async fn next(&mut self) -> Option<Result<Delta, GenerateError>> {
        loop {
            if self.choices.iter().all(|c| c.finished) {
                return None;
            }
            let (index, event) = match self.buffered.pop_front() {
                Some(e) => e,
                None => match self.receive().await {
                    Ok(e) => e,
                    Err(e) => return Some(Err(e)),
                },
            };
            let Some(choice) = self.choices.get(index) else {
                continue;
            };
            if choice.finished {
                continue;
            }
            let closed = matches!(event, JobEvent::Closed);
            let (text, step, reason) = match event {
                JobEvent::Closed => (String::new(), None, None),
                JobEvent::Overflow => return Some(Err(GenerateError::ClientTooSlow)),
                JobEvent::Engine(response, _) => {
                    if let Some(err) = response_error(self.endpoint, &response) {
                        return Some(Err(err));
                    }
                    match chunk_parts(*response) {
                        Some(parts) => parts,
                        None => continue,
                    }
                }
            };
            let delta = self.advance(index, &text, step, reason, closed);
            if !delta.is_empty() {
                return Some(Ok(delta));
            }
        }
    }

    /// Applies one engine chunk (or the end of the channel) to choice `index`.
    fn advance(
        &mut self,
        index: usize,
        text: &str,
        step: Option<usize>,
        reason: Option<String>,
        closed: bool,
    ) -> Delta {
        let max_tokens = self.max_tokens;
        let logprobs = self.logprobs;
        let choice = &mut self.choices[index];
        if let Some(step) = step {
            choice.emitted_tokens = choice.emitted_tokens.max(step + 1);
        }
        let mut out = choice.filter.push(text);
        let finish = if reason.is_some() || closed {
            if !choice.filter.stopped() {
                out.push_str(&choice.filter.finish());
            }
            choice.finished = true;
            let count = choice.sampler.count();
            Some(match reason.as_deref() {
                _ if choice.filter.stopped() => "stop",
                Some("length") => "length",
                Some(_) => "stop",
                // The engine sends no final chunk when the last token ends inside a
                // multi-byte character; the sampler's count tells why it stopped.
                None if count >= max_tokens => "length",
                None => "stop",
            })
        } else {
            None
        };
        let tokens = if !logprobs {
            Vec::new()
        } else {
            let upto = match (finish, step) {
                (Some(_), _) | (None, None) => usize::MAX,
                (None, Some(step)) => step + 1,
            };
            let records = choice.sampler.records_from(choice.delivered);
            let take = upto.saturating_sub(choice.delivered).min(records.len());
            choice.delivered += take;
            records.into_iter().take(take).collect()
        };
        Delta {
            index,
            text: out,
            tokens,
            finish_reason: finish,
        }
    }

    /// Runs to the end and returns each choice's whole text, tokens and finish reason.
    pub async fn collect(&mut self) -> Result<Vec<Delta>, GenerateError> {
        let mut whole: Vec<Delta> = (0..self.choices.len())
            .map(|index| Delta {
                index,
                ..Delta::default()
            })
            .collect();
        while let Some(delta) = self.next().await {
            let delta = delta?;
            let slot = &mut whole[delta.index];
            slot.text.push_str(&delta.text);
            slot.tokens.extend(delta.tokens);
            slot.finish_reason = delta.finish_reason.or(slot.finish_reason);
        }
        Ok(whole)
    }
}

/// Text, step marker and finish reason of one engine chunk; `None` for responses that
/// carry nothing for us.
fn chunk_parts(response: Response) -> Option<(String, Option<usize>, Option<String>)> {
    match response {
        Response::Chunk(chunk) => chunk.choices.into_iter().next().map(|c| {
            (
                c.delta.content.unwrap_or_default(),
                c.logprobs.and_then(|l| step_of_reported_logprob(l.logprob)),
                c.finish_reason,
            )
        }),
        Response::CompletionChunk(chunk) => chunk.choices.into_iter().next().map(|c| {
            (
                c.text,
                c.logprobs.and_then(|l| step_of_reported_logprob(l.logprob)),
                c.finish_reason,
            )
        }),
        _ => None,
    }
}

/// The error an engine response reports, if it is one.
fn response_error(endpoint: Endpoint, response: &Response) -> Option<GenerateError> {
    match response {
        Response::ValidationError(e) => Some(engine_error(endpoint, true, e.to_string())),
        Response::InternalError(e) => Some(engine_error(endpoint, false, e.to_string())),
        Response::ModelError(e, _) | Response::CompletionModelError(e, _) => {
            Some(engine_error(endpoint, false, e.clone()))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_validation_errors_name_their_parameter() {
        let e = engine_error(Endpoint::Chat, true, "Invalid grammar. x".into());
        assert!(
            matches!(
                e,
                GenerateError::Invalid {
                    param: "response_format",
                    ..
                }
            ),
            "{e:?}"
        );
        let e = engine_error(
            Endpoint::Completion,
            true,
            "Prompt sequence length is greater than 8192".into(),
        );
        assert!(
            matches!(
                e,
                GenerateError::Invalid {
                    param: "prompt",
                    code: "context_length_exceeded",
                    ..
                }
            ),
            "{e:?}"
        );
        let e = engine_error(Endpoint::Chat, false, "boom".into());
        assert!(matches!(e, GenerateError::Engine(_)), "{e:?}");
        assert_eq!(choice_seed(Some(5), 0), 5);
        assert_ne!(choice_seed(Some(5), 1), 5);
    }
}
