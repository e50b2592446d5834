//! The OpenAI wire format we accept and produce.
//!
//! Requests are parsed strictly: an unknown field is an error rather than something we
//! silently ignore, because a client that sends `seed` or `tools` and gets an answer that
//! ignored them has been misled. Responses are built here rather than serialised from
//! the engine's types so their shape is exactly OpenAI's.

use mistralrs::{RequestBuilder, SamplingParams, StopTokens, TextMessageRole};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// `stream_options`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

/// `stop`: a string or a list of strings.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

/// One part of an array-form message content.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContentPart {
    #[serde(rename = "type")]
    pub kind: String,
    pub text: Option<String>,
}

/// Message content: a string, or an array of text parts.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<ContentPart>),
}

/// One chat message.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatMessage {
    pub role: String,
    pub content: Option<Content>,
    pub name: Option<String>,
}

/// `POST /v1/chat/completions` body.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatCompletionRequest {
    pub model: String,
    pub messages: Vec<ChatMessage>,
    #[serde(default)]
    pub stream: bool,
    pub stream_options: Option<StreamOptions>,
    pub max_tokens: Option<u64>,
    pub max_completion_tokens: Option<u64>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub n: Option<u64>,
    pub stop: Option<Stop>,
    pub presence_penalty: Option<f32>,
    pub frequency_penalty: Option<f32>,
    /// End-user id, accepted as OpenAI does; it does not change generation.
    pub user: Option<String>,
}

/// A request that failed validation: the message and the offending parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub message: String,
    pub param: Option<&'static str>,
}

fn invalid(param: &'static str, message: impl Into<String>) -> Invalid {
    Invalid {
        message: message.into(),
        param: Some(param),
    }
}

/// A validated request, ready for the engine.
pub struct PreparedChat {
    pub builder: RequestBuilder,
    pub max_tokens: usize,
    pub n: usize,
    pub stream: bool,
    pub include_usage: bool,
}

impl ChatCompletionRequest {
    /// Checks ranges and builds the engine request.
    pub fn prepare(
        &self,
        default_max_tokens: usize,
        max_tokens_limit: usize,
    ) -> Result<PreparedChat, Invalid> {
        if self.messages.is_empty() {
            return Err(invalid(
                "messages",
                "'messages' must contain at least one message",
            ));
        }
        if self.max_tokens.is_some() && self.max_completion_tokens.is_some() {
            return Err(invalid(
                "max_tokens",
                "give either 'max_tokens' or 'max_completion_tokens', not both",
            ));
        }
        let max_tokens = match self.max_completion_tokens.or(self.max_tokens) {
            None => default_max_tokens,
            Some(0) => return Err(invalid("max_tokens", "'max_tokens' must be at least 1")),
            Some(v) if v > max_tokens_limit as u64 => {
                return Err(invalid(
                    "max_tokens",
                    format!("'max_tokens' is {v}, above this server's limit of {max_tokens_limit}"),
                ))
            }
            Some(v) => v as usize,
        };
        let temperature = match self.temperature {
            Some(t) if !(0.0..=2.0).contains(&t) => {
                return Err(invalid(
                    "temperature",
                    format!("'temperature' is {t}; must be in [0, 2]"),
                ))
            }
            // OpenAI's default is 1. mistral.rs reads a missing temperature as 1.0 and
            // switches to argmax below 1e-7, so 0 passes through as 0.
            Some(t) => Some(t),
            None => Some(1.0),
        };
        let top_p = match self.top_p {
            Some(p) if !(p > 0.0 && p <= 1.0) => {
                return Err(invalid(
                    "top_p",
                    format!("'top_p' is {p}; must be in (0, 1]"),
                ))
            }
            other => other,
        };
        for (name, value) in [
            ("presence_penalty", self.presence_penalty),
            ("frequency_penalty", self.frequency_penalty),
        ] {
            if let Some(v) = value {
                if !(-2.0..=2.0).contains(&v) {
                    return Err(invalid(
                        if name == "presence_penalty" {
                            "presence_penalty"
                        } else {
                            "frequency_penalty"
                        },
                        format!("'{name}' is {v}; must be in [-2, 2]"),
                    ));
                }
            }
        }
        let n = match self.n {
            None => 1,
            Some(n) if (1..=8).contains(&n) => n as usize,
            Some(n) => return Err(invalid("n", format!("'n' is {n}; must be in [1, 8]"))),
        };
        let stop = match &self.stop {
            None => None,
            Some(Stop::One(s)) => Some(vec![s.clone()]),
            Some(Stop::Many(v)) if v.len() > 4 => {
                return Err(invalid("stop", "'stop' may hold at most 4 sequences"))
            }
            Some(Stop::Many(v)) => Some(v.clone()),
        };
        if stop
            .as_ref()
            .is_some_and(|v| v.iter().any(String::is_empty))
        {
            return Err(invalid("stop", "'stop' sequences must not be empty"));
        }
        if self.stream_options.is_some() && !self.stream {
            return Err(invalid(
                "stream_options",
                "'stream_options' is only allowed when 'stream' is true",
            ));
        }

        let mut builder = RequestBuilder::new();
        for (i, m) in self.messages.iter().enumerate() {
            let role = match m.role.as_str() {
                "system" | "developer" => TextMessageRole::System,
                "user" => TextMessageRole::User,
                "assistant" => TextMessageRole::Assistant,
                other => {
                    return Err(Invalid {
                        message: format!(
                            "messages[{i}].role is '{other}'; supported roles are system, \
                             developer, user and assistant"
                        ),
                        param: Some("messages"),
                    })
                }
            };
            let text = match &m.content {
                None => String::new(),
                Some(Content::Text(t)) => t.clone(),
                Some(Content::Parts(parts)) => {
                    let mut text = String::new();
                    for part in parts {
                        match (part.kind.as_str(), &part.text) {
                            ("text", Some(t)) => text.push_str(t),
                            (kind, _) => {
                                return Err(Invalid {
                                    message: format!(
                                        "messages[{i}].content has a part of type '{kind}'; \
                                         this model accepts text parts only"
                                    ),
                                    param: Some("messages"),
                                })
                            }
                        }
                    }
                    text
                }
            };
            builder = builder.add_message(role, text);
        }
        let mut sampling = SamplingParams::deterministic();
        sampling.top_k = None;
        sampling.temperature = temperature;
        sampling.top_p = top_p;
        sampling.presence_penalty = self.presence_penalty;
        sampling.frequency_penalty = self.frequency_penalty;
        sampling.max_len = Some(max_tokens);
        sampling.n_choices = n;
        sampling.stop_toks = stop.map(StopTokens::Seqs);
        builder = builder.set_sampling(sampling);
        Ok(PreparedChat {
            builder,
            max_tokens,
            n,
            stream: self.stream,
            include_usage: self
                .stream_options
                .as_ref()
                .is_some_and(|o| o.include_usage),
        })
    }
}

