//! Is the guest alive? `GET /healthz` over TLS to the forwarded HTTPS port.
//!
//! This is liveness only, and it drives nothing but restarts: whether clients reach the
//! guest is decided by the attestation check (`verify.rs`), never here. So the probe takes
//! any certificate (the guest's is self-issued and made at boot; its evidence is checked
//! by the verifier, not by the probe), while rustls still checks the handshake signature.
//! Every socket step has its own timeout, and the answer is read up to a small bound.

use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::error::{Error, Result};

/// The most of an answer the probe reads.
const MAX_ANSWER: usize = 64 * 1024;

/// Probes one address.
#[derive(Clone)]
pub struct HealthProbe {
    address: String,
    io_timeout: Duration,
    tls: TlsConnector,
}

impl HealthProbe {
    /// A probe of `address` (`host:port`) whose every socket step waits at most
    /// `io_timeout`.
    pub fn new(address: String, io_timeout: Duration) -> Result<Self> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| Error::Health {
                address: address.clone(),
                detail: e.to_string(),
            })?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(LivenessOnly { provider }))
            .with_no_client_auth();
        Ok(Self {
            address,
            io_timeout,
            tls: TlsConnector::from(Arc::new(config)),
        })
    }

    pub fn address(&self) -> &str {
        &self.address
    }

    /// One probe: `Ok` when `/healthz` answered 200.
    pub async fn check(&self) -> Result<()> {
        let step = |what: &'static str| {
            let address = self.address.clone();
            move |detail: String| Error::Health {
                address,
                detail: format!("{what}: {detail}"),
            }
        };
        let tcp = self
            .bounded(TcpStream::connect(&self.address))
            .await
            .map_err(step("connect"))?;
        tcp.set_nodelay(true).ok();
        let name = ServerName::try_from("guest").map_err(|e| step("server name")(e.to_string()))?;
        let mut tls = self
            .bounded(self.tls.connect(name, tcp))
            .await
            .map_err(step("TLS handshake"))?;
        self.bounded(
            tls.write_all(b"GET /healthz HTTP/1.1\r\nhost: guest\r\nconnection: close\r\n\r\n"),
        )
        .await
        .map_err(step("send"))?;
        let mut answer = Vec::new();
        let mut buf = [0u8; 4096];
        while answer.len() < MAX_ANSWER && !answer.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = self
                .bounded(tls.read(&mut buf))
                .await
                .map_err(step("read"))?;
            if n == 0 {
                break;
            }
            answer.extend_from_slice(&buf[..n]);
        }
        let status_line = answer
            .split(|&b| b == b'\r')
            .next()
            .map(|line| String::from_utf8_lossy(line).into_owned())
            .unwrap_or_default();
        match status_line.split(' ').nth(1) {
            Some("200") => Ok(()),
            _ if status_line.is_empty() => {
                Err(step("answer")("the guest closed without answering".into()))
            }
            _ => Err(step("answer")(status_line)),
        }
    }

    /// Runs one socket step under the probe's timeout.
    async fn bounded<T>(
        &self,
        step: impl std::future::Future<Output = std::io::Result<T>>,
    ) -> std::result::Result<T, String> {
        match tokio::time::timeout(self.io_timeout, step).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no progress within {:?}", self.io_timeout)),
        }
    }
}

/// Accepts any server certificate, checks the handshake signature: liveness only.
#[derive(Debug)]
struct LivenessOnly {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for LivenessOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    cocoon_attestation::handshake_signature_checks!();
}

#[cfg(test)]
#[path = "health_tests.rs"]
mod tests;
