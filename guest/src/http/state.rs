//! The state every handler stands on: the shared [`AppState`], the per-connection
//! [`Session`], bounded [`Admission`] to the engine, and the host agent's [`HostToken`].
//! Nothing here knows a route.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use sha2::{Digest, Sha256};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::MeasuredConfig;
use crate::engine::Engine;
use crate::http::error::ApiError;
use crate::meter::Meter;
use crate::tee::EvidenceProvider;
use crate::watchdog::EngineWatchdog;

/// Shared state of the API.
pub struct AppState {
    pub engine: Engine,
    pub config: MeasuredConfig,
    pub admission: Admission,
    /// Admission by KV cache capacity (`crate::kv`), taken after the prompt is counted.
    pub kv: crate::kv::KvAdmission,
    /// The evidence provider, for fresh session-bound evidence.
    pub tee: Box<dyn EvidenceProvider>,
    /// The TLS key's SubjectPublicKeyInfo.
    pub spki_der: Vec<u8>,
    /// SHA-384 of the measured config.
    pub config_digest: [u8; 48],
    /// The GPUs' evidence the certificate binds (`GET /v1/attestation/gpu`; `None`: no
    /// GPU).
    pub gpu: Option<crate::gpu::GpuAttestation>,
    /// The runtime event log (CBOR) that explains the config register (empty on SEV-SNP).
    pub event_log: Vec<u8>,
    /// Usage metering and receipt signing.
    pub meter: Meter,
    /// Escrow billing (`None`: the measured config names no payout address; receipts
    /// only).
    pub escrows: Option<Arc<crate::escrow::Escrows>>,
    /// The host agent's bearer token for `/internal/…` (`None`: internal API disabled).
    pub host_token: Option<HostToken>,
    /// Evidence generations allowed at once for `POST /v1/attestation`; more wait for one
    /// in arrival order (tokio's semaphore is fair) for `limits.evidence_wait_secs`.
    pub evidence_slots: Semaphore,
    /// Whether the engine makes progress (`/healthz`).
    pub watchdog: Arc<EngineWatchdog>,
    /// The tokenizer's end-of-text special tokens (`engine::generate::end_of_text_markers`).
    pub end_of_text: Vec<String>,
}

/// Per-connection facts the handlers need.
#[derive(Clone)]
pub struct Session {
    /// RFC 9266 `EXPORTER-Channel-Binding` value of this TLS session, computed by the
    /// guest's own TLS stack (never taken from a request).
    pub tls_exporter: [u8; 32],
    /// `POST /v1/attestation` calls made on this connection so far.
    evidence_calls: Arc<AtomicUsize>,
}

impl Session {
    /// The facts of a new connection whose TLS session has this exporter.
    pub fn new(tls_exporter: [u8; 32]) -> Self {
        Self {
            tls_exporter,
            evidence_calls: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Counts one `POST /v1/attestation` call; false when the connection has already
    /// made `per_connection` of them.
    pub fn take_evidence_call(&self, per_connection: usize) -> bool {
        self.evidence_calls.fetch_add(1, Ordering::SeqCst) < per_connection
    }
}

/// Bounded admission: `max_running` generate at once, `max_waiting` more may queue.
pub struct Admission {
    permits: Arc<Semaphore>,
    waiting: AtomicUsize,
    max_waiting: usize,
}

struct WaitingGuard<'a>(&'a AtomicUsize);

impl Drop for WaitingGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Admission {
    pub fn new(max_running: usize, max_waiting: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(max_running.max(1))),
            waiting: AtomicUsize::new(0),
            max_waiting,
        }
    }

    /// A slot to generate in, waiting in the queue if there is room in it.
    pub async fn admit(&self) -> Result<OwnedSemaphorePermit, ApiError> {
        if let Ok(permit) = self.permits.clone().try_acquire_owned() {
            return Ok(permit);
        }
        if self.waiting.fetch_add(1, Ordering::SeqCst) >= self.max_waiting {
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            return Err(ApiError::busy(2));
        }
        let _guard = WaitingGuard(&self.waiting);
        self.permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| ApiError::shutting_down())
    }
}

/// Least strength of a host token, in bits by [`estimated_bits`].
pub const MIN_TOKEN_BITS: f64 = 128.0;

/// Least zxcvbn estimate, in bits. zxcvbn counts guesses in a `u64`, so its estimate
/// stops at 64 bits: it serves to find patterns (words, keyboard walks, dates, sequences),
/// the entropy estimate to find length.
const MIN_ZXCVBN_BITS: f64 = 60.0;

/// Characters of a token that are judged (a longer token is no weaker).
const JUDGED_CHARS: usize = 256;

