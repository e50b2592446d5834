//! The OpenAI response objects we send: chat completions, text completions, their
//! streamed chunks, `usage` and both `logprobs` shapes.
//!
//! Built here from our own records rather than serialised from the engine's types, so
//! the shapes are exactly OpenAI's and the numbers are the ones we counted.

use std::collections::HashMap;

use serde_json::{json, Value};

use crate::engine::generate::{Delta, Usage};
use crate::engine::sampling::TokenChoice;
use crate::openai::plan::Plan;

/// Token id to text, for `logprobs`.
pub type TokenTexts = HashMap<u32, String>;

/// Every token id a `logprobs` rendering of `deltas` needs.
pub fn token_ids<'a>(deltas: impl IntoIterator<Item = &'a Delta>) -> Vec<u32> {
    deltas
        .into_iter()
        .flat_map(|d| d.tokens.iter())
        .flat_map(|t| std::iter::once(t.token).chain(t.top.iter().map(|(id, _)| *id)))
        .collect()
}

/// OpenAI `usage`. Prefix caching is off in the engine, so no prompt token is served
/// from a cache: `cached_tokens` is exactly 0.
pub fn usage(u: Usage) -> Value {
    json!({
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.prompt_tokens + u.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": 0},
    })
}

fn text_of(texts: &TokenTexts, id: u32) -> &str {
    texts.get(&id).map(String::as_str).unwrap_or_default()
}

fn token_entry(texts: &TokenTexts, id: u32, logprob: f32) -> Value {
    let text = text_of(texts, id);
    json!({"token": text, "logprob": logprob, "bytes": text.as_bytes()})
}

/// Chat `logprobs`: `{"content": [...], "refusal": null}`.
pub fn chat_logprobs(tokens: &[TokenChoice], texts: &TokenTexts) -> Value {
    let content: Vec<Value> = tokens
        .iter()
        .map(|t| {
            let mut entry = token_entry(texts, t.token, t.logprob);
            let top: Vec<Value> = t
                .top
                .iter()
                .map(|(id, lp)| token_entry(texts, *id, *lp))
                .collect();
            if let Some(map) = entry.as_object_mut() {
                map.insert("top_logprobs".into(), top.into());
            }
            entry
        })
        .collect();
    json!({"content": content, "refusal": null})
}

/// Completions `logprobs`: parallel lists of tokens, their log probabilities and the
/// alternatives as `{token: logprob}` maps.
pub fn completion_logprobs(tokens: &[TokenChoice], texts: &TokenTexts) -> Value {
    let top: Vec<Value> = tokens
        .iter()
        .map(|t| {
            let map: serde_json::Map<String, Value> = t
                .top
                .iter()
                .map(|(id, lp)| (text_of(texts, *id).to_string(), json!(lp)))
                .collect();
            Value::Object(map)
        })
        .collect();
    json!({
        "tokens": tokens.iter().map(|t| text_of(texts, t.token)).collect::<Vec<_>>(),
        "token_logprobs": tokens.iter().map(|t| t.logprob).collect::<Vec<_>>(),
        "top_logprobs": top,
    })
}

/// The fields every response object starts with.
pub struct Head<'a> {
    pub id: &'a str,
    pub model: &'a str,
    pub created: u64,
}

