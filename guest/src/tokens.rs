//! The engine's own tokenizer, for counting prompt tokens and spelling out tokens in
//! `logprobs`.
//!
//! mistral.rs exposes its tokenizer only through `Tokenize` / `Detokenize` requests on
//! the engine's queue, and its handlers `expect` that the reply channel is still open:
//! a caller that gives up early (a client that disconnects) would panic the engine
//! thread. So every call here runs in a detached task that owns the reply channel
//! until the engine has answered, whatever happens to the caller.
//!
//! Counting with the engine's tokenizer and the same flags `add_request` uses (chat
//! template with the generation prompt, special tokens added) gives exactly the prompt
//! length the engine will process.

use std::collections::HashMap;
use std::sync::Mutex;

use either::Either;
use mistralrs::core::{DetokenizationRequest, RequestMessage, TokenizationRequest};
use mistralrs::{Model, Request};
use tokio::sync::mpsc;

/// Why a tokenizer call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// The engine could not be reached or gave no answer.
    Unavailable(String),
    /// The engine answered with an error about the input (e.g. the chat template).
    Refused(String),
}

/// Sends the request `make` builds and waits for the engine's answer.
async fn engine_call<T: Send + 'static>(
    model: &Model,
    make: impl FnOnce(mpsc::Sender<anyhow::Result<T>>) -> Request,
) -> Result<T, CallError> {
    let unavailable = |m: String| CallError::Unavailable(m);
    let sender = model
        .inner()
        .get_sender(None)
        .map_err(|e| unavailable(format!("the engine is not available: {e:?}")))?;
    let (tx, mut rx) = mpsc::channel(1);
    let request = make(tx);
    let task = tokio::spawn(async move {
        sender
            .send(request)
            .await
            .map_err(|_| "the engine stopped".to_string())?;
        rx.recv()
            .await
            .ok_or_else(|| "the engine dropped the request".to_string())
    });
    task.await
        .map_err(|e| unavailable(format!("engine call failed: {e}")))?
        .map_err(unavailable)?
        .map_err(|e| CallError::Refused(format!("{e:#}")))
}

/// The prompt's token ids, exactly as the engine will tokenize `prompt`.
pub async fn prompt_tokens(model: &Model, prompt: &RequestMessage) -> Result<Vec<u32>, CallError> {
    let text = match prompt {
        RequestMessage::Chat { messages, .. } => Either::Left(messages.clone()),
        RequestMessage::Completion { text, .. } => Either::Right(text.clone()),
        _ => {
            return Err(CallError::Refused(
                "only chat and completion prompts are counted".into(),
            ))
        }
    };
    engine_call(model, |response| {
        Request::Tokenize(TokenizationRequest {
            text,
            tools: None,
            add_generation_prompt: true,
            add_special_tokens: true,
            enable_thinking: None,
            reasoning_effort: None,
            response,
        })
    })
    .await
}

/// Token id to text, cached: a vocabulary is small and fixed while the model is loaded.
#[derive(Default)]
pub struct TokenTexts {
    cache: Mutex<HashMap<u32, String>>,
}

impl TokenTexts {
    /// The text of each id (special tokens included), decoded by the engine.
    pub async fn texts(&self, model: &Model, ids: &[u32]) -> Result<Vec<String>, CallError> {
        let mut missing: Vec<u32> = {
            let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            ids.iter()
                .copied()
                .filter(|id| !cache.contains_key(id))
                .collect()
        };
        missing.sort_unstable();
        missing.dedup();
        let decoded = futures::future::join_all(missing.iter().map(|&id| {
            engine_call(model, move |response| {
                Request::Detokenize(DetokenizationRequest {
                    tokens: vec![id],
                    skip_special_tokens: false,
                    response,
                })
            })
        }))
        .await;
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        for (id, text) in missing.into_iter().zip(decoded) {
            cache.insert(id, text?);
        }
        Ok(ids
            .iter()
            .map(|id| cache.get(id).cloned().unwrap_or_default())
            .collect())
    }
}

/// The token ids of a plain text, tokenized as the engine tokenizes stop sequences
/// (`add_special_tokens` as given, no chat template).
pub async fn text_tokens(
    model: &Model,
    text: &str,
    add_special_tokens: bool,
) -> Result<Vec<u32>, CallError> {
    let text = text.to_string();
    engine_call(model, move |response| {
        Request::Tokenize(TokenizationRequest {
            text: Either::Right(text),
            tools: None,
            add_generation_prompt: false,
            add_special_tokens,
            enable_thinking: None,
            reasoning_effort: None,
            response,
        })
    })
    .await
}
