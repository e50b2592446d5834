//! `cocoon-guest`: the confidential inference server.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, Subcommand};
use cocoon_attestation::event_log::RuntimeEventLog;
use cocoon_attestation::ratls::SubjectAltName;
use cocoon_guest::api::{Admission, AppState};
use cocoon_guest::config::{
    Accounts, Billing, Limits, MeasuredConfig, ModelIdentity, PriceTable, Receipts, Runtime,
    SamplingDefaults, SchemaLimits,
};
use cocoon_guest::engine::{Engine, ModelSource, PreparedModel};
use cocoon_guest::identity::GuestIdentity;
use cocoon_guest::internal_api::HostToken;
use cocoon_guest::meter::Meter;
use cocoon_guest::server::{serve, serve_internal, SocketLimits};
use cocoon_guest::tee::{ConfigRegister, EvidenceProvider, SelectOptions, TeeChoice};
use cocoon_guest::watchdog::EngineWatchdog;
use tracing::info;

#[derive(Parser)]
#[command(
    name = "cocoon-guest",
    version,
    about = "Cocoon confidential inference server (runs inside the TEE)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Load the model, create the attested TLS identity and serve the OpenAI API over HTTPS.
    Serve(Box<ServeArgs>),
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8443")]
    listen: SocketAddr,
    /// Evidence backend. The default, auto, uses the TEE the guest runs in and fails
    /// without one: it never falls back to simulated evidence. Develop without a TEE with
    /// --tee simulated (or simulated-sev-snp).
    #[arg(long, value_enum, default_value = "auto")]
    tee: TeeChoice,
    /// Simulated backend only: set TD_ATTRIBUTES.DEBUG in the evidence (verifiers must refuse it).
    #[arg(long, hide = true)]
    simulated_debug: bool,
    /// A GGUF file, or a Hugging Face model directory (config.json, tokenizer.json, safetensors).
    #[arg(
        long,
        default_value = "models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf"
    )]
    model: PathBuf,
    /// The name clients pass as `model` (default: derived from the file name).
    #[arg(long)]
    model_id: Option<String>,
    /// Names and addresses written into the certificate's subjectAltName (repeatable).
    #[arg(long = "san", default_values = ["localhost", "127.0.0.1", "::1"])]
    subject_alt_names: Vec<String>,
    /// How long the certificate stays valid, in hours.
    #[arg(long, default_value_t = 24 * 30)]
    cert_validity_hours: u32,
    /// Largest request body, in bytes.
    #[arg(long, default_value_t = 1 << 20)]
    max_body_bytes: usize,
    /// dm-verity root hash (hex) of the read-only disk the model is on (set by the
    /// image's boot scripts). The guest refuses to start unless the model is on a
    /// device-mapper verity device with exactly this root hash, then loads it in place
    /// (the kernel verifies every read); recorded in the measured config.
    #[arg(long, value_name = "HEX")]
    model_verity_root: Option<String>,
    /// Without --model-verity-root the model is copied (and hashed in the same pass)
    /// into a private directory here, and the engine loads that copy, so the bytes it
    /// runs are the bytes the config names. Must be tmpfs or ramfs (guest memory): the
    /// copy costs the model's size in memory while it loads.
    #[arg(long, value_name = "DIR", default_value = "/dev/shm")]
    model_staging_dir: PathBuf,
    /// temperature when a request gives none (OpenAI's default: 1; 0 is greedy).
    #[arg(long, default_value_t = 1.0)]
    default_temperature: f64,
    /// top_p when a request gives none.
    #[arg(long, default_value_t = 1.0)]
    default_top_p: f64,
    /// max_tokens when a request gives none.
    #[arg(long, default_value_t = 256)]
    default_max_tokens: usize,
    /// Largest max_tokens a request may ask for.
    #[arg(long, default_value_t = 2048)]
    max_tokens_limit: usize,
    /// Largest prompt, in tokens after the chat template (a longer one gets a 400).
    #[arg(long, default_value_t = 4096)]
    max_prompt_tokens: usize,
    /// Requests generating at once.
    #[arg(long, default_value_t = 8)]
    max_concurrent_requests: usize,
    /// Requests that may wait for a slot before new ones get 429.
    #[arg(long, default_value_t = 64)]
    max_queued_requests: usize,
    /// Seconds a request may take end to end.
    #[arg(long, default_value_t = 600)]
    request_timeout_secs: u64,
    /// Price per million prompt tokens (not from the prefix cache), in nanoton.
    #[arg(long, default_value_t = 100_000_000)]
    price_prompt: u64,
    /// Price per million prompt tokens served from the prefix cache, in nanoton.
    #[arg(long, default_value_t = 10_000_000)]
    price_cached_prompt: u64,
    /// Price per million completion tokens, in nanoton.
    #[arg(long, default_value_t = 300_000_000)]
    price_completion: u64,
    /// The TON escrow contract receipts are bound to (`local`: the embedded in-process chain).
    #[arg(long, default_value = "local")]
    ton_contract: String,
    /// File holding the bearer token the host agent uses for /internal/ (receipt
    /// collection) on --internal-listen; it must be hard to guess (about 128 bits or more,
    /// e.g. `openssl rand -hex 32`). Without it there is no collector: no internal
    /// listener, no receipt journal (receipts go to clients only).
    #[arg(long, value_name = "FILE")]
    host_token_file: Option<PathBuf>,
    /// Where the internal API (receipt collection) listens, plain HTTP, with
    /// --host-token-file only: a loopback address, or in a VM one only the host reaches.
    /// Never the public port: the relay does not reach it.
    #[arg(long, default_value = "127.0.0.1:8444")]
    internal_listen: SocketAddr,
    /// Receipts the host agent may leave uncollected before new requests get 503 (with
    /// --host-token-file; without a collector nothing is kept).
    #[arg(long, default_value_t = 100_000)]
    max_uncollected_receipts: usize,
    /// Serve requests that name no account, billed to `anonymous` (no key owns it, so
    /// it is never settled). Without this flag they get 401.
    #[arg(long)]
    allow_anonymous: bool,
    /// Distinct proven accounts served per boot (`anonymous` not counted); a request for a
    /// new account past it gets 503. Accounts are never evicted.
    #[arg(long, default_value_t = 100_000)]
    max_accounts: usize,
    /// `POST /v1/attestation` calls generating evidence at once; more wait their turn in
    /// arrival order.
    #[arg(long, default_value_t = 2)]
    max_concurrent_evidence: usize,
    /// Seconds a `POST /v1/attestation` call waits for its turn before it gets 429.
    #[arg(long, default_value_t = 10)]
    evidence_wait_secs: u64,
    /// `POST /v1/attestation` calls one connection may make (more get 429).
    #[arg(long, default_value_t = 4)]
    max_evidence_per_connection: usize,
    /// Open connections at most.
    #[arg(long, default_value_t = 512)]
    max_connections: usize,
    /// Seconds a client has to complete the TLS handshake.
    #[arg(long, default_value_t = 10)]
    handshake_timeout_secs: u64,
    /// Seconds a client has to send a request's headers; also how long an idle
    /// keep-alive connection stays open.
    #[arg(long, default_value_t = 30)]
    header_read_timeout_secs: u64,
    /// Bytes of output one streamed request may hold in the guest before it is cancelled.
    #[arg(long, default_value_t = 1 << 20)]
    max_stream_buffer_bytes: usize,
    /// Seconds a client may take no bytes before its stream is cancelled (billed for what
    /// was generated) and its connection closed.
    #[arg(long, default_value_t = 30)]
    stream_stall_timeout_secs: u64,
    /// Seconds the engine may stay silent with work outstanding before /healthz answers
    /// 503 (engine_stalled) and new generations are refused.
    #[arg(long, default_value_t = 300)]
    engine_stall_secs: u64,
    /// Pad every streamed event to a multiple of this many bytes (0: off), so that TLS
    /// record sizes do not reveal token lengths to the host. 512 holds a whole plain chat
    /// chunk (~260-280 bytes) plus any token, so such events all have one size.
    #[arg(long, default_value_t = 512)]
    stream_pad_bytes: usize,
    /// Largest `response_format` JSON schema, in bytes of its compact JSON (more: 400).
    #[arg(long, default_value_t = 32 * 1024)]
    max_schema_bytes: usize,
    /// Deepest nesting of objects and arrays in a `response_format` schema.
    #[arg(long, default_value_t = 32)]
    max_schema_depth: usize,
    /// Most `enum` entries plus `const` values in one `response_format` schema.
    #[arg(long, default_value_t = 1000)]
    max_schema_enum_values: usize,
    /// Most bytes of `pattern` / `patternProperties` regular expressions in one schema.
    #[arg(long, default_value_t = 1024)]
    max_schema_pattern_bytes: usize,
    /// Most `$ref`s in one `response_format` schema.
    #[arg(long, default_value_t = 100)]
    max_schema_refs: usize,
    /// Largest minLength / maxLength / minItems / maxItems / minProperties /
    /// maxProperties in a `response_format` schema.
    #[arg(long, default_value_t = 1000)]
    max_schema_repeat: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,mistralrs_core=warn,mistralrs=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Serve(args) => run(*args).await,
    }
}

