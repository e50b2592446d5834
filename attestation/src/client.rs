//! Connecting to an attested endpoint (the one place in this crate that does I/O).

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::tls::AttestedServerVerifier;
use crate::verify::{VerifiedEvidence, VerifyOptions};
use crate::Error;

/// Host and port of an `https://HOST:PORT[/path]` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
}

impl Endpoint {
    pub fn parse(url: &str) -> Result<Self, Error> {
        let bad = || Error::BadUrl(url.to_string());
        let rest = url.strip_prefix("https://").ok_or_else(bad)?;
        let authority = rest.split('/').next().unwrap_or_default();
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, port) = v6.split_once("]:").ok_or_else(bad)?;
            (host, port)
        } else {
            authority.rsplit_once(':').ok_or_else(bad)?
        };
        if host.is_empty() {
            return Err(bad());
        }
        let port = port.parse::<u16>().map_err(|_| bad())?;
        Ok(Self {
            host: host.to_string(),
            port,
        })
    }

    /// `host:port`, with IPv6 hosts bracketed.
    pub fn address(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// Opens a TLS 1.3 connection that completes only if the server's evidence verifies.
pub async fn connect_attested(
    endpoint: &Endpoint,
    options: VerifyOptions,
    timeout: Duration,
) -> Result<(TlsStream<TcpStream>, VerifiedEvidence), Error> {
    let address = endpoint.address();
    let verifier = AttestedServerVerifier::new(options);
    let config = verifier
        .client_config()
        .map_err(|e| Error::Tls(address.clone(), e.to_string()))?;
    let server_name = ServerName::try_from(endpoint.host.clone())
        .map_err(|_| Error::BadUrl(endpoint.host.clone()))?;
    let attempt = async {
        let tcp = TcpStream::connect(&address)
            .await
            .map_err(|e| Error::Unreachable(address.clone(), e.to_string()))?;
        tcp.set_nodelay(true).ok();
        let tls = TlsConnector::from(Arc::new(config))
            .connect(server_name, tcp)
            .await;
        match (tls, verifier.last_outcome()) {
            (Ok(stream), Some(Ok(evidence))) => Ok((stream, evidence)),
            (_, Some(Err(reason))) => Err(Error::Rejected(reason)),
            (Err(e), _) => Err(Error::Tls(address.clone(), e.to_string())),
            (Ok(_), None) => Err(Error::Rejected(
                "the server's certificate was never checked".into(),
            )),
        }
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .map_err(|_| Error::Timeout(address.clone(), timeout))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_endpoint_urls() {
        assert_eq!(
            Endpoint::parse("https://127.0.0.1:8443").unwrap(),
            Endpoint {
                host: "127.0.0.1".into(),
                port: 8443
            }
        );
        assert_eq!(
            Endpoint::parse("https://[::1]:9/v1").unwrap(),
            Endpoint {
                host: "::1".into(),
                port: 9
            }
        );
        for bad in [
            "http://x:1",
            "https://x",
            "https://:1",
            "https://x:99999",
            "x:1",
        ] {
            assert!(Endpoint::parse(bad).is_err(), "{bad}");
        }
    }
}

/// Both checks of an endpoint: the certificate's evidence, and fresh evidence bound to
/// this very TLS session.
#[derive(Debug, Clone)]
pub struct SessionVerified {
    /// The evidence in the certificate.
    pub certificate: VerifiedEvidence,
    /// The fresh evidence over our nonce and the session's TLS exporter.
    pub session: VerifiedEvidence,
    /// DER of the server certificate.
    pub certificate_der: Vec<u8>,
}

/// Connects, verifies the certificate, then asks inside the same TLS session for fresh
/// evidence (`POST /v1/attestation`) over a random nonce and the session's RFC 9266 TLS
/// exporter, and verifies that too. A certificate and quote copied from a genuine guest,
/// or a man in the middle who terminates TLS with his own attested key, fail the second
/// check: the exporter of *our* session is in the REPORTDATA only if the TEE that holds
/// the certificate's key answered inside it.
pub async fn connect_and_verify_session(
    endpoint: &Endpoint,
    options: VerifyOptions,
    timeout: Duration,
) -> Result<SessionVerified, Error> {
    Ok(open_attested_session(endpoint, options, timeout)
        .await?
        .verified)
}

/// Request and response bodies through an attested session.
pub type SessionBody =
    http_body_util::combinators::BoxBody<bytes::Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// A verified HTTP/1.1 connection: both checks passed, and `sender` sends further
/// requests over the very TLS session they were made on.
pub struct AttestedConnection {
    pub verified: SessionVerified,
    pub sender: hyper::client::conn::http1::SendRequest<SessionBody>,
    /// The RFC 9266 exporter of this TLS session (what an account proof signs, see
    /// [`crate::account`]).
    pub tls_exporter: [u8; 32],
}

/// First pause before asking a busy guest for session evidence again.
const RETRY_FIRST: Duration = Duration::from_millis(100);
/// Longest pause between two attempts.
const RETRY_MAX: Duration = Duration::from_secs(2);

/// The `Retry-After` delay (seconds form) a response asks for, if any.
fn retry_after<B>(response: &hyper::Response<B>) -> Option<Duration> {
    response
        .headers()
        .get(hyper::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}

/// Like [`connect_and_verify_session`], keeping the connection open for requests. A guest
/// that answers `429`/`503` with `Retry-After` (its evidence queue is busy) is asked again,
/// with backoff, until `timeout` has passed.
pub async fn open_attested_session(
    endpoint: &Endpoint,
    options: VerifyOptions,
    timeout: Duration,
) -> Result<AttestedConnection, Error> {
    use base64::Engine as _;
    use http_body_util::{BodyExt, Full};

    let (tls, certificate) = connect_attested(endpoint, options.clone(), timeout).await?;
    let address = endpoint.address();
    let certificate_der = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.as_ref().to_vec())
        .ok_or_else(|| Error::Rejected("the server sent no certificate".into()))?;
    let mut exporter = [0u8; 32];
    tls.get_ref()
        .1
        .export_keying_material(&mut exporter, crate::report_data::TLS_EXPORTER_LABEL, None)
        .map_err(|e| Error::Tls(address.clone(), e.to_string()))?;
    let mut nonce = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut nonce)
        .map_err(|_| Error::Crypto("RNG failure".into()))?;

    let started = std::time::Instant::now();
    let exchange = async {
        let (mut sender, conn) = hyper::client::conn::http1::handshake::<_, SessionBody>(
            hyper_util::rt::TokioIo::new(tls),
        )
        .await
        .map_err(|e| Error::Tls(address.clone(), e.to_string()))?;
        tokio::spawn(conn);
        let body = format!(r#"{{"nonce":"{}"}}"#, hex::encode(nonce));
        let mut backoff = RETRY_FIRST;
        loop {
            let request = hyper::Request::post("/v1/attestation")
                .header("host", endpoint.host.as_str())
                .header("content-type", "application/json")
                .body(
                    Full::new(bytes::Bytes::from(body.clone()))
                        .map_err(|never| match never {})
                        .boxed(),
                )
                .map_err(|e| Error::Tls(address.clone(), e.to_string()))?;
            sender
                .ready()
                .await
                .map_err(|e| Error::Tls(address.clone(), e.to_string()))?;
            let response = sender
                .send_request(request)
                .await
                .map_err(|e| Error::Tls(address.clone(), e.to_string()))?;
            let status = response.status();
            let retry_after = retry_after(&response);
            let bytes = http_body_util::Limited::new(response.into_body(), 1 << 20)
                .collect()
                .await
                .map_err(|e| Error::Tls(address.clone(), e.to_string()))?
                .to_bytes();
            if status.is_success() {
                return Ok((bytes, sender));
            }
            // A busy guest (429/503 with Retry-After) is asked again until `timeout`
            // runs out: evidence generation is a queue shared with other clients, and a
            // refusal here would be a denial of service, not a verdict on the guest.
            let busy = matches!(status.as_u16(), 429 | 503);
            let pause = retry_after.map(|hint| hint.min(RETRY_MAX).max(backoff));
            match pause {
                Some(pause) if busy && started.elapsed() + pause < timeout => {
                    tokio::time::sleep(pause).await;
                    backoff = (backoff * 2).min(RETRY_MAX);
                }
                _ => {
                    return Err(Error::Rejected(format!(
                        "POST /v1/attestation answered {status} (after {:.1?}): {}",
                        started.elapsed(),
                        String::from_utf8_lossy(&bytes)
                    )))
                }
            }
        }
    };
    let (bytes, sender) = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| Error::Timeout(address.clone(), timeout))??;
    let value: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| Error::Malformed {
            what: "attestation response",
            detail: e.to_string(),
        })?;
    let payload = value["evidence"]
        .as_str()
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .ok_or_else(|| Error::Malformed {
            what: "attestation response",
            detail: "no base64 'evidence'".into(),
        })?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let session = crate::verify::verify_session_evidence(
        &certificate_der,
        &payload,
        &nonce,
        &exporter,
        now,
        &options,
    )
    .map_err(|e| Error::Rejected(format!("session-bound evidence: {e}")))?;
    Ok(AttestedConnection {
        verified: SessionVerified {
            certificate,
            session,
            certificate_der,
        },
        sender,
        tls_exporter: exporter,
    })
}
