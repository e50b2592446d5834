//! The measured configuration: everything that changes what the guest does, as one
//! canonical document whose SHA-384 the evidence commits to.
//!
//! A client that verifies the evidence learns this digest; fetching the document and
//! hashing it tells the client exactly which model file, limits and defaults it talks to.
//! Canonical form: JSON with the fields in declaration order, no whitespace.

use serde::Serialize;
use sha2::{Digest, Sha384};

/// Limits the server enforces.
#[derive(Debug, Clone, Serialize, PartialEq, clap::Args)]
pub struct Limits {
    /// Largest request body accepted, in bytes.
    #[arg(long, default_value_t = 1 << 20, help = "Largest request body, in bytes")]
    pub max_body_bytes: usize,
    /// `max_tokens` used when a request gives none.
    #[arg(
        long,
        default_value_t = 256,
        help = "max_tokens when a request gives none"
    )]
    pub default_max_tokens: usize,
    /// Largest `max_tokens` a request may ask for.
    #[arg(
        long,
        default_value_t = 2048,
        help = "Largest max_tokens a request may ask for"
    )]
    pub max_tokens_limit: usize,
    /// Largest prompt, in tokens after the chat template, a request may send.
    #[arg(
        long,
        default_value_t = 4096,
        help = "Largest prompt, in tokens after the chat template (a longer one gets a 400)"
    )]
    pub max_prompt_tokens: usize,
    /// Requests generating at the same time.
    #[arg(long, default_value_t = 8, help = "Requests generating at once")]
    pub max_concurrent_requests: usize,
    /// Requests allowed to wait for a slot before new ones get 429.
    #[arg(
        long,
        default_value_t = 64,
        help = "Requests that may wait for a slot before new ones get 429"
    )]
    pub max_queued_requests: usize,
    /// Seconds a request may take end to end.
    #[arg(
        long,
        default_value_t = 600,
        help = "Seconds a request may take end to end"
    )]
    pub request_timeout_secs: u64,
    /// Open connections at most (more are closed at once).
    #[arg(long, default_value_t = 512, help = "Open connections at most")]
    pub max_connections: usize,
    /// Seconds a client has to complete the TLS handshake.
    #[arg(
        long,
        default_value_t = 10,
        help = "Seconds a client has to complete the TLS handshake"
    )]
    pub handshake_timeout_secs: u64,
    /// Seconds a client has to send a request's headers, and an idle keep-alive
    /// connection stays open (slow-loris bound).
    #[arg(
        long,
        default_value_t = 30,
        help = "Seconds a client has to send a request's headers; also how long an idle keep-alive connection stays open"
    )]
    pub header_read_timeout_secs: u64,
    /// `POST /v1/attestation` evidence generations at once; more wait their turn, in
    /// arrival order.
    #[arg(
        long,
        default_value_t = 2,
        help = "`POST /v1/attestation` calls generating evidence at once; more wait their turn in arrival order"
    )]
    pub max_concurrent_evidence: usize,
    /// Seconds a `POST /v1/attestation` call waits for an evidence slot before it gets 429.
    #[arg(
        long,
        default_value_t = 10,
        help = "Seconds a `POST /v1/attestation` call waits for its turn before it gets 429"
    )]
    pub evidence_wait_secs: u64,
    /// `POST /v1/attestation` calls one connection may make (more get 429: a client that
    /// wants more evidence opens a new session, each with its own handshake).
    #[arg(
        long,
        default_value_t = 4,
        help = "`POST /v1/attestation` calls one connection may make (more get 429)"
    )]
    pub max_evidence_per_connection: usize,
    /// Bytes of output one streamed request may hold in the guest (engine output not yet
    /// rendered plus events not yet written); past it the request is cancelled.
    #[arg(long, default_value_t = 1 << 20, help = "Bytes of output one streamed request may hold in the guest before it is cancelled")]
    pub max_stream_buffer_bytes: usize,
    /// Seconds a client may make no progress (take no bytes) before its stream is
    /// cancelled and its connection closed.
    #[arg(
        long,
        default_value_t = 30,
        help = "Seconds a client may take no bytes before its stream is cancelled (billed for what was generated) and its connection closed"
    )]
    pub stream_stall_timeout_secs: u64,
    /// Seconds the engine may stay silent with work outstanding before `/healthz`
    /// reports it stalled (503).
    #[arg(
        long,
        default_value_t = 300,
        help = "Seconds the engine may stay silent with work outstanding before /healthz answers 503 (engine_stalled) and new generations are refused"
    )]
    pub engine_stall_secs: u64,
    /// Every streamed event is padded to a multiple of this many bytes (0: no padding),
    /// so record sizes do not follow token lengths.
    #[arg(
        long,
        default_value_t = 512,
        help = "Pad every streamed event to a multiple of this many bytes (0: off), so that TLS record sizes do not reveal token lengths to the host. 512 holds a whole plain chat chunk (~260-280 bytes) plus any token, so such events all have one size"
    )]
    pub stream_pad_bytes: usize,
    /// Bounds on `response_format.json_schema.schema`.
    #[command(flatten)]
    pub response_format_schema: SchemaLimits,
    /// Tokens the KV cache holds (`crate::kv`): every request reserves its worst case
    /// (prompt + `max_tokens` per sequence) before it reaches the engine. On a GPU the
    /// engine's PagedAttention cache is allocated to exactly this; on a CPU it bounds the
    /// tokens in flight. None: sized from the GPU's free memory, or no bound on a CPU.
    #[arg(
        long,
        value_name = "TOKENS",
        help = "Tokens the KV cache holds; requests reserve prompt + max_tokens per sequence of it before they run (more wait, then 429; one that can never fit gets 400). Default: sized from the GPU's free memory, or no bound on a CPU"
    )]
    pub kv_cache_tokens: Option<usize>,
    /// Share of the GPU's free memory the weights and the KV cache may take, when the
    /// cache is sized from it (GPU only).
    #[arg(
        long,
        default_value_t = 0.85,
        help = "GPU only: share of the free GPU memory the weights plus the KV cache may take when --kv-cache-tokens is not given"
    )]
    pub kv_cache_gpu_utilization: f64,
    /// Seconds a request waits for KV cache room before it gets 429.
    #[arg(
        long,
        default_value_t = 5,
        help = "Seconds a request waits, in arrival order, for KV cache room before it gets 429 (0: no wait)"
    )]
    pub kv_wait_secs: u64,
}

