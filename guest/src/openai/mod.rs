//! The OpenAI wire format: request bodies ([`types`]), their validation into a [`Plan`]
//! ([`plan`]), and the response documents ([`render`]). Nothing here knows HTTP: the
//! handlers in `http::handlers` turn what these return into responses.

pub mod plan;
pub mod render;
pub mod types;

pub use plan::{
    check_schema, Bounds, Endpoint, Invalid, Plan, MAX_COMPLETION_LOGPROBS, MAX_N, MAX_PROMPTS,
    MAX_TOP_LOGPROBS,
};
pub use types::{
    unsupported_reason, ChatCompletionRequest, ChatMessage, CompletionRequest, Content,
    ContentPart, EmbeddingRequest, JsonSchemaFormat, Prompt, ResponseFormat, Stop, StreamOptions,
};
