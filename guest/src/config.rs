//! The measured configuration: everything that changes what the guest does, as one
//! canonical document whose SHA-384 the evidence commits to.
//!
//! A client that verifies the evidence learns this digest; fetching the document and
//! hashing it tells the client exactly which model file, limits and defaults it talks to.
//! Canonical form: JSON with the fields in declaration order, no whitespace.

use serde::Serialize;
use sha2::{Digest, Sha384};

/// Limits the server enforces.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Limits {
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// `max_tokens` used when a request gives none.
    pub default_max_tokens: usize,
    /// Largest `max_tokens` a request may ask for.
    pub max_tokens_limit: usize,
    /// Largest prompt, in tokens after the chat template, a request may send.
    pub max_prompt_tokens: usize,
    /// Requests generating at the same time.
    pub max_concurrent_requests: usize,
    /// Requests allowed to wait for a slot before new ones get 429.
    pub max_queued_requests: usize,
    /// Seconds a request may take end to end.
    pub request_timeout_secs: u64,
    /// Open connections at most (more are closed at once).
    pub max_connections: usize,
    /// Seconds a client has to complete the TLS handshake.
    pub handshake_timeout_secs: u64,
    /// Seconds a client has to send a request's headers, and an idle keep-alive
    /// connection stays open (slow-loris bound).
    pub header_read_timeout_secs: u64,
    /// `POST /v1/attestation` evidence generations at once.
    pub max_concurrent_evidence: usize,
    /// Bounds on `response_format.json_schema.schema`.
    pub response_format_schema: SchemaLimits,
}

/// Bounds on a `response_format` JSON schema, checked before it reaches the engine:
/// mistral.rs compiles the schema (llguidance) inside the engine loop that serves every
/// client, so its size decides how long everyone else waits.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct SchemaLimits {
    /// Largest schema, in bytes of its compact JSON.
    pub max_bytes: usize,
    /// Deepest nesting of JSON objects and arrays in the schema (the schema object
    /// itself is depth 1).
    pub max_depth: usize,
    /// Most `enum` entries and `const` values, all of the schema together.
    pub max_enum_values: usize,
    /// Most bytes of regular expressions (`pattern` values and `patternProperties`
    /// keys), all of the schema together.
    pub max_pattern_bytes: usize,
    /// Most `$ref`s in the schema.
    pub max_refs: usize,
    /// Largest repetition bound (`minLength`, `maxLength`, `minItems`, `maxItems`,
    /// `minProperties`, `maxProperties`).
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

/// What sampling a request gets for the parameters it leaves out.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SamplingDefaults {
    /// `temperature` when a request gives none (0 is greedy).
    pub temperature: f64,
    /// `top_p` when a request gives none.
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

/// Where billing settles. Fixed at launch: a guest that bills another contract is a
/// different guest to its clients.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Billing {
    /// The TON escrow contract address receipts and vouchers are bound to (`local` for
    /// the embedded in-process chain).
    pub ton_contract: String,
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
                response_format_schema: SchemaLimits {
                    max_bytes: 16,
                    max_depth: 17,
                    max_enum_values: 18,
                    max_pattern_bytes: 19,
                    max_refs: 20,
                    max_repeat: 21,
                },
            },
            prices: PriceTable {
                currency: "nanoton".into(),
                prompt_per_million: 8,
                cached_prompt_per_million: 9,
                completion_per_million: 10,
            },
            billing: Billing {
                ton_contract: "local".into(),
            },
        }
    }

    #[test]
    fn canonical_form_is_stable_and_digest_tracks_every_field() {
        let c = sample();
        assert_eq!(
            String::from_utf8(c.canonical_json()).unwrap(),
            r#"{"version":1,"model":{"id":"m","format":"gguf","sha256":"00","verity_root":null},"sampling":{"temperature":1.0,"top_p":0.5},"limits":{"max_body_bytes":1,"default_max_tokens":2,"max_tokens_limit":3,"max_prompt_tokens":7,"max_concurrent_requests":4,"max_queued_requests":5,"request_timeout_secs":6,"max_connections":12,"handshake_timeout_secs":13,"header_read_timeout_secs":14,"max_concurrent_evidence":15,"response_format_schema":{"max_bytes":16,"max_depth":17,"max_enum_values":18,"max_pattern_bytes":19,"max_refs":20,"max_repeat":21}},"prices":{"currency":"nanoton","prompt_per_million":8,"cached_prompt_per_million":9,"completion_per_million":10},"billing":{"ton_contract":"local"}}"#
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
        g.limits.response_format_schema.max_depth = 3;
        assert_ne!(c.digest(), g.digest());
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
