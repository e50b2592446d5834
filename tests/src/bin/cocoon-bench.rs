//! `cocoon-bench`: completion tokens per second through our HTTPS server (attested TLS,
//! SSE streaming, optionally through the host agent) versus mistral.rs called in-process
//! on the same model, prompts and greedy decoding. Prints each figure and the ratios.
//!
//! Both sides run in this one process run, one after the other, so they see the same
//! machine; the in-process engine is dropped before the server starts.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use clap::Parser;
use cocoon_client::{connect_attested, Endpoint};
use cocoon_guest::engine::{Engine, ModelSource, PreparedModel};
use cocoon_tests::start_appliance;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use mistralrs::{ResponseOk, SamplingParams, TextMessageRole};

#[derive(Parser)]
#[command(about = "Tokens/s: Cocoon HTTPS server vs in-process mistral.rs")]
struct Args {
    /// GGUF file or model directory.
    #[arg(long)]
    model: PathBuf,
    /// Completion tokens per request.
    #[arg(long, default_value_t = 64)]
    max_tokens: usize,
    /// Times each prompt is sent (after one warm-up).
    #[arg(long, default_value_t = 2)]
    rounds: usize,
}

const PROMPTS: &[&str] = &[
    "Write a short story about a lighthouse keeper.",
    "Explain how a bicycle works to a child.",
    "List some reasons to learn a second language.",
];

/// Completion tokens and wall time for a series of requests.
#[derive(Default, Clone, Copy)]
struct Tally {
    tokens: usize,
    elapsed: Duration,
}

impl Tally {
    fn rate(&self) -> f64 {
        self.tokens as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

async fn in_process(args: &Args) -> Result<Tally> {
    let source = ModelSource::from_path(&args.model)?;
    // Staged like the guest does it, so both load the same way.
    let prepared = PreparedModel::stage(&source, std::path::Path::new("/dev/shm"))?;
    let engine = Engine::load(prepared, source.default_id(), 8, None).await?;
    let run = |prompt: &'static str| {
        let engine = &engine;
        async move {
            let mut sampling = SamplingParams::deterministic();
            sampling.top_k = None;
            sampling.temperature = Some(0.0); // argmax (None would mean 1.0)
            sampling.max_len = Some(args.max_tokens);
            let request = mistralrs::RequestBuilder::new()
                .add_message(TextMessageRole::User, prompt)
                .set_sampling(sampling);
            let mut stream = engine.model.stream_chat_request(request).await?;
            let mut tokens = 0;
            while let Some(response) = stream.next().await {
                match response.as_result() {
                    Ok(ResponseOk::Chunk(chunk)) => {
                        if let Some(u) = chunk.usage {
                            tokens = u.completion_tokens;
                        }
                        if chunk.choices.iter().any(|c| c.finish_reason.is_some()) {
                            break;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => bail!("engine error: {e}"),
                }
            }
            anyhow::Ok(tokens)
        }
    };
    run(PROMPTS[0]).await?; // warm-up
    let mut tally = Tally::default();
    for _ in 0..args.rounds {
        for prompt in PROMPTS {
            let started = Instant::now();
            tally.tokens += run(prompt).await?;
            tally.elapsed += started.elapsed();
        }
    }
    Ok(tally)
}

/// One streamed chat completion over a fresh attested connection; returns completion
/// tokens from the final usage chunk.
async fn https_request(addr: &str, model: &str, prompt: &str, max_tokens: usize) -> Result<usize> {
    let endpoint = Endpoint::parse(&format!("https://{addr}"))?;
    let options = cocoon_tests::dev_attestor();
    let (tls, _) = connect_attested(&endpoint, &options, Duration::from_secs(10)).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
    tokio::spawn(conn);
    let body = serde_json::json!({
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": true,
        "stream_options": {"include_usage": true},
    });
    let request = Request::post("/v1/chat/completions")
        .header("host", addr)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))?;
    let response = sender.send_request(request).await?;
    if !response.status().is_success() {
        bail!("HTTP {}", response.status());
    }
    let bytes = response.into_body().collect().await?.to_bytes();
    let text = String::from_utf8_lossy(&bytes);
    let mut tokens = None;
    for line in text.lines() {
        let Some(data) = line.strip_prefix("data: ") else {
            continue;
        };
        if data == "[DONE]" {
            break;
        }
        let chunk: serde_json::Value = serde_json::from_str(data).context("bad SSE chunk")?;
        if let Some(n) = chunk["usage"]["completion_tokens"].as_u64() {
            tokens = Some(n as usize);
        }
    }
    tokens.context("no usage chunk in the stream")
}

async fn over_https(args: &Args, addr: &str, model: &str) -> Result<Tally> {
    https_request(addr, model, PROMPTS[0], args.max_tokens).await?; // warm-up
    let mut tally = Tally::default();
    for _ in 0..args.rounds {
        for prompt in PROMPTS {
            let started = Instant::now();
            tally.tokens += https_request(addr, model, prompt, args.max_tokens).await?;
            tally.elapsed += started.elapsed();
        }
    }
    Ok(tally)
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    std::env::set_var("COCOON_MODEL", &args.model);
    println!(
        "bench: {} prompts x {} rounds, max_tokens {}, greedy, concurrency 1",
        PROMPTS.len(),
        args.rounds,
        args.max_tokens
    );

    let local = in_process(&args).await?;
    println!(
        "in-process mistral.rs : {:>5} tokens in {:>7.2?} = {:>7.2} tokens/s",
        local.tokens,
        local.elapsed,
        local.rate()
    );

    anyhow::ensure!(
        args.max_tokens <= 512,
        "--max-tokens is at most 512 (the test guest's limit)"
    );
    let app = start_appliance(&[])?;
    let direct = over_https(&args, &app.guest_addr, &app.model_id).await?;
    println!(
        "cocoon HTTPS (direct) : {:>5} tokens in {:>7.2?} = {:>7.2} tokens/s",
        direct.tokens,
        direct.elapsed,
        direct.rate()
    );
    let relayed = over_https(&args, &app.agent_addr, &app.model_id).await?;
    println!(
        "cocoon HTTPS (relayed): {:>5} tokens in {:>7.2?} = {:>7.2} tokens/s",
        relayed.tokens,
        relayed.elapsed,
        relayed.rate()
    );
    drop(app);

    if local.tokens != direct.tokens || local.tokens != relayed.tokens {
        println!(
            "note: token counts differ between paths ({} / {} / {}); rates are still per token",
            local.tokens, direct.tokens, relayed.tokens
        );
    }
    println!(
        "ratio HTTPS direct / in-process  = {:.3}",
        direct.rate() / local.rate()
    );
    println!(
        "ratio HTTPS relayed / in-process = {:.3}",
        relayed.rate() / local.rate()
    );
    Ok(())
}