/// Who a request may be billed to.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, clap::Args)]
pub struct Accounts {
    /// A request that names no account is served and billed to `anonymous` (an account
    /// no key owns, so it can never be settled); when false it gets 401.
    #[arg(
        long,
        help = "Serve requests that name no account, billed to `anonymous` (no key owns it, so it is never settled). Without this flag they get 401"
    )]
    pub allow_anonymous: bool,
    /// Distinct proven accounts served per boot (`anonymous` not counted). A new account
    /// past it gets 503; accounts are never evicted, so sequences stay monotonic.
    #[arg(
        long,
        default_value_t = 100_000,
        help = "Distinct proven accounts served per boot (`anonymous` not counted); a request for a new account past it gets 503. Accounts are never evicted"
    )]
    pub max_accounts: usize,
}

/// Where receipts go besides the client.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Receipts {
    /// Receipts kept for the host's collector until it acknowledges them; past it new
    /// requests get 503. 0: no collector is configured, nothing is journaled, and
    /// receipts go only to the clients.
    pub journal_capacity: usize,
    /// The separate listener the collector uses (`null` without a collector); the public
    /// listener never serves the internal API.
    pub internal_listen: Option<String>,
}

/// Bounds on a `response_format` JSON schema, checked before it reaches the engine:
/// mistral.rs compiles the schema (llguidance) inside the engine loop that serves every
/// client, so its size decides how long everyone else waits.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq, clap::Args)]
pub struct SchemaLimits {
    /// Largest schema, in bytes of its compact JSON.
    #[arg(long = "max-schema-bytes",
        value_name = "MAX_SCHEMA_BYTES", default_value_t = 32 * 1024, help = "Largest `response_format` JSON schema, in bytes of its compact JSON (more: 400)")]
    pub max_bytes: usize,
    /// Deepest nesting of JSON objects and arrays in the schema (the schema object
    /// itself is depth 1).
    #[arg(
        long = "max-schema-depth",
        value_name = "MAX_SCHEMA_DEPTH",
        default_value_t = 32,
        help = "Deepest nesting of objects and arrays in a `response_format` schema"
    )]
    pub max_depth: usize,
    /// Most `enum` entries and `const` values, all of the schema together.
    #[arg(
        long = "max-schema-enum-values",
        value_name = "MAX_SCHEMA_ENUM_VALUES",
        default_value_t = 1000,
        help = "Most `enum` entries plus `const` values in one `response_format` schema"
    )]
    pub max_enum_values: usize,
    /// Most bytes of regular expressions (`pattern` values and `patternProperties`
    /// keys), all of the schema together.
    #[arg(
        long = "max-schema-pattern-bytes",
        value_name = "MAX_SCHEMA_PATTERN_BYTES",
        default_value_t = 1024,
        help = "Most bytes of `pattern` / `patternProperties` regular expressions in one schema"
    )]
    pub max_pattern_bytes: usize,
    /// Most `$ref`s in the schema.
    #[arg(
        long = "max-schema-refs",
        value_name = "MAX_SCHEMA_REFS",
        default_value_t = 100,
        help = "Most `$ref`s in one `response_format` schema"
    )]
    pub max_refs: usize,
    /// Largest repetition bound (`minLength`, `maxLength`, `minItems`, `maxItems`,
    /// `minProperties`, `maxProperties`).
    #[arg(
        long = "max-schema-repeat",
        value_name = "MAX_SCHEMA_REPEAT",
        default_value_t = 1000,
        help = "Largest minLength / maxLength / minItems / maxItems / minProperties / maxProperties in a `response_format` schema"
    )]
    pub max_repeat: u64,
}

