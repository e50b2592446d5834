//! A generation as Server-Sent Events.
//!
//! The events wait in a buffer bounded in bytes and in time (`http::stream_buffer`): a
//! client that stops reading is cancelled after the stall timeout and never slows the
//! engine. Every event is padded to a multiple of `stream_pad_bytes`, so the host relay
//! cannot read token lengths off TLS record sizes. However the stream ends it is billed:
//! a client that leaves or stalls pays for what was generated, a stream the server cuts
//! short (deadline, engine failure) for what the client was sent; a finished stream ends
//! with `[DONE]` and then the signed receipt as a `cocoon.receipt` event.

use std::time::Duration;

use bytes::Bytes;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::Response;
use serde_json::{json, Value};

use crate::engine::generate::{Delta, GenerateError, Generation};
use crate::http::body::Body;
use crate::http::error::ApiError;
use crate::http::handlers::answer::{token_texts, AnswerCtx, Bill};
use crate::http::state::AppState;
use crate::http::stream_buffer::{self, SendError, StreamSender};
use crate::openai::plan::{Endpoint, Plan};
use crate::openai::render::{self, Head};

/// The `text/event-stream` response; the events are written by a task of their own.
pub fn stream(ctx: AnswerCtx) -> Response<Body> {
    let limits = &ctx.bill.state.config.limits;
    let (tx, rx) = stream_buffer::channel(
        limits.max_stream_buffer_bytes,
        Duration::from_secs(limits.stream_stall_timeout_secs),
        ctx.deadline,
    );
    let out = EventWriter {
        tx,
        bucket: limits.stream_pad_bytes,
    };
    tokio::spawn(write_stream(ctx, out));
    let mut response = Response::new(rx.into_body());
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert("cache-control", HeaderValue::from_static("no-cache"));
    response
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

impl From<SendError> for StreamEnd {
    fn from(e: SendError) -> Self {
        match e {
            SendError::Deadline => StreamEnd::ServerSide("timeout"),
            SendError::Closed | SendError::Stalled => StreamEnd::ClientGone,
        }
    }
}

/// Writes padded events into the stream's bounded buffer.
struct EventWriter {
    tx: StreamSender,
    bucket: usize,
}

impl EventWriter {
    /// `data: <value>` as one event.
    async fn data(&mut self, value: &Value) -> Result<(), SendError> {
        self.event(format!("data: {value}\n\n")).await
    }

    async fn event(&mut self, event: String) -> Result<(), SendError> {
        self.tx.send(padded(event, self.bucket)).await
    }
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

/// The chunk documents of one stream.
struct Chunks<'a> {
    head: Head<'a>,
    plan: &'a Plan,
}

impl Chunks<'_> {
    /// A chunk with `choices`; with `include_usage` every chunk carries `usage` (null
    /// but in the last).
    fn chunk(&self, choices: Vec<Value>, usage: Option<Value>) -> Value {
        let usage = usage.or_else(|| self.plan.include_usage.then_some(Value::Null));
        match self.plan.endpoint {
            Endpoint::Chat => self.head.chat_chunk(choices, usage),
            Endpoint::Completion => self.head.completion_chunk(choices, usage),
        }
    }

    /// The first chunk's choices: the assistant role (chat), the echoed prompts
    /// (completions with `echo`), or none.
    fn opening(&self) -> Vec<Value> {
        let plan = self.plan;
        match plan.endpoint {
            Endpoint::Chat => (0..plan.prompts.len() * plan.n)
                .map(|i| json!({"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": null, "finish_reason": null}))
                .collect(),
            Endpoint::Completion if plan.echo => render::echo_prefixes(plan)
                .iter()
                .enumerate()
                .map(|(i, p)| json!({"index": i, "text": p, "logprobs": null, "finish_reason": null}))
                .collect(),
            Endpoint::Completion => Vec::new(),
        }
    }

    /// One delta as its choice.
    fn choice(&self, delta: &Delta, texts: &render::TokenTexts) -> Value {
        let logprobs = self.plan.logprobs.is_some();
        match self.plan.endpoint {
            Endpoint::Chat => render::chat_chunk_choice(delta, logprobs, texts),
            Endpoint::Completion => render::completion_chunk_choice(delta, logprobs, texts),
        }
    }
}