/// OpenAI `usage`.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq, Default)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub total_tokens: usize,
}

impl From<&mistralrs::Usage> for Usage {
    fn from(u: &mistralrs::Usage) -> Self {
        Self {
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
            total_tokens: u.prompt_tokens + u.completion_tokens,
        }
    }
}

/// OpenAI finish reasons from the engine's stop reasons.
pub fn finish_reason(engine: &str) -> &'static str {
    match engine {
        "length" => "length",
        "tool_calls" => "tool_calls",
        "canceled" => "stop",
        _ => "stop",
    }
}

/// A non-streaming `chat.completion` object.
pub fn chat_completion(
    id: &str,
    model: &str,
    created: u64,
    response: &mistralrs::ChatCompletionResponse,
) -> Value {
    let choices: Vec<Value> = response
        .choices
        .iter()
        .map(|c| {
            json!({
                "index": c.index,
                "message": {
                    "role": "assistant",
                    "content": c.message.content.clone().unwrap_or_default(),
                    "refusal": null,
                },
                "logprobs": null,
                "finish_reason": finish_reason(&c.finish_reason),
            })
        })
        .collect();
    json!({
        "id": id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "system_fingerprint": null,
        "choices": choices,
        "usage": Usage::from(&response.usage),
    })
}

/// One `chat.completion.chunk` with the given choices.
pub fn chat_chunk(
    id: &str,
    model: &str,
    created: u64,
    choices: Vec<Value>,
    usage: Option<Value>,
) -> Value {
    let mut chunk = json!({
        "id": id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "system_fingerprint": null,
        "choices": choices,
    });
    if let (Some(map), Some(usage)) = (chunk.as_object_mut(), usage) {
        map.insert("usage".into(), usage);
    }
    chunk
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(body: Value) -> Result<ChatCompletionRequest, serde_json::Error> {
        serde_json::from_value(body)
    }

    #[test]
    fn strict_parsing_rejects_unknown_fields() {
        let err = req(json!({"model":"m","messages":[],"bogus":1})).unwrap_err();
        assert!(err.to_string().contains("unknown field `bogus`"), "{err}");
        let err = req(json!({"model":"m"})).unwrap_err();
        assert!(
            err.to_string().contains("missing field `messages`"),
            "{err}"
        );
    }

    #[test]
    fn validates_ranges_and_defaults() {
        let ok = req(json!({"model":"m","messages":[{"role":"user","content":"hi"}]})).unwrap();
        let p = ok.prepare(16, 64).unwrap();
        assert_eq!(
            (p.max_tokens, p.n, p.stream, p.include_usage),
            (16, 1, false, false)
        );
        for (body, param) in [
            (json!({"model":"m","messages":[]}), "messages"),
            (
                json!({"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":65}),
                "max_tokens",
            ),
            (
                json!({"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":0}),
                "max_tokens",
            ),
            (
                json!({"model":"m","messages":[{"role":"user","content":"x"}],"temperature":3.0}),
                "temperature",
            ),
            (
                json!({"model":"m","messages":[{"role":"user","content":"x"}],"top_p":0.0}),
                "top_p",
            ),
            (
                json!({"model":"m","messages":[{"role":"user","content":"x"}],"n":9}),
                "n",
            ),
            (
                json!({"model":"m","messages":[{"role":"robot","content":"x"}]}),
                "messages",
            ),
            (
                json!({"model":"m","messages":[{"role":"user","content":"x"}],"stream_options":{"include_usage":true}}),
                "stream_options",
            ),
            (
                json!({"model":"m","messages":[{"role":"user","content":[{"type":"image_url"}]}]}),
                "messages",
            ),
        ] {
            let r = req(body.clone()).unwrap();
            let err = r
                .prepare(16, 64)
                .err()
                .unwrap_or_else(|| panic!("accepted {body}"));
            assert_eq!(err.param, Some(param), "{body}: {}", err.message);
        }
    }
}
