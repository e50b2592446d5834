//! `cocoon-bench-serve`: our HTTPS server (`cocoon-guest serve`) against mistral.rs's own
//! OpenAI server binary (`mistralrs serve`, crate `mistralrs-cli`, same mistral.rs
//! version) on the same GGUF file, prompts, greedy decoding, `max_tokens` and maximum
//! number of sequences generating at once. At each concurrency level (simultaneous
//! in-flight streamed chat completions) it prints output tokens per second and time to
//! first token (p50, p99) for both servers and the ratios ours / peer.
//!
//! Both servers are loaded at once but serve one at a time (an idle one uses no CPU),
//! alternating level by level so that a drift in the machine's load hits both. Each
//! client opens its connection before the clock starts (ours: TLS with the guest's
//! certificate evidence verified; the peer: plain HTTP) and keeps it alive, so the
//! figures hold the per-request cost of TLS records and of our request path, not the
//! handshake (`cocoon-bench-tls` measures that).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use bytes::Bytes;
use clap::Parser;
use cocoon_client::{connect_attested, Endpoint};
use cocoon_tests::{model_path, start_appliance, Service};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

#[derive(Parser)]
#[command(about = "Tokens/s and time to first token: cocoon-guest serve vs mistralrs serve")]
struct Args {
    /// The peer: mistral.rs's OpenAI server binary (`make peer` builds it).
    #[arg(long, env = "MISTRALRS_BIN")]
    mistralrs: Option<PathBuf>,
    /// GGUF file both servers load (default: $COCOON_MODEL, else the bundled SmolLM2).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Completion tokens per request (greedy, so every request generates this many
    /// unless the model ends its answer first).
    #[arg(long, default_value_t = 32)]
    max_tokens: usize,
    /// Concurrency levels (simultaneous in-flight requests).
    #[arg(long, value_delimiter = ',', default_values_t = [1, 8, 32])]
    concurrency: Vec<usize>,
    /// Requests per level: the larger of this and the concurrency (at 32, every client
    /// sends one request: all 32 in flight at once).
    #[arg(long, default_value_t = 4)]
    min_requests: usize,
    /// Sequences the engine generates at once, on both servers (ours:
    /// --max-concurrent-requests, the rest wait in its queue; the peer: --max-seqs).
    #[arg(long, default_value_t = 8)]
    max_seqs: usize,
}

const PROMPTS: &[&str] = &[
    "Write a short story about a lighthouse keeper.",
    "Explain how a bicycle works to a child.",
    "List some reasons to learn a second language.",
    "Describe the water cycle in a few sentences.",
];

/// What one streamed request gave.
struct Sample {
    ttft: Duration,
    tokens: usize,
    text: String,
}

/// One level on one server.
struct Level {
    samples: Vec<Sample>,
    elapsed: Duration,
}

impl Level {
    fn tokens(&self) -> usize {
        self.samples.iter().map(|s| s.tokens).sum()
    }
    fn rate(&self) -> f64 {
        self.tokens() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
    /// p50 and p99 of the time to first token (nearest rank).
    fn ttft(&self) -> (Duration, Duration) {
        let mut t: Vec<Duration> = self.samples.iter().map(|s| s.ttft).collect();
        t.sort();
        let at = |p: f64| t[((t.len() as f64 - 1.0) * p).round() as usize];
        (at(0.5), at(0.99))
    }
}

/// Where a server listens and how to reach it.
#[derive(Clone)]
enum Target {
    /// Our guest: attested TLS (simulated evidence, verified in full).
    Cocoon { addr: String, model: String },
    /// The peer: plain HTTP.
    Peer { addr: String },
}

impl Target {
    fn addr(&self) -> &str {
        match self {
            Target::Cocoon { addr, .. } | Target::Peer { addr } => addr,
        }
    }

    fn model(&self) -> &str {
        match self {
            Target::Cocoon { model, .. } => model,
            // The peer serves its one model as "default" too.
            Target::Peer { .. } => "default",
        }
    }

