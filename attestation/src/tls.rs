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

/// The handshake-signature checks both verifiers share: the peer proves it holds the key
/// of the certificate whose evidence was checked. Needs a `provider` field.
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

    handshake_signature_checks!();
}

/// A rustls `ClientCertVerifier` for mutual attestation between our own components:
/// the client must present an RA-TLS certificate whose evidence verifies.
#[derive(Debug)]
pub struct AttestedClientVerifier {
    options: VerifyOptions,
    provider: Arc<CryptoProvider>,
}

impl AttestedClientVerifier {
    pub fn new(options: VerifyOptions) -> Arc<Self> {
        Arc::new(Self {
            options,
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
        verify_certificate(end_entity.as_ref(), now, &self.options)
            .map(|_| rustls::server::danger::ClientCertVerified::assertion())
            .map_err(|e| {
                rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(e))))
            })
    }

    handshake_signature_checks!();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ratls::TlsKey;
    use crate::report_data::certificate_binding;
    use crate::simulated::{test_certificate, SimulatedTdConfig, SimulatedTdx};
    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

    /// An RA-TLS identity with simulated evidence (or none, for the negative case).
    fn identity(with_evidence: bool) -> (Vec<u8>, TlsKey) {
        let key = TlsKey::generate().unwrap();
        let cfg = vec![4u8; 48];
        let rd = if with_evidence {
            certificate_binding(key.spki_der(), &cfg)
        } else {
            [0; 64]
        };
        let now = time::OffsetDateTime::now_utc();
        let td = SimulatedTdConfig {
            config_digest: cfg,
            debug: false,
        };
        let tee = SimulatedTdx::dev().unwrap();
        let der = test_certificate(
            &key,
            &tee,
            &rd,
            &td,
            now - time::Duration::minutes(1),
            now + time::Duration::hours(1),
        );
        (der, key)
    }

    fn options() -> VerifyOptions {
        VerifyOptions {
            allow_simulated: true,
            policy: Default::default(),
        }
    }

    async fn handshake(client_has_evidence: bool) -> Result<(), String> {
        let (server_cert, server_key) = identity(true);
        let (client_cert, client_key) = identity(client_has_evidence);
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_client_cert_verifier(AttestedClientVerifier::new(options()))
            .with_single_cert(
                vec![CertificateDer::from(server_cert)],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.pkcs8_der().to_vec())),
            )
            .unwrap();
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(AttestedServerVerifier::new(options()))
            .with_client_auth_cert(
                vec![CertificateDer::from(client_cert)],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(client_key.pkcs8_der().to_vec())),
            )
            .unwrap();
        let (a, b) = tokio::io::duplex(64 * 1024);
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
        let server_side = tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut tls = acceptor.accept(a).await.map_err(|e| e.to_string())?;
            let mut buf = [0u8; 4];
            tls.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
            tls.write_all(b"pong").await.map_err(|e| e.to_string())?;
            let _ = tls.shutdown().await; // the client may already be gone
            Ok::<_, String>(buf)
        });
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let client_result = async {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut tls = connector
                .connect(name, b)
                .await
                .map_err(|e| e.to_string())?;
            tls.write_all(b"ping").await.map_err(|e| e.to_string())?;
            tls.flush().await.map_err(|e| e.to_string())?;
            let mut reply = [0u8; 4];
            tls.read_exact(&mut reply)
                .await
                .map_err(|e| e.to_string())?;
            Ok::<_, String>(())
        }
        .await;
        let server_result = server_side.await.map_err(|e| e.to_string())?;
        let received =
            server_result.map_err(|e| format!("server: {e}; client: {client_result:?}"))?;
        client_result?;
        (received == *b"ping")
            .then_some(())
            .ok_or_else(|| "wrong bytes".to_string())
    }

    #[tokio::test]
    async fn mutual_attestation_accepts_attested_clients_only() {
        handshake(true).await.unwrap();
        let err = handshake(false).await.unwrap_err();
        assert!(!err.is_empty());
    }
}
