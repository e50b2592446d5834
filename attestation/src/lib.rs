//! Evidence formats, RA-TLS certificates and the verifier for the Cocoon appliance.
//!
//! A client must be able to decide, before it sends a single prompt, whether the TLS
//! endpoint it reached is our guest running inside a TEE. This crate holds everything that
//! decision needs: the evidence formats (TDX quotes, SEV-SNP reports and certificate
//! tables, the CBOR evidence payload, the runtime event log), the binding between evidence
//! and a TLS key (`report_data`), the X.509 extension that carries the evidence (`ratls`),
//! and one [`Verifier`] that checks any of it against [`TrustAnchors`], collateral and a
//! [`Policy`], returning [`Verified`] only when every check passed.
//!
//! What this crate does not do: network I/O in the verifier (collateral is an input;
//! fetching it from Intel PCS / a PCCS / AMD KDS is in [`fetch`], behind the `fetch`
//! feature), TLS connections or command lines (crate `cocoon-client`), and making
//! development evidence (crate `cocoon-attestation-dev`, which this crate cannot import:
//! a development root is trusted only when a caller passes it as an anchor).
#![forbid(unsafe_code)]

pub mod account;
pub mod anchors;
pub mod collateral;
pub mod error;
pub mod event_log;
pub mod evidence;
#[cfg(feature = "fetch")]
pub mod fetch;
pub mod gpu;
pub mod manifest;
pub mod oid;
pub mod pem;
mod pkcs8;
pub mod policy;
pub mod ratls;
pub mod receipt;
pub mod receipt_tree;
pub mod report_data;
pub mod snp;
pub mod tdx;
pub mod tls;
pub mod unix_time;
pub mod verified;
pub mod verifier;
pub mod vtpm;
mod wire;

pub use anchors::TrustAnchors;
pub use collateral::{CollateralSource, CollateralStore};
pub use error::{Error, Result};
pub use evidence::{EvidenceKind, EvidencePayload};
pub use manifest::Manifest;
pub use policy::Policy;
pub use verified::{CertificateFacts, Verdict, Verified, VtpmFacts};
pub use verifier::Verifier;