    /// A keep-alive HTTP/1.1 connection (a task drives it until the sender is dropped).
    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>> {
        Ok(match self {
            Target::Cocoon { addr, .. } => {
                let endpoint = Endpoint::parse(&format!("https://{addr}"))?;
                let options = cocoon_tests::dev_attestor();
                let (tls, _) = connect_attested(&endpoint, &options, Duration::from_secs(30))
                    .await
                    .context("attested connection to cocoon-guest")?;
                let (sender, conn) =
                    hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
                tokio::spawn(conn);
                sender
            }
            Target::Peer { addr } => {
                let tcp = tokio::net::TcpStream::connect(addr)
                    .await
                    .with_context(|| format!("connecting to mistralrs at {addr}"))?;
                let (sender, conn) =
                    hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
                tokio::spawn(conn);
                sender
            }
        })
    }
}

/// Sends one streamed chat completion on `sender` and reads its SSE stream as it comes:
/// the time from sending to the first chunk with non-empty content, the completion
/// tokens of the usage chunk, and the text.
async fn stream_chat(
    sender: &mut SendRequest<Full<Bytes>>,
    target: &Target,
    prompt: &str,
    max_tokens: usize,
) -> Result<Sample> {
    let body = serde_json::json!({
        "model": target.model(),
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": true,
        "stream_options": {"include_usage": true},
    });
    let request = hyper::Request::post("/v1/chat/completions")
        .header("host", target.addr())
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))?;
    sender.ready().await?;
    let sent = Instant::now();
    let response = sender.send_request(request).await?;
    let status = response.status();
    let mut body = response.into_body();
    if !status.is_success() {
        let text = body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        bail!("HTTP {status}: {}", String::from_utf8_lossy(&text).trim());
    }
    let (mut buffer, mut text) = (Vec::<u8>::new(), String::new());
    let (mut ttft, mut tokens, mut done) = (None, None, false);
    // Read to the end of the body, past [DONE]: hyper reuses a connection only then.
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame?.into_data() else {
            continue;
        };
        buffer.extend_from_slice(&data);
        while let Some(end) = buffer.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = buffer.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line);
            let Some(data) = line.trim_end().strip_prefix("data:").filter(|_| !done) else {
                continue;
            };
            let data = data.trim_start();
            if data == "[DONE]" {
                done = true;
                continue;
            }
            let chunk: serde_json::Value = serde_json::from_str(data)
                .with_context(|| format!("not a JSON chunk in the stream: {data}"))?;
            if let Some(content) = chunk["choices"][0]["delta"]["content"].as_str() {
                if !content.is_empty() && ttft.is_none() {
                    ttft = Some(sent.elapsed());
                }
                text.push_str(content);
            }
            if let Some(n) = chunk["usage"]["completion_tokens"].as_u64() {
                tokens = Some(n as usize);
            }
        }
    }
    ensure!(done, "the stream ended without [DONE]");
    Ok(Sample {
        ttft: ttft.context("no chunk with content in the stream")?,
        tokens: tokens.context("no usage chunk in the stream")?,
        text,
    })
}

/// Runs `requests` requests with `concurrency` clients, each on its own keep-alive
/// connection opened before the clock starts; request `i` sends `PROMPTS[i % len]`.
async fn run_level(
    target: &Target,
    concurrency: usize,
    requests: usize,
    max_tokens: usize,
) -> Result<Level> {
    let mut senders = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        senders.push(target.connect().await?);
    }
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut clients = Vec::with_capacity(concurrency);
    for mut sender in senders {
        let (next, target) = (next.clone(), target.clone());
        clients.push(tokio::spawn(async move {
            let mut done = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= requests {
                    return anyhow::Ok(done);
                }
                let prompt = PROMPTS[i % PROMPTS.len()];
                let sample = stream_chat(&mut sender, &target, prompt, max_tokens)
                    .await
                    .with_context(|| format!("request {i} at concurrency {concurrency}"))?;
                done.push((i, sample));
            }
        }));
    }
    let mut samples = Vec::with_capacity(requests);
    for client in clients {
        samples.extend(client.await??);
    }
    let elapsed = started.elapsed();
    samples.sort_by_key(|(i, _)| *i);
    Ok(Level {
        samples: samples.into_iter().map(|(_, s)| s).collect(),
        elapsed,
    })
}