/// Bits of a token by a simple, conservative estimate: the empirical Shannon entropy per
/// character (of the characters, or of the steps between neighbours, whichever is less, so
/// runs like `0123…` count for little) times the number of characters a copy of earlier
/// text does not explain (a greedy LZ77 parse: a repeat of 3 or more characters counts as
/// one), so `aaaa…`, `abab…` or a word typed four times are worth a few characters.
pub fn estimated_bits(token: &str) -> f64 {
    let bytes = &token.as_bytes()[..token.len().min(JUDGED_CHARS)];
    let n = bytes.len();
    let mut units = 0usize;
    let mut i = 0;
    while i < n {
        let longest = (0..i)
            .map(|j| {
                (0..n - i)
                    .take_while(|&k| bytes[j + k] == bytes[i + k])
                    .count()
            })
            .max()
            .unwrap_or(0);
        units += 1;
        i += if longest >= 3 { longest } else { 1 };
    }
    fn entropy(values: impl Iterator<Item = u8>) -> f64 {
        let mut counts = [0usize; 256];
        let mut total = 0usize;
        for v in values {
            counts[usize::from(v)] += 1;
            total += 1;
        }
        counts
            .iter()
            .filter(|&&c| c > 0)
            .map(|&c| {
                let p = c as f64 / total as f64;
                -p * p.log2()
            })
            .sum()
    }
    let characters = entropy(bytes.iter().copied());
    let steps = entropy(bytes.windows(2).map(|w| w[1].wrapping_sub(w[0])));
    characters.min(steps) * units as f64
}

/// The bearer token the host agent must present for the internal API (SHA-256 of it is
/// kept, not the token). It must be hard to guess, judged by its content, not its
/// length: a simple entropy estimate ([`estimated_bits`]: repeats and runs count for
/// little) must reach [`MIN_TOKEN_BITS`] bits and zxcvbn must find no guessable pattern
/// (words, keyboard walks), so `"a"×32`, `"abab…"` or `"0123…"` are refused at start and
/// `openssl rand -hex 32` (or `-base64 32`) passes.
pub struct HostToken {
    sha256: [u8; 32],
}

impl HostToken {
    /// A token (trimmed) that is hard to guess: at least [`MIN_TOKEN_BITS`] by
    /// [`estimated_bits`], and no pattern zxcvbn knows (words, keyboard walks, dates);
    /// others are refused at start with the estimates.
    pub fn new(token: &str) -> Result<Self, String> {
        let token = token.trim();
        let bits = estimated_bits(token);
        let zxcvbn_bits = zxcvbn::zxcvbn(&token.chars().take(100).collect::<String>(), &[])
            .guesses_log10()
            * std::f64::consts::LOG2_10;
        if !(bits >= MIN_TOKEN_BITS && zxcvbn_bits >= MIN_ZXCVBN_BITS) {
            return Err(format!(
                "the host token is too easy to guess: about {:.0} bits by entropy \
                 ({MIN_TOKEN_BITS:.0} needed) and {:.0} by zxcvbn's pattern search \
                 ({MIN_ZXCVBN_BITS:.0} needed), {} characters; make one with \
                 `openssl rand -hex 32`",
                bits.max(0.0),
                zxcvbn_bits.max(0.0),
                token.chars().count()
            ));
        }
        Ok(Self {
            sha256: Sha256::digest(token.as_bytes()).into(),
        })
    }

    /// Whether `presented` is the token.
    pub fn matches(&self, presented: &str) -> bool {
        // Digests are compared without an early exit, so timing says nothing about them.
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        digest
            .iter()
            .zip(&self.sha256)
            .fold(0u8, |diff, (a, b)| diff | (a ^ b))
            == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `openssl rand -hex 32` printed once.
    const STRONG: &str = "372e6511537134e8d6940693fa82498804d75a3c675a82de789c7ed7fd91438d";

    #[test]
    fn tokens_are_judged_by_content_not_length() {
        for weak in [
            "short".to_string(),
            "a".repeat(32),
            "a".repeat(200),
            "ab".repeat(32),
            "0123456789abcdef".repeat(4),
            "0123456789abcdef0123456789abcdef-host-token".to_string(),
            "passwordpasswordpasswordpassword1".to_string(),
            "qwertyuiopasdfghjklzxcvbnm1234567890".to_string(),
            String::new(),
            // `openssl rand -hex 16`: 128 random bits, but an estimate from 32 characters
            // reads less (about 110): the documented token is 32 bytes.
            "74209365eecd1ecb6d7154643da54580".to_string(),
        ] {
            let err = HostToken::new(&weak)
                .err()
                .unwrap_or_else(|| panic!("{weak:?} accepted"));
            assert!(err.contains("too easy to guess"), "{err}");
        }
        for strong in [
            STRONG,
            // `openssl rand -base64 32`
            "rJF4YSJaKeimTl0DdBG5+XVBilmA6jQYB4cofJbsFxw=",
            // trailing newline from `> file`
            "372e6511537134e8d6940693fa82498804d75a3c675a82de789c7ed7fd91438d\n",
        ] {
            assert!(HostToken::new(strong).is_ok(), "{strong:?} refused");
        }
    }

    #[test]
    fn the_estimate_counts_what_repeats_do_not_explain() {
        assert_eq!(estimated_bits(""), 0.0);
        assert_eq!(estimated_bits(&"a".repeat(1000)), 0.0);
        assert!(estimated_bits(&"ab".repeat(500)) < 8.0);
        // 16 distinct characters once: 16 x 4 bits at most, however often repeated.
        assert!(estimated_bits(&"0123456789abcdef".repeat(10)) < 64.0);
        assert!(estimated_bits(STRONG) > 200.0, "{}", estimated_bits(STRONG));
    }
}