/// The model the guest serves.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ModelIdentity {
    /// Name clients put in `model`.
    pub id: String,
    /// `gguf` or `hf-dir`.
    pub format: String,
    /// SHA-256 (hex) of exactly what the engine loads. GGUF: the file's SHA-256 (the
    /// tokenizer and chat template are inside it; the engine loads it alone from a
    /// staged copy, or in place from a dm-verity disk that holds no side files beside
    /// it). Directory: the SHA-256 of one `NAME:SHA256HEX\n` line per entry, sorted by
    /// name, where every entry must be a regular file (symlinks, subdirectories and
    /// special files are refused), so it covers every file the engine may read: weights,
    /// `tokenizer.json`, `chat_template.jinja`, `generation_config.json` and the rest.
    pub sha256: String,
    /// dm-verity root hash of the read-only model disk. When set, the guest proved at
    /// start that the model is on a device-mapper `verity` device with this root hash
    /// (and refused to start otherwise) and loads it in place; when `None`, the guest
    /// loaded a copy it made in its own memory while hashing.
    pub verity_root: Option<String>,
}

impl ModelIdentity {
    /// `sha256` as bytes (what receipt leaves and voucher commitments carry).
    pub fn sha256_bytes(&self) -> Result<[u8; 32], crate::Error> {
        hex::decode(&self.sha256)
            .ok()
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .ok_or_else(|| {
                crate::Error::Model(format!(
                    "model.sha256 is not 32 bytes of hex: {:?}",
                    self.sha256
                ))
            })
    }
}