impl Head<'_> {
    fn object(&self, object: &str, choices: Vec<Value>, usage: Option<Value>) -> Value {
        let mut value = json!({
            "id": self.id,
            "object": object,
            "created": self.created,
            "model": self.model,
            "system_fingerprint": null,
            "choices": choices,
        });
        if let (Some(map), Some(usage)) = (value.as_object_mut(), usage) {
            map.insert("usage".into(), usage);
        }
        value
    }

    /// A non-streamed `chat.completion`.
    pub fn chat_completion(
        &self,
        choices: &[Delta],
        logprobs: bool,
        texts: &TokenTexts,
        u: Usage,
    ) -> Value {
        let choices = choices
            .iter()
            .map(|c| {
                json!({
                    "index": c.index,
                    "message": {"role": "assistant", "content": c.text, "refusal": null},
                    "logprobs": logprobs.then(|| chat_logprobs(&c.tokens, texts)),
                    "finish_reason": c.finish_reason.unwrap_or("stop"),
                })
            })
            .collect();
        self.object("chat.completion", choices, Some(usage(u)))
    }

    /// A `chat.completion.chunk`; `usage` is the field's value when the client asked
    /// for usage (null on every chunk but the last).
    pub fn chat_chunk(&self, choices: Vec<Value>, usage: Option<Value>) -> Value {
        self.object("chat.completion.chunk", choices, usage)
    }

    /// A non-streamed `text_completion`; `prefixes` are the echoed prompts per choice.
    pub fn completion(
        &self,
        choices: &[Delta],
        prefixes: &[&str],
        logprobs: bool,
        texts: &TokenTexts,
        u: Usage,
    ) -> Value {
        let choices = choices
            .iter()
            .map(|c| {
                let prefix = prefixes.get(c.index).copied().unwrap_or_default();
                json!({
                    "index": c.index,
                    "text": format!("{prefix}{}", c.text),
                    "logprobs": logprobs.then(|| completion_logprobs(&c.tokens, texts)),
                    "finish_reason": c.finish_reason.unwrap_or("stop"),
                })
            })
            .collect();
        self.object("text_completion", choices, Some(usage(u)))
    }

    /// A streamed `text_completion` chunk.
    pub fn completion_chunk(&self, choices: Vec<Value>, usage: Option<Value>) -> Value {
        self.object("text_completion", choices, usage)
    }
}

/// One streamed chat choice.
pub fn chat_chunk_choice(delta: &Delta, logprobs: bool, texts: &TokenTexts) -> Value {
    let mut content = serde_json::Map::new();
    if !delta.text.is_empty() || delta.finish_reason.is_none() {
        content.insert("content".into(), delta.text.clone().into());
    }
    json!({
        "index": delta.index,
        "delta": content,
        "logprobs": logprobs.then(|| chat_logprobs(&delta.tokens, texts)),
        "finish_reason": delta.finish_reason,
    })
}

/// One streamed completions choice.
pub fn completion_chunk_choice(delta: &Delta, logprobs: bool, texts: &TokenTexts) -> Value {
    json!({
        "index": delta.index,
        "text": delta.text,
        "logprobs": logprobs.then(|| completion_logprobs(&delta.tokens, texts)),
        "finish_reason": delta.finish_reason,
    })
}

/// The echoed prompt of each choice (empty without `echo`).
pub fn echo_prefixes(plan: &Plan) -> Vec<&str> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logprobs_shapes_follow_openai() {
        let tokens = vec![TokenChoice {
            token: 1,
            logprob: -0.5,
            top: vec![(1, -0.5), (2, -1.5)],
        }];
        let texts: TokenTexts = [(1, "Hi".to_string()), (2, " yo".to_string())].into();
        let chat = chat_logprobs(&tokens, &texts);
        assert_eq!(chat["content"][0]["token"], "Hi");
        assert_eq!(chat["content"][0]["bytes"], json!([72, 105]));
        assert_eq!(chat["content"][0]["top_logprobs"][1]["token"], " yo");
        let legacy = completion_logprobs(&tokens, &texts);
        assert_eq!(legacy["tokens"], json!(["Hi"]));
        assert_eq!(legacy["token_logprobs"], json!([-0.5]));
        assert_eq!(legacy["top_logprobs"][0][" yo"], json!(-1.5));
        assert_eq!(
            token_ids(&[Delta {
                tokens,
                ..Delta::default()
            }]),
            vec![1, 1, 2]
        );
        let u = usage(Usage {
            prompt_tokens: 3,
            completion_tokens: 4,
        });
        assert_eq!(u["total_tokens"], 7);
        assert_eq!(u["prompt_tokens_details"]["cached_tokens"], 0);
    }
}