/// The stream's task: the events, then the bill. The admission slot (`ctx.permit`) and
/// the KV blocks (`ctx.kv`) are held until the task ends.
async fn write_stream(mut ctx: AnswerCtx, mut out: EventWriter) {
    let state = ctx.bill.state.clone();
    let chunks = Chunks {
        head: Head {
            id: &ctx.bill.id,
            model: &state.engine.id,
            created: ctx.created,
        },
        plan: &ctx.plan,
    };
    let end = write_events(&state, &chunks, &mut ctx.generation, &mut out).await;
    close(end, ctx.generation, &ctx.bill, &mut out).await;
}

/// Sends the opening chunk, a chunk per delta and the usage chunk; returns how the
/// stream ended.
async fn write_events(
    state: &AppState,
    chunks: &Chunks<'_>,
    generation: &mut Generation,
    out: &mut EventWriter,
) -> StreamEnd {
    let opening = chunks.opening();
    if !opening.is_empty() {
        if let Err(e) = out.data(&chunks.chunk(opening, None)).await {
            return e.into();
        }
    }
    let mut finish = "stop";
    while let Some(delta) = generation.next().await {
        let delta = match delta {
            Ok(d) => d,
            Err(e) => return failed(generation, e, out).await,
        };
        if delta.index == 0 {
            if let Some(reason) = delta.finish_reason {
                finish = reason;
            }
        }
        let texts = match token_texts(state, std::slice::from_ref(&delta)).await {
            Ok(t) => t,
            Err(e) => {
                let _ = out.data(&e.body()).await;
                return StreamEnd::ServerSide("error");
            }
        };
        let choice = chunks.choice(&delta, &texts);
        if let Err(e) = out.data(&chunks.chunk(vec![choice], None)).await {
            return e.into();
        }
    }
    if chunks.plan.include_usage {
        let usage = render::usage(generation.usage());
        if let Err(e) = out.data(&chunks.chunk(Vec::new(), Some(usage))).await {
            return e.into();
        }
    }
    StreamEnd::Finished(finish)
}

/// A generation that failed mid-stream: the client that could not keep up is gone;
/// otherwise it gets the error as a last event.
async fn failed(generation: &Generation, e: GenerateError, out: &mut EventWriter) -> StreamEnd {
    if generation.overflowed() {
        return StreamEnd::ClientGone;
    }
    let end = if matches!(e, GenerateError::Timeout { .. }) {
        StreamEnd::ServerSide("timeout")
    } else {
        StreamEnd::ServerSide("error")
    };
    let _ = out.data(&ApiError::from(e).body()).await;
    end
}

/// Bills the stream (dropping the generation cancels what still runs); a finished
/// stream ends with `[DONE]` and then its receipt.
async fn close(end: StreamEnd, generation: Generation, bill: &Bill, out: &mut EventWriter) {
    let (finish, usage) = match end {
        StreamEnd::Finished(finish) => (finish, generation.probe().generated()),
        StreamEnd::ClientGone => ("cancelled", generation.probe().generated()),
        StreamEnd::ServerSide(finish) => (finish, generation.delivered()),
    };
    drop(generation);
    if !matches!(end, StreamEnd::Finished(_)) {
        bill.record(finish, usage, out.tx.sent_sha256());
        return;
    }
    // [DONE] belongs to the response the receipt hashes.
    if out.event("data: [DONE]\n\n".into()).await.is_err() {
        bill.record("cancelled", usage, out.tx.sent_sha256());
        return;
    }
    // After [DONE], so SDKs that stop reading there never see it; clients that want the
    // receipt read one more event.
    if let Some(receipt) = bill.record(finish, usage, out.tx.sent_sha256()) {
        let event = json!({"object": "cocoon.receipt", "receipt": receipt});
        let _ = out
            .event(format!("event: cocoon.receipt\ndata: {event}\n\n"))
            .await;
    }
}