/// One request before the clock: loads the weights into the page cache and warms up.
async fn warm_up(target: &Target, max_tokens: usize) -> Result<()> {
    let mut sender = target.connect().await?;
    stream_chat(&mut sender, target, PROMPTS[0], max_tokens)
        .await
        .context("warm-up request")?;
    Ok(())
}

/// Runs one level on one server and prints its line.
async fn measure(name: &str, target: &Target, concurrency: usize, args: &Args) -> Result<Level> {
    let requests = args.min_requests.max(concurrency);
    let level = run_level(target, concurrency, requests, args.max_tokens)
        .await
        .with_context(|| format!("{name}: {}", target.addr()))?;
    let (p50, p99) = level.ttft();
    println!(
        "  {name} concurrency {concurrency:>2}: {requests:>3} requests, {:>5} tokens in {:>7.2?} = {:>7.1} tokens/s, TTFT p50 {p50:>8.1?} p99 {p99:>8.1?}",
        level.tokens(),
        level.elapsed,
        level.rate()
    );
    Ok(level)
}

/// A free loopback port for the peer (it takes a port number, not `:0`).
fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Starts `mistralrs serve` on the GGUF file and waits until it answers `/health` (its
/// router is bound only after the model is loaded).
async fn start_peer(args: &Args, bin: &Path, model: &Path) -> Result<(Service, String, String)> {
    let dir = model.parent().context("model path has no folder")?;
    let file = model
        .file_name()
        .context("model path has no file name")?
        .to_string_lossy()
        .into_owned();
    let port = free_port()?;
    let mut cmd = Command::new(bin);
    cmd.args(["serve", "--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["--max-seqs", &args.max_seqs.to_string()])
        // Ours runs the engine without the prefix cache (usage must be exact).
        .args(["--prefix-cache-n", "0", "--token-source", "none", "--cpu"])
        .arg("-m")
        .arg(dir)
        .args(["--format", "gguf", "-f", &file])
        // Its tracing goes to stdout at info; keep warnings and errors only.
        .env("RUST_LOG", "warn");
    let shown = format!("{cmd:?}").replace('"', "");
    let mut service = Service::spawn("mistralrs", cmd)?;
    let addr = format!("127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(600);
    // It prints the GGUF metadata on stdout: keep the tail for an error message only.
    let mut tail = std::collections::VecDeque::new();
    loop {
        while let Ok(line) = service.lines.try_recv() {
            if tail.len() == 20 {
                tail.pop_front();
            }
            tail.push_back(line);
        }
        if !service.is_running() {
            let tail = Vec::from(tail).join("\n");
            bail!("mistralrs exited before it was ready (command: {shown}); stderr above, stdout:\n{tail}");
        }
        if let Ok(tcp) = tokio::net::TcpStream::connect(&addr).await {
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake::<_, Full<Bytes>>(TokioIo::new(tcp)).await?;
            tokio::spawn(conn);
            let request = hyper::Request::get("/health")
                .header("host", &addr)
                .body(Full::new(Bytes::new()))?;
            if let Ok(response) = sender.send_request(request).await {
                if response.status().is_success() {
                    return Ok((service, addr, shown));
                }
            }
        }
        ensure!(
            Instant::now() < deadline,
            "mistralrs did not become ready within 600 s"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The 1, 5 and 15 minute load averages, to judge how busy the machine was.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

fn default_peer() -> PathBuf {
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    home.join(".cache/cocoon-tools/bin/mistralrs")
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    ensure!(
        args.max_tokens <= 512,
        "--max-tokens is at most 512 (the test guest's limit)"
    );
    ensure!(
        !args.concurrency.is_empty() && args.concurrency.iter().all(|&c| c > 0),
        "--concurrency needs levels above 0"
    );
    if let Some(model) = &args.model {
        std::env::set_var("COCOON_MODEL", model);
    }
    let model = model_path()?;
    ensure!(
        model.is_file(),
        "{}: the peer needs a GGUF file",
        model.display()
    );
    let bin = args.mistralrs.clone().unwrap_or_else(default_peer);
    ensure!(
        bin.is_file(),
        "{} not found: `make peer` builds it (cargo install mistralrs-cli), or pass --mistralrs",
        bin.display()
    );
    let max_level = args.concurrency.iter().copied().max().unwrap_or(1);
    let load_before = load_average();
    println!(
        "bench-serve: {} prompts, greedy, max_tokens {}, streamed; concurrency {:?}; at most {} sequences generating at once on both servers",
        PROMPTS.len(),
        args.max_tokens,
        args.concurrency,
        args.max_seqs
    );

    // Ours: requests beyond --max-concurrent-requests wait in its queue (never 429 here).
    let limit = args.max_seqs.to_string();
    let queue = max_level.max(64).to_string();
    let app = start_appliance(&[
        "--max-concurrent-requests",
        &limit,
        "--max-queued-requests",
        &queue,
    ])?;
    println!(
        "ours: cocoon-guest serve --tee simulated --max-concurrent-requests {limit} --max-queued-requests {queue} (HTTPS, attested TLS)"
    );
    let ours_target = Target::Cocoon {
        addr: app.guest_addr.clone(),
        model: app.model_id.clone(),
    };
    let (peer_service, peer_addr, shown) = start_peer(&args, &bin, &model).await?;
    println!("peer: {shown} (plain HTTP)");
    let peer_target = Target::Peer { addr: peer_addr };

    // Both stay loaded but only one serves at a time (an idle one takes no CPU): the
    // levels alternate between them so that a drift in the machine's load hits both.
    warm_up(&ours_target, args.max_tokens).await?;
    warm_up(&peer_target, args.max_tokens).await?;
    let (mut ours, mut peer) = (Vec::new(), Vec::new());
    for &c in &args.concurrency {
        ours.push(measure("ours", &ours_target, c, &args).await?);
        peer.push(measure("peer", &peer_target, c, &args).await?);
    }
    drop(app);
    drop(peer_service);

    println!();
    println!("ours = cocoon-guest over TLS 1.3 with attested certificate; peer = mistralrs serve over plain HTTP");
    println!(
        "{:>5} | {:>21} | {:>25} | {:>25}",
        "conc", "output tokens/s", "TTFT p50", "TTFT p99"
    );
    println!(
        "{:>5} | {:>7} {:>7} {:>5} | {:>9} {:>9} {:>5} | {:>9} {:>9} {:>5}",
        "", "ours", "peer", "ratio", "ours", "peer", "ratio", "ours", "peer", "ratio"
    );
    let secs = |d: Duration| format!("{:.3}s", d.as_secs_f64());
    for ((c, o), p) in args.concurrency.iter().zip(&ours).zip(&peer) {
        let ((o50, o99), (p50, p99)) = (o.ttft(), p.ttft());
        println!(
            "{c:>5} | {:>7.1} {:>7.1} {:>5.2} | {:>9} {:>9} {:>5.2} | {:>9} {:>9} {:>5.2}",
            o.rate(),
            p.rate(),
            o.rate() / p.rate(),
            secs(o50),
            secs(p50),
            o50.as_secs_f64() / p50.as_secs_f64(),
            secs(o99),
            secs(p99),
            o99.as_secs_f64() / p99.as_secs_f64(),
        );
    }
    println!("ratios are ours / peer: above 1 is faster for tokens/s, slower for TTFT");
    if max_level > args.max_seqs {
        println!(
            "note: above {} requests ours admits {} to the engine and queues the rest; mistral.rs's \
             scheduler, when nothing is running, starts every waiting request at once (--max-seqs \
             bounds only later admissions), so a burst runs on the peer as one larger batch",
            args.max_seqs, args.max_seqs
        );
    }
    println!(
        "load average before the bench: {load_before} ({} CPUs; other work skews both sides)",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );

    // Greedy decoding on the same engine: the answers should match, at least at
    // concurrency 1 (batched matmuls may round differently).
    for ((c, o), p) in args.concurrency.iter().zip(&ours).zip(&peer) {
        let same = o
            .samples
            .iter()
            .zip(&p.samples)
            .filter(|(a, b)| a.text == b.text)
            .count();
        let (ot, pt) = (o.tokens(), p.tokens());
        let note = if ot == pt {
            String::new()
        } else {
            format!(" (completion tokens differ: ours {ot}, peer {pt})")
        };
        println!(
            "concurrency {c:>2}: {same}/{} answers identical between the servers{note}",
            o.samples.len()
        );
    }
    Ok(())
}
