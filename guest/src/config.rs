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
}

/// The model the guest serves.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ModelIdentity {
    /// Name clients put in `model`.
    pub id: String,
    /// `gguf` or `hf-dir`.
    pub format: String,
    /// SHA-256 of the model file (GGUF) or of the sorted file digests (directory).
    pub sha256: String,
}

/// The canonical measured configuration.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct MeasuredConfig {
    /// Layout version of this document.
    pub version: u32,
    pub model: ModelIdentity,
    pub limits: Limits,
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
            },
            limits: Limits {
                max_body_bytes: 1,
                default_max_tokens: 2,
                max_tokens_limit: 3,
                max_prompt_tokens: 7,
                max_concurrent_requests: 4,
                max_queued_requests: 5,
                request_timeout_secs: 6,
            },
        }
    }

    #[test]
    fn canonical_form_is_stable_and_digest_tracks_every_field() {
        let c = sample();
        assert_eq!(
            String::from_utf8(c.canonical_json()).unwrap(),
            r#"{"version":1,"model":{"id":"m","format":"gguf","sha256":"00"},"limits":{"max_body_bytes":1,"default_max_tokens":2,"max_tokens_limit":3,"max_prompt_tokens":7,"max_concurrent_requests":4,"max_queued_requests":5,"request_timeout_secs":6}}"#
        );
        let mut d = sample();
        d.limits.max_tokens_limit = 4;
        assert_ne!(c.digest(), d.digest());
    }
}