/// What sampling a request gets for the parameters it leaves out.
#[derive(Debug, Clone, Serialize, PartialEq, clap::Args)]
pub struct SamplingDefaults {
    /// `temperature` when a request gives none (0 is greedy).
    #[arg(
        long = "default-temperature",
        value_name = "DEFAULT_TEMPERATURE",
        default_value_t = 1.0,
        help = "temperature when a request gives none (OpenAI's default: 1; 0 is greedy)"
    )]
    pub temperature: f64,
    /// `top_p` when a request gives none.
    #[arg(
        long = "default-top-p",
        value_name = "DEFAULT_TOP_P",
        default_value_t = 1.0,
        help = "top_p when a request gives none"
    )]
    pub top_p: f64,
}

/// What a request costs. Prices are per million tokens in `currency` units, so a
/// client can compute every receipt's charge itself.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PriceTable {
    /// `nanoton` (10^-9 TON).
    pub currency: String,
    /// Per million prompt tokens not served from the prefix cache.
    pub prompt_per_million: u64,
    /// Per million prompt tokens served from the prefix cache.
    pub cached_prompt_per_million: u64,
    /// Per million completion tokens.
    pub completion_per_million: u64,
}

impl PriceTable {
    /// Canonical bytes (JSON, declaration order, no whitespace).
    pub fn canonical_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// SHA-256 (hex) of the canonical bytes: what every receipt names.
    pub fn sha256_hex(&self) -> String {
        hex::encode(sha2::Sha256::digest(self.canonical_json()))
    }

    /// The charge for `tokens`, rounded up to a whole unit. Computed from cumulative
    /// counts, so rounding never adds up across requests.
    pub fn charge(&self, tokens: &cocoon_attestation::receipt::TokenCounts) -> u64 {
        let cached = tokens.cached_tokens.min(tokens.prompt_tokens);
        let weighted = u128::from(tokens.prompt_tokens - cached)
            * u128::from(self.prompt_per_million)
            + u128::from(cached) * u128::from(self.cached_prompt_per_million)
            + u128::from(tokens.completion_tokens) * u128::from(self.completion_per_million);
        u64::try_from(weighted.div_ceil(1_000_000)).unwrap_or(u64::MAX)
    }
}

/// Where billing settles. Fixed at launch: a guest that bills another network, pays
/// another address or derives escrows with another close delay is a different guest to
/// its clients (all of it is in the measured config they verify).
///
/// Without `payout_address` the guest signs receipts only (no escrow, no credit check).
/// With it, every proven account pays through its own escrow contract
/// (`billing/PROTOCOL.md`): the client must authorize this guest's receipt key, requests
/// are served only within what the escrow covers, and each receipt comes with a voucher
/// the escrow pays out on.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, clap::Args)]
pub struct Billing {
    /// The TON network escrows live on: `local` (the host agent's embedded chain),
    /// `testnet` or `mainnet`.
    #[arg(
        long = "ton-network",
        default_value = "local",
        value_parser = ["local", "testnet", "mainnet"],
        help = "TON network the escrows live on: local (the host agent's embedded chain), testnet or mainnet"
    )]
    pub ton_network: String,
    /// Where vouchers pay this guest's earnings (a raw `0:<hex>` or user-friendly TON
    /// address); none: receipts only, no escrow billing.
    #[arg(
        long = "payout-address",
        value_name = "ADDRESS",
        help = "TON address vouchers pay earnings to; enables escrow billing (every proven account must pay through its escrow)"
    )]
    pub payout_address: Option<String>,
    /// Seconds between a client's close request and its forced refund: part of the
    /// escrow's initial data, so of its address.
    #[arg(
        long = "escrow-close-delay-secs",
        default_value_t = 86_400,
        help = "Seconds between a client's close request and its forced refund (part of every escrow's address)"
    )]
    pub close_delay_secs: u32,
    /// Seconds a request waits for the host agent to report its escrow's state the first
    /// time, before it is refused.
    #[arg(
        long = "escrow-state-wait-secs",
        default_value_t = 10,
        help = "Seconds a request waits for the host agent to report a new escrow's on-chain state"
    )]
    pub state_wait_secs: u32,
    /// Representation hash (hex) of the escrow contract code this guest derives escrow
    /// addresses with: the code compiled into the binary, named here so a client sees it.
    #[arg(skip = cocoon_billing::escrow_code_hash_hex())]
    pub escrow_code_hash: String,
}

