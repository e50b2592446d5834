//! A rustls `ServerCertVerifier` that accepts exactly a certificate whose evidence verifies.
//!
//! Web PKI plays no part: the guest's certificate is self-signed and made at boot, so the
//! only thing that can vouch for it is the evidence inside it. The handshake signature is
//! still checked with the certificate's key (rustls does that through
//! `verify_tls13_signature`), which proves the peer holds the key the evidence binds.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, OtherError, SignatureScheme};

use sha2::{Digest, Sha256};

use crate::verified::Verified;
use crate::verifier::Verifier;

/// The handshake-signature checks both verifiers share: the peer proves it holds the key
/// of the certificate whose evidence was checked. Needs a `provider` field and, in scope,
/// `CertificateDer`, `DigitallySignedStruct`, `HandshakeSignatureValid` and
/// `SignatureScheme` from rustls. Exported for other rustls verifiers of this project
/// (the host agent's liveness probe), so the signature checks exist once.
#[macro_export]
macro_rules! handshake_signature_checks {
    () => {
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(
                message,
                cert,
                dss,
                &self.provider.signature_verification_algorithms,
            )
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(
                message,
                cert,
                dss,
                &self.provider.signature_verification_algorithms,
            )
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.provider
                .signature_verification_algorithms
                .supported_schemes()
        }
    };
}

/// Verifies RA-TLS certificates, and keeps each outcome under the certificate's SHA-256
/// so that the caller reads the outcome *of the certificate its connection presented*
/// (never "whatever the last handshake said"). Session resumption is off in the configs
/// it makes, so every connection runs `verify_server_cert`.
#[derive(Debug)]
pub struct AttestedServerVerifier {
    verifier: Arc<Verifier>,
    provider: Arc<CryptoProvider>,
    outcomes: Mutex<HashMap<[u8; 32], Result<Verified, Refusal>>>,
    last_refusal: Mutex<Option<Refusal>>,
}

/// Why a certificate was refused, with what a caller needs to do something about it.
#[derive(Debug, Clone)]
pub struct Refusal {
    pub message: String,
    /// The verifier lacked collateral for this evidence (fetch it and try again).
    pub needs_collateral: bool,
    /// The refused certificate (DER).
    pub certificate_der: Vec<u8>,
}

/// Most outcomes kept (one per distinct certificate seen; a verifier is per client).
const MAX_OUTCOMES: usize = 64;

impl AttestedServerVerifier {
    pub fn new(verifier: Arc<Verifier>) -> Arc<Self> {
        Arc::new(Self {
            verifier,
            provider: Arc::new(rustls::crypto::ring::default_provider()),
            outcomes: Mutex::new(HashMap::new()),
            last_refusal: Mutex::new(None),
        })
    }

    /// The last refusal (a failed handshake has no peer certificate to look up by).
    pub fn last_refusal(&self) -> Option<Refusal> {
        self.last_refusal.lock().ok().and_then(|g| g.clone())
    }

    /// The outcome of verifying exactly this certificate (DER), if it was checked.
    pub fn outcome_for(&self, certificate_der: &[u8]) -> Option<Result<Verified, Refusal>> {
        let key: [u8; 32] = Sha256::digest(certificate_der).into();
        self.outcomes.lock().ok().and_then(|g| g.get(&key).cloned())
    }

    /// A TLS 1.3-only client configuration that uses this verifier, without session
    /// resumption (a resumed session would skip the certificate check).
    pub fn client_config(self: &Arc<Self>) -> Result<rustls::ClientConfig, rustls::Error> {
        let mut config = rustls::ClientConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .dangerous()
            .with_custom_certificate_verifier(self.clone())
            .with_no_client_auth();
        config.resumption = rustls::client::Resumption::disabled();
        config.enable_early_data = false;
        Ok(config)
    }
}

impl ServerCertVerifier for AttestedServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let now = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
        let result = check_server_name(end_entity.as_ref(), server_name)
            .and_then(|()| self.verifier.verify_certificate(end_entity.as_ref(), now));
        let (stored, verdict) = match result {
            Ok(v) => (Ok(v), Ok(ServerCertVerified::assertion())),
            Err(e) => {
                let refusal = Refusal {
                    message: e.to_string(),
                    needs_collateral: matches!(e, crate::Error::Collateral(_)),
                    certificate_der: end_entity.as_ref().to_vec(),
                };
                if let Ok(mut last) = self.last_refusal.lock() {
                    *last = Some(refusal.clone());
                }
                (
                    Err(refusal),
                    Err(rustls::Error::InvalidCertificate(CertificateError::Other(
                        OtherError(Arc::new(e)),
                    ))),
                )
            }
        };
        if let Ok(mut guard) = self.outcomes.lock() {
            if guard.len() >= MAX_OUTCOMES {
                guard.clear();
            }
            guard.insert(Sha256::digest(end_entity.as_ref()).into(), stored);
        }
        verdict
    }

    handshake_signature_checks!();
}

/// Where the client asked for a DNS name, the certificate must carry it (a guest's
/// certificate names the hosts it serves, `--san`); addresses are not checked, the evidence
/// binding is what identifies the guest.
fn check_server_name(der: &[u8], server_name: &ServerName<'_>) -> crate::Result<()> {
    let ServerName::DnsName(wanted) = server_name else {
        return Ok(());
    };
    let wanted = wanted.as_ref().trim_end_matches('.');
    let names = crate::ratls::dns_names(der)?;
    if names.iter().any(|n| n.eq_ignore_ascii_case(wanted)) {
        return Ok(());
    }
    Err(crate::Error::Policy {
        rule: "server name must be in the certificate",
        observed: format!("certificate names [{}]", names.join(", ")),
        expected: wanted.to_string(),
    })
}

/// A rustls `ClientCertVerifier` for mutual attestation between our own components:
/// the client must present an RA-TLS certificate whose evidence verifies.
#[derive(Debug)]
pub struct AttestedClientVerifier {
    verifier: Arc<Verifier>,
    provider: Arc<CryptoProvider>,
}

impl AttestedClientVerifier {
    pub fn new(verifier: Arc<Verifier>) -> Arc<Self> {
        Arc::new(Self {
            verifier,
            provider: Arc::new(rustls::crypto::ring::default_provider()),
        })
    }
}

impl rustls::server::danger::ClientCertVerifier for AttestedClientVerifier {
    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        let now = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
        self.verifier
            .verify_certificate(end_entity.as_ref(), now)
            .map(|_| rustls::server::danger::ClientCertVerified::assertion())
            .map_err(|e| {
                rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(e))))
            })
    }

    handshake_signature_checks!();
}
