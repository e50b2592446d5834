//! The one error type of this crate.
//!
//! Every variant says which check failed and, where it applies, the observed and expected
//! values, so a rejection can be acted on without reading the source.

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why evidence, a certificate or a quote was not accepted (or could not be produced).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The input ended before a field that the format requires.
    #[error("{what}: truncated: need {needed} bytes at offset {offset}, have {available}")]
    Truncated {
        what: &'static str,
        offset: usize,
        needed: usize,
        available: usize,
    },
    /// A field holds a value the format does not allow.
    #[error("{what}: unsupported value {value}")]
    Unsupported { what: &'static str, value: String },
    /// Bytes that should be DER, CBOR or X.509 did not parse.
    #[error("malformed {what}: {detail}")]
    Malformed { what: &'static str, detail: String },
    /// The certificate has no Cocoon evidence extension.
    #[error("the certificate carries no Cocoon evidence extension (OID {oid})")]
    NoEvidenceExtension { oid: String },
    /// REPORTDATA in the evidence does not bind this certificate's key and config.
    #[error(
        "report data does not bind the certificate's public key: evidence has {observed}, \
         expected {expected}"
    )]
    ReportDataMismatch { observed: String, expected: String },
    /// A signature over the evidence did not verify.
    #[error("signature check failed: {0}")]
    BadSignature(String),
    /// The evidence chains to a root the verifier was not given as a trust anchor (a
    /// development root without `--allow-simulated`, or a root nobody pinned).
    #[error("{tee} evidence is not from a trusted root: {detail}")]
    UntrustedAnchor { tee: &'static str, detail: String },
    /// A policy rule rejected the evidence.
    #[error("policy rule '{rule}' failed: observed {observed}, expected {expected}")]
    Policy {
        rule: &'static str,
        observed: String,
        expected: String,
    },
    /// The certificate is outside its validity window at the verification time.
    #[error("certificate not valid at {at}: valid from {not_before} to {not_after}")]
    CertificateExpired {
        at: String,
        not_before: String,
        not_after: String,
    },
    /// A certificate of a chain does not chain (issuer name, CA flag, algorithm or
    /// signature), by position (0 = leaf).
    #[error("certificate chain: certificate {index} ({subject}): {detail}")]
    CertificateChain {
        index: usize,
        subject: String,
        detail: String,
    },
    /// Evidence carries another nonce than the verifier asked for (a replay or stale
    /// evidence).
    #[error("{what}: nonce {observed} is not the expected nonce {expected}")]
    NonceMismatch {
        what: &'static str,
        observed: String,
        expected: String,
    },
    /// Measurements differ from the reference values (every failed block named).
    #[error("measurements differ from the reference values: {detail}")]
    MeasurementMismatch { detail: String },
    /// Key generation or signing failed (only when producing evidence).
    #[error("crypto failure: {0}")]
    Crypto(String),
    /// An endpoint URL was not of the form `https://HOST:PORT`.
    #[error("bad endpoint URL '{0}': expected https://HOST:PORT")]
    BadUrl(String),
    /// The endpoint could not be reached.
    #[error("could not reach {0}: {1}")]
    Unreachable(String, String),
    /// Connecting or the handshake took longer than allowed.
    #[error("timed out after {1:?} connecting to {0}")]
    Timeout(String, std::time::Duration),
    /// The endpoint's evidence was refused during the handshake.
    #[error("attestation check failed: {0}")]
    Rejected(String),
    /// The TLS handshake failed for a reason other than the evidence.
    #[error("TLS handshake with {0} failed: {1}")]
    Tls(String, String),
    /// DCAP verification of a TDX quote failed (chain, CRL, collateral, signature, TCB).
    #[error("DCAP verification failed: {0}")]
    Dcap(String),
    /// Collateral could not be fetched or cached.
    #[error("collateral: {0}")]
    Collateral(String),
    /// A document that must carry a signature carries none.
    #[error("{what}: not signed: {detail}")]
    NotSigned { what: &'static str, detail: String },
    /// A digest over signed content differs from the digest the signature covers.
    #[error("{what}: digest mismatch: computed {computed}, signed {expected}")]
    DigestMismatch {
        what: &'static str,
        computed: String,
        expected: String,
    },
    /// Untrusted input exceeds a limit this crate sets (size, depth, count).
    #[error("{what}: {actual} exceeds the limit of {limit}")]
    LimitExceeded {
        what: &'static str,
        limit: usize,
        actual: usize,
    },
}