/// How the guest is reached and what else shapes it at run time: the listen address,
/// the certificate's names and lifetime, and the environment variables the guest or its
/// libraries read.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Runtime {
    /// The address the HTTPS listener binds.
    pub listen: String,
    /// subjectAltName entries of the certificate.
    pub subject_alt_names: Vec<String>,
    /// Certificate lifetime, in hours.
    pub cert_validity_hours: u32,
    /// Every environment variable whose name starts with one of [`MEASURED_ENV_PREFIXES`],
    /// with its value, sorted by name (the log filter `RUST_LOG` among them).
    pub environment: std::collections::BTreeMap<String, String>,
}

/// Name prefixes of the environment variables that the guest, mistral.rs, candle, the
/// tokenizers, rayon or the math libraries read (found by reading their sources for
/// `env::var`): these change what the guest does, so their values are measured.
pub const MEASURED_ENV_PREFIXES: &[&str] = &[
    "RUST_",
    "MISTRALRS_",
    "CANDLE_",
    "HF_",
    "HUGGINGFACE_",
    "TOKENIZERS_",
    "RAYON_",
    "OMP_",
    "MKL_",
    "OPENBLAS_",
    "CUDA_",
    "NCCL_",
    "NVIDIA_",
    "RING_",
];

/// Environment variables the guest refuses to start with: mistral.rs's multi-node mode
/// sends activations to other machines (outside the TEE).
pub const REFUSED_ENV_PREFIXES: &[&str] = &["MISTRALRS_MN_"];

impl Runtime {
    /// The measured subset of `vars` (e.g. `std::env::vars()`); an error names a
    /// variable the guest refuses to run with.
    pub fn measured_environment(
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<std::collections::BTreeMap<String, String>, String> {
        let mut measured = std::collections::BTreeMap::new();
        for (name, value) in vars {
            if REFUSED_ENV_PREFIXES.iter().any(|p| name.starts_with(p)) {
                return Err(format!(
                    "environment variable {name} is set: mistral.rs multi-node mode would \
                     send data outside the TEE; unset it"
                ));
            }
            if MEASURED_ENV_PREFIXES.iter().any(|p| name.starts_with(p)) {
                measured.insert(name, value);
            }
        }
        Ok(measured)
    }
}

/// The canonical measured configuration.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct MeasuredConfig {
    /// Layout version of this document.
    pub version: u32,
    pub model: ModelIdentity,
    pub sampling: SamplingDefaults,
    pub limits: Limits,
    pub prices: PriceTable,
    pub billing: Billing,
    pub accounts: Accounts,
    pub receipts: Receipts,
    pub runtime: Runtime,
    /// The GPU the guest must serve from (absent: the CPU; a CPU guest's document is
    /// unchanged by this field).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gpu: Option<crate::gpu::GpuRequirement>,
}