async fn run(args: ServeArgs) -> anyhow::Result<()> {
    // Checked first: a weak token is refused before anything slow happens.
    let host_token = match &args.host_token_file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read --host-token-file {}", path.display()))?;
            Some(
                HostToken::new(&text)
                    .map_err(|e| anyhow::anyhow!("--host-token-file {}: {e}", path.display()))?,
            )
        }
        None => None,
    };
    anyhow::ensure!(
        args.max_uncollected_receipts >= 1,
        "--max-uncollected-receipts must be at least 1"
    );
    anyhow::ensure!(
        args.max_evidence_per_connection >= 1,
        "--max-evidence-per-connection must be at least 1"
    );
    let source = ModelSource::from_path(&args.model)?;
    let model_id = args.model_id.clone().unwrap_or_else(|| source.default_id());
    if let Some(root) = &args.model_verity_root {
        anyhow::ensure!(
            root.len() == 64 && root.bytes().all(|b| b.is_ascii_hexdigit()),
            "--model-verity-root must be a 32-byte hex dm-verity root hash"
        );
    }
    let started = Instant::now();
    // Hash exactly what the engine will load: a private in-memory copy, or the model in
    // place on a dm-verity device proven to have the configured root hash.
    let prepared = match &args.model_verity_root {
        Some(root) => PreparedModel::in_place_on_verity(&source, root)?,
        None => PreparedModel::stage(&source, &args.model_staging_dir)?,
    };
    let sha256 = prepared.sha256().to_string();
    info!(
        model = %model_id,
        %sha256,
        staged = prepared.staging_dir().is_some(),
        "hashed the model in {:.1?}",
        started.elapsed()
    );
    let config = MeasuredConfig {
        version: 1,
        model: ModelIdentity {
            id: model_id.clone(),
            format: source.format().into(),
            sha256,
            verity_root: args
                .model_verity_root
                .as_ref()
                .map(|r| r.to_ascii_lowercase()),
        },
        sampling: SamplingDefaults {
            temperature: args.default_temperature,
            top_p: args.default_top_p,
        },
        limits: Limits {
            max_body_bytes: args.max_body_bytes,
            default_max_tokens: args.default_max_tokens,
            max_tokens_limit: args.max_tokens_limit,
            max_prompt_tokens: args.max_prompt_tokens,
            max_concurrent_requests: args.max_concurrent_requests,
            max_queued_requests: args.max_queued_requests,
            request_timeout_secs: args.request_timeout_secs,
            max_connections: args.max_connections,
            handshake_timeout_secs: args.handshake_timeout_secs,
            header_read_timeout_secs: args.header_read_timeout_secs,
            max_concurrent_evidence: args.max_concurrent_evidence,
            evidence_wait_secs: args.evidence_wait_secs,
            max_evidence_per_connection: args.max_evidence_per_connection,
            max_stream_buffer_bytes: args.max_stream_buffer_bytes,
            stream_stall_timeout_secs: args.stream_stall_timeout_secs,
            engine_stall_secs: args.engine_stall_secs,
            stream_pad_bytes: args.stream_pad_bytes,
            response_format_schema: SchemaLimits {
                max_bytes: args.max_schema_bytes,
                max_depth: args.max_schema_depth,
                max_enum_values: args.max_schema_enum_values,
                max_pattern_bytes: args.max_schema_pattern_bytes,
                max_refs: args.max_schema_refs,
                max_repeat: args.max_schema_repeat,
            },
        },
        prices: PriceTable {
            currency: "nanoton".into(),
            prompt_per_million: args.price_prompt,
            cached_prompt_per_million: args.price_cached_prompt,
            completion_per_million: args.price_completion,
        },
        billing: Billing {
            ton_contract: args.ton_contract.clone(),
        },
        accounts: Accounts {
            allow_anonymous: args.allow_anonymous,
            max_accounts: args.max_accounts,
        },
        receipts: Receipts {
            journal_capacity: if host_token.is_some() {
                args.max_uncollected_receipts
            } else {
                0
            },
            internal_listen: host_token
                .as_ref()
                .map(|_| args.internal_listen.to_string()),
        },
        runtime: Runtime {
            listen: args.listen.to_string(),
            subject_alt_names: args.subject_alt_names.clone(),
            cert_validity_hours: args.cert_validity_hours,
            // vars_os: a non-UTF-8 variable must not panic the guest (its invalid bytes
            // are measured as U+FFFD).
            environment: Runtime::measured_environment(std::env::vars_os().map(|(n, v)| {
                (
                    n.to_string_lossy().into_owned(),
                    v.to_string_lossy().into_owned(),
                )
            }))
            .map_err(anyhow::Error::msg)?,
        },
    };
    anyhow::ensure!(
        (0.0..=2.0).contains(&args.default_temperature),
        "--default-temperature must be in [0, 2]"
    );
    anyhow::ensure!(
        args.default_top_p > 0.0 && args.default_top_p <= 1.0,
        "--default-top-p must be in (0, 1]"
    );
    anyhow::ensure!(
        args.stream_stall_timeout_secs >= 1 && args.engine_stall_secs >= 1,
        "--stream-stall-timeout-secs and --engine-stall-secs must be at least 1"
    );
    anyhow::ensure!(
        args.max_stream_buffer_bytes >= 4096,
        "--max-stream-buffer-bytes must be at least 4096"
    );
    anyhow::ensure!(
        args.default_max_tokens >= 1 && args.default_max_tokens <= args.max_tokens_limit,
        "--default-max-tokens must be between 1 and --max-tokens-limit"
    );
    let digest = config.digest();
    let tee_options = SelectOptions {
        simulated_debug: args.simulated_debug,
        ..SelectOptions::new(digest)
    };
    let tee: Box<dyn EvidenceProvider> = cocoon_guest::tee::select(args.tee, &tee_options)
        .context("choosing the evidence backend (--tee)")?;
    // Record the measured config in the TEE before anything is served; the identity checks
    // its own evidence against it (tee::self_check).
    let event_log = match tee.extend_config_register(&digest)? {
        ConfigRegister::TdxRtmr(register) => {
            RuntimeEventLog::config(register, &digest).to_cbor()?
        }
        ConfigRegister::None => Vec::new(),
    };
    info!(config_sha384 = %hex::encode(digest), "measured config recorded");
    let meter = Meter::new(
        config.prices.clone(),
        config.receipts.journal_capacity,
        config.accounts.max_accounts,
    )?;
    let names: Vec<SubjectAltName> = args
        .subject_alt_names
        .iter()
        .map(|s| SubjectAltName::parse(s))
        .collect();
    let identity = GuestIdentity::create(
        tee.as_ref(),
        &digest,
        &event_log,
        &meter.public_key(),
        &names,
        time::Duration::hours(i64::from(args.cert_validity_hours)),
    )?;

    let started = Instant::now();
    let engine = Engine::load(prepared, model_id.clone(), args.max_concurrent_requests).await?;
    info!(model = %model_id, "model loaded in {:.1?}", started.elapsed());
    let end_of_text = cocoon_guest::generate::end_of_text_markers(&engine.model)
        .await
        .map_err(|e| {
            anyhow::anyhow!("reading the tokenizer's end-of-text tokens: {}", e.message)
        })?;

    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let local = listener.local_addr()?;
    let state = Arc::new(AppState {
        engine,
        config,
        admission: Admission::new(args.max_concurrent_requests, args.max_queued_requests),
        tee,
        spki_der: identity.spki_der.clone(),
        config_digest: digest,
        event_log,
        meter,
        host_token,
        evidence_slots: tokio::sync::Semaphore::new(args.max_concurrent_evidence),
        watchdog: EngineWatchdog::new(Duration::from_secs(args.engine_stall_secs)),
        end_of_text,
    });
    if state.tee.simulated() {
        tracing::warn!("evidence is SIMULATED (development root): this guest proves nothing about confidentiality");
    }
    if state.host_token.is_some() {
        let internal = tokio::net::TcpListener::bind(args.internal_listen)
            .await
            .with_context(|| {
                format!(
                    "cannot listen on --internal-listen {}",
                    args.internal_listen
                )
            })?;
        let internal_addr = internal.local_addr()?;
        // Printed before the line scripts wait for, so they have both when it comes.
        println!("cocoon-guest: internal API on http://{internal_addr}");
        tokio::spawn(serve_internal(
            internal,
            state.clone(),
            Duration::from_secs(args.header_read_timeout_secs),
        ));
    }
    // One line on stdout that scripts wait for.
    println!(
        "cocoon-guest: listening on https://{local} model={model_id} certificate-sha256={}",
        identity.certificate_sha256()
    );
    serve(
        listener,
        identity.server_config.clone(),
        state,
        SocketLimits {
            max_connections: args.max_connections,
            handshake_timeout: Duration::from_secs(args.handshake_timeout_secs),
            header_read_timeout: Duration::from_secs(args.header_read_timeout_secs),
            write_stall_timeout: Duration::from_secs(args.stream_stall_timeout_secs),
        },
        shutdown_signal(),
    )
    .await;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return ctrl_c.await.unwrap_or(()),
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
