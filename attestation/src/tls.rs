//! A rustls `ServerCertVerifier` that accepts exactly a certificate whose evidence verifies.
//!
//! Web PKI plays no part: the guest's certificate is self-signed and made at boot, so the
//! only thing that can vouch for it is the evidence inside it. The handshake signature is
//! still checked with the certificate's key (rustls does that through
//! `verify_tls13_signature`), which proves the peer holds the key the evidence binds.

use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, OtherError, SignatureScheme};

use crate::verify::{verify_certificate, VerifiedEvidence, VerifyOptions};

/// Verifies RA-TLS certificates and remembers the outcome of the last handshake.
#[derive(Debug)]
pub struct AttestedServerVerifier {
    options: VerifyOptions,
    provider: Arc<CryptoProvider>,
    outcome: Mutex<Option<Result<VerifiedEvidence, String>>>,
}

impl AttestedServerVerifier {
    pub fn new(options: VerifyOptions) -> Arc<Self> {
        Arc::new(Self {
            options,
            provider: Arc::new(rustls::crypto::ring::default_provider()),
            outcome: Mutex::new(None),
        })
    }

    /// The evidence accepted in the last handshake, or why it was refused.
    pub fn last_outcome(&self) -> Option<Result<VerifiedEvidence, String>> {
        self.outcome.lock().ok().and_then(|g| g.clone())
    }

    /// A TLS 1.3-only client configuration that uses this verifier.
    pub fn client_config(self: &Arc<Self>) -> Result<rustls::ClientConfig, rustls::Error> {
        Ok(
            rustls::ClientConfig::builder_with_provider(self.provider.clone())
                .with_protocol_versions(&[&rustls::version::TLS13])?
                .dangerous()
                .with_custom_certificate_verifier(self.clone())
                .with_no_client_auth(),
        )
    }
}

impl ServerCertVerifier for AttestedServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let now = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
        let result = verify_certificate(end_entity.as_ref(), now, &self.options);
        let (stored, verdict) = match result {
            Ok(v) => (Ok(v), Ok(ServerCertVerified::assertion())),
            Err(e) => {
                let message = e.to_string();
                (
                    Err(message),
                    Err(rustls::Error::InvalidCertificate(CertificateError::Other(
                        OtherError(Arc::new(e)),
                    ))),
                )
            }
        };
        if let Ok(mut guard) = self.outcome.lock() {
            *guard = Some(stored);
        }
        verdict
    }

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
}