impl MeasuredConfig {
    /// Canonical bytes.
    pub fn canonical_json(&self) -> Vec<u8> {
        // Serialising a struct of strings and integers cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// SHA-384 of the canonical bytes: what REPORTDATA and RTMR3 commit to.
    pub fn digest(&self) -> [u8; 48] {
        Sha384::digest(self.canonical_json()).into()
    }

    /// Checks the values a guest cannot serve with; the error names the flag that set it.
    pub fn validate(&self) -> Result<(), String> {
        let (sampling, limits) = (&self.sampling, &self.limits);
        let checks = [
            (
                (0.0..=2.0).contains(&sampling.temperature),
                "--default-temperature must be in [0, 2]",
            ),
            (
                sampling.top_p > 0.0 && sampling.top_p <= 1.0,
                "--default-top-p must be in (0, 1]",
            ),
            (
                limits.stream_stall_timeout_secs >= 1 && limits.engine_stall_secs >= 1,
                "--stream-stall-timeout-secs and --engine-stall-secs must be at least 1",
            ),
            (
                limits.max_stream_buffer_bytes >= 4096,
                "--max-stream-buffer-bytes must be at least 4096",
            ),
            (
                limits.default_max_tokens >= 1
                    && limits.default_max_tokens <= limits.max_tokens_limit,
                "--default-max-tokens must be between 1 and --max-tokens-limit",
            ),
            (
                limits.kv_cache_gpu_utilization > 0.0 && limits.kv_cache_gpu_utilization <= 1.0,
                "--kv-cache-gpu-utilization must be in (0, 1]",
            ),
            (
                limits.kv_cache_tokens != Some(0),
                "--kv-cache-tokens must be at least 1",
            ),
        ];
        match checks.into_iter().find(|(ok, _)| !ok) {
            Some((_, message)) => Err(message.to_string()),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> MeasuredConfig {
        MeasuredConfig {
            version: 1,
            model: ModelIdentity {
                id: "m".into(),
                format: "gguf".into(),
                sha256: "00".into(),
                verity_root: None,
            },
            sampling: SamplingDefaults {
                temperature: 1.0,
                top_p: 0.5,
            },
            limits: Limits {
                max_body_bytes: 1,
                default_max_tokens: 2,
                max_tokens_limit: 3,
                max_prompt_tokens: 7,
                max_concurrent_requests: 4,
                max_queued_requests: 5,
                request_timeout_secs: 6,
                max_connections: 12,
                handshake_timeout_secs: 13,
                header_read_timeout_secs: 14,
                max_concurrent_evidence: 15,
                evidence_wait_secs: 16,
                max_evidence_per_connection: 17,
                max_stream_buffer_bytes: 18,
                stream_stall_timeout_secs: 19,
                engine_stall_secs: 20,
                stream_pad_bytes: 21,
                response_format_schema: SchemaLimits {
                    max_bytes: 16,
                    max_depth: 17,
                    max_enum_values: 18,
                    max_pattern_bytes: 19,
                    max_refs: 20,
                    max_repeat: 21,
                },
                kv_cache_tokens: None,
                kv_cache_gpu_utilization: 0.85,
                kv_wait_secs: 22,
            },
            prices: PriceTable {
                currency: "nanoton".into(),
                prompt_per_million: 8,
                cached_prompt_per_million: 9,
                completion_per_million: 10,
            },
            billing: Billing {
                ton_network: "local".into(),
                payout_address: None,
                close_delay_secs: 23,
                state_wait_secs: 24,
                escrow_code_hash: "cc".into(),
            },
            accounts: Accounts {
                allow_anonymous: false,
                max_accounts: 22,
            },
            receipts: Receipts {
                journal_capacity: 0,
                internal_listen: None,
            },
            runtime: Runtime {
                listen: "127.0.0.1:8443".into(),
                subject_alt_names: vec!["localhost".into()],
                cert_validity_hours: 20,
                environment: [("RUST_LOG".to_string(), "info".to_string())].into(),
            },
            gpu: None,
        }
    }

    #[test]
    fn canonical_form_is_stable_and_digest_tracks_every_field() {
        let c = sample();
        assert_eq!(
            String::from_utf8(c.canonical_json()).unwrap(),
            r#"{"version":1,"model":{"id":"m","format":"gguf","sha256":"00","verity_root":null},"sampling":{"temperature":1.0,"top_p":0.5},"limits":{"max_body_bytes":1,"default_max_tokens":2,"max_tokens_limit":3,"max_prompt_tokens":7,"max_concurrent_requests":4,"max_queued_requests":5,"request_timeout_secs":6,"max_connections":12,"handshake_timeout_secs":13,"header_read_timeout_secs":14,"max_concurrent_evidence":15,"evidence_wait_secs":16,"max_evidence_per_connection":17,"max_stream_buffer_bytes":18,"stream_stall_timeout_secs":19,"engine_stall_secs":20,"stream_pad_bytes":21,"response_format_schema":{"max_bytes":16,"max_depth":17,"max_enum_values":18,"max_pattern_bytes":19,"max_refs":20,"max_repeat":21},"kv_cache_tokens":null,"kv_cache_gpu_utilization":0.85,"kv_wait_secs":22},"prices":{"currency":"nanoton","prompt_per_million":8,"cached_prompt_per_million":9,"completion_per_million":10},"billing":{"ton_network":"local","payout_address":null,"close_delay_secs":23,"state_wait_secs":24,"escrow_code_hash":"cc"},"accounts":{"allow_anonymous":false,"max_accounts":22},"receipts":{"journal_capacity":0,"internal_listen":null},"runtime":{"listen":"127.0.0.1:8443","subject_alt_names":["localhost"],"cert_validity_hours":20,"environment":{"RUST_LOG":"info"}}}"#
        );
        let mut d = sample();
        d.limits.max_tokens_limit = 4;
        assert_ne!(c.digest(), d.digest());
        let mut e = sample();
        e.prices.completion_per_million = 11;
        assert_ne!(c.digest(), e.digest());
        let mut f = sample();
        f.sampling.temperature = 0.7;
        assert_ne!(c.digest(), f.digest());
        let mut g = sample();
        g.accounts.allow_anonymous = true;
        assert_ne!(c.digest(), g.digest());
        let mut h = sample();
        h.receipts.journal_capacity = 1;
        assert_ne!(c.digest(), h.digest());
        let mut i = sample();
        i.runtime
            .environment
            .insert("RAYON_NUM_THREADS".into(), "1".into());
        assert_ne!(c.digest(), i.digest());
        let mut j = sample();
        j.limits.response_format_schema.max_depth = 3;
        assert_ne!(c.digest(), j.digest());
        let mut k = sample();
        k.limits.kv_cache_tokens = Some(4096);
        assert_ne!(c.digest(), k.digest());
        let mut l = sample();
        l.limits.kv_cache_gpu_utilization = 0.9;
        assert_ne!(c.digest(), l.digest());
    }

    #[test]
    fn the_environment_the_libraries_read_is_measured_and_multi_node_is_refused() {
        let vars = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect::<Vec<_>>()
        };
        let measured = Runtime::measured_environment(vars(&[
            ("RUST_LOG", "trace"),
            ("CANDLE_DEQUANTIZE_ALL", "1"),
            ("HOME", "/root"),
            ("TERM", "xterm"),
        ]))
        .unwrap();
        assert_eq!(
            measured.keys().collect::<Vec<_>>(),
            ["CANDLE_DEQUANTIZE_ALL", "RUST_LOG"]
        );
        let refused =
            Runtime::measured_environment(vars(&[("MISTRALRS_MN_WORKER_SERVER_ADDR", "x:1")]))
                .unwrap_err();
        assert!(
            refused.contains("MISTRALRS_MN_WORKER_SERVER_ADDR"),
            "{refused}"
        );
    }

    #[test]
    fn charges_round_up_once_and_bill_cached_tokens_at_their_price() {
        use cocoon_attestation::receipt::TokenCounts;
        let prices = PriceTable {
            currency: "nanoton".into(),
            prompt_per_million: 1_000_000,
            cached_prompt_per_million: 100_000,
            completion_per_million: 3_000_000,
        };
        let t = |p, c, k| TokenCounts {
            prompt_tokens: p,
            cached_tokens: c,
            completion_tokens: k,
        };
        assert_eq!(prices.charge(&t(10, 0, 5)), 10 + 15);
        assert_eq!(prices.charge(&t(10, 10, 0)), 1);
        assert_eq!(prices.charge(&t(10, 5, 0)), 5 + 1);
        // More cached than prompt tokens cannot make the prompt part negative.
        assert_eq!(prices.charge(&t(1, 5, 0)), 1);
        let cheap = PriceTable {
            prompt_per_million: 1,
            ..prices
        };
        assert_eq!(cheap.charge(&t(1, 0, 0)), 1, "rounded up");
        assert_eq!(cheap.charge(&t(0, 0, 0)), 0);
    }
}
