//! The OpenAI request bodies this server accepts, as serde types (wire format only).
//!
//! Requests are parsed strictly: an unknown field is an error rather than something we
//! silently ignore, because a client that sends `tools` or `logit_bias` and gets an
//! answer that ignored them has been misled. Parameters OpenAI defines but this server
//! cannot honour get a 400 that says why ([`unsupported_reason`]).

use serde::Deserialize;
use serde_json::Value;

/// Why a parameter OpenAI defines is refused here, if it is.
pub fn unsupported_reason(param: &str) -> Option<&'static str> {
    Some(match param {
        "tools" | "tool_choice" | "parallel_tool_calls" | "functions" | "function_call" => {
            "tool calling is not supported: this server does not implement tool calls, and the \
             bundled model's chat template does not render tool definitions"
        }
        "logit_bias" => "logit_bias is not supported by this server",
        "suffix" => "suffix (insertion) is not supported: the engine only appends text",
        "best_of" => "best_of different from n is not supported by this server",
        "audio" | "modalities" => "this model produces text only",
        "prediction" => "predicted outputs are not supported by this server",
        "reasoning_effort" => "this model has no reasoning-effort control",
        "web_search_options" => "web search is not available inside the confidential VM",
        "store" | "metadata" | "service_tier" => {
            "this server stores nothing and has a single service tier"
        }
        _ => return None,
    })
}

/// `stream_options`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamOptions {
    pub include_usage: Option<bool>,
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

/// `response_format.json_schema`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonSchemaFormat {
    pub name: String,
    pub description: Option<String>,
    pub schema: Option<Value>,
    pub strict: Option<bool>,
}

/// `response_format`.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ResponseFormat {
    // Struct variants, so that `deny_unknown_fields` applies to them too.
    Text {},
    JsonObject {},
    JsonSchema { json_schema: JsonSchemaFormat },
}

/// `POST /v1/chat/completions` body.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatCompletionRequest {
    pub model: String,
    pub messages: Vec<ChatMessage>,
    pub stream: Option<bool>,
    pub stream_options: Option<StreamOptions>,
    pub max_tokens: Option<u64>,
    pub max_completion_tokens: Option<u64>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub n: Option<u64>,
    pub stop: Option<Stop>,
    pub presence_penalty: Option<f32>,
    pub frequency_penalty: Option<f32>,
    pub seed: Option<i64>,
    pub logprobs: Option<bool>,
    pub top_logprobs: Option<u64>,
    pub response_format: Option<ResponseFormat>,
    /// End-user id, accepted as OpenAI does; it does not change generation there either.
    pub user: Option<String>,
}

/// `prompt` of `/v1/completions`: a string or a list of strings.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Prompt {
    One(String),
    Many(Vec<String>),
}

/// `POST /v1/completions` body.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompletionRequest {
    pub model: String,
    pub prompt: Prompt,
    pub stream: Option<bool>,
    pub stream_options: Option<StreamOptions>,
    pub max_tokens: Option<u64>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub n: Option<u64>,
    pub stop: Option<Stop>,
    pub presence_penalty: Option<f32>,
    pub frequency_penalty: Option<f32>,
    pub seed: Option<i64>,
    pub logprobs: Option<u64>,
    pub echo: Option<bool>,
    /// Accepted when equal to `n` (it then changes nothing); otherwise refused.
    pub best_of: Option<u64>,
    pub user: Option<String>,
}

/// `POST /v1/embeddings` body (validated so that bad input still gets a precise 400).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbeddingRequest {
    pub model: String,
    pub input: Value,
    pub encoding_format: Option<String>,
    pub dimensions: Option<u64>,
    pub user: Option<String>,
}
