//! Connecting to an attested endpoint: the handshake verified by the one pipeline
//! ([`Verifier`]), collateral fetched when the evidence needs some the verifier lacks, and
//! fresh evidence bound to the session.

use std::sync::Arc;
use std::time::Duration;

use cocoon_attestation::gpu::served::MAX_GPU_DOCUMENT_BYTES;
use cocoon_attestation::gpu::{verify_served_gpu, ServedGpuCheck};
use cocoon_attestation::ratls::parse_certificate;
use cocoon_attestation::tls::{AttestedServerVerifier, Refusal};
use cocoon_attestation::{Error, Verified, Verifier};
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::fetcher::CollateralFetcher;
use crate::registry::{
    attested_config, required_values, RegistrySource, RequiredValue, MAX_CONFIG_BYTES,
};

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

/// A client's way of checking endpoints: the verifier, and where to fetch collateral the
/// verifier lacks (none: refuse instead).
#[derive(Clone)]
pub struct Attestor {
    /// NVIDIA RIMs (`(name, XML)`) the GPUs' measurements are compared with (empty: the
    /// measurements are verified as signed but not compared, and the verdict says so).
    pub gpu_rims: Arc<Vec<(String, Vec<u8>)>>,
    pub verifier: Arc<Verifier>,
    pub fetcher: Option<Arc<CollateralFetcher>>,
    /// `--registry`: every session's image, model and prices must be registered there
    /// (checked by [`open_attested_session`] after the evidence verified).
    pub registry: Option<Arc<RegistrySource>>,
}

impl Attestor {
    /// Verifies with `verifier` and never fetches.
    pub fn offline(verifier: Verifier) -> Self {
        Self {
            verifier: Arc::new(verifier),
            fetcher: None,
            gpu_rims: Arc::default(),
            registry: None,
        }
    }
}

/// Opens a TLS 1.3 connection that completes only if the server's evidence verifies.
/// When the evidence needs collateral the verifier does not hold (a TDX platform seen for
/// the first time, an SNP report without certificates) and a fetcher is configured, the
/// collateral is fetched (and cached) and the handshake made once more: the handshake
/// verifier itself is synchronous and never does network I/O.
pub async fn connect_attested(
    endpoint: &Endpoint,
    attestor: &Attestor,
    timeout: Duration,
) -> Result<(TlsStream<TcpStream>, Verified), Error> {
    let address = endpoint.address();
    let attempt = async {
        match handshake(endpoint, &attestor.verifier).await {
            Err(Refused::Refusal(refusal)) if refusal.needs_collateral => {
                let Some(fetcher) = &attestor.fetcher else {
                    return Err(Error::Rejected(refusal.message));
                };
                fetcher
                    .fetch_for_certificate(&refusal.certificate_der)
                    .await
                    .map_err(|e| Error::Rejected(format!("{}; {e}", refusal.message)))?;
                handshake(endpoint, &attestor.verifier)
                    .await
                    .map_err(Refused::into_error)
            }
            other => other.map_err(Refused::into_error),
        }
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .map_err(|_| Error::Timeout(address.clone(), timeout))?
}

/// Why one handshake did not give a verified connection.
enum Refused {
    Refusal(Refusal),
    Other(Error),
}

impl Refused {
    fn into_error(self) -> Error {
        match self {
            Refused::Refusal(r) => Error::Rejected(r.message),
            Refused::Other(e) => e,
        }
    }
}

/// One TCP connection and TLS handshake. The outcome is read for the certificate this
/// very connection presented.
async fn handshake(
    endpoint: &Endpoint,
    verifier: &Arc<Verifier>,
) -> Result<(TlsStream<TcpStream>, Verified), Refused> {
    let address = endpoint.address();
    let tls_verifier = AttestedServerVerifier::new(verifier.clone());
    let config = tls_verifier
        .client_config()
        .map_err(|e| Refused::Other(Error::Tls(address.clone(), e.to_string())))?;
    let server_name = ServerName::try_from(endpoint.host.clone())
        .map_err(|_| Refused::Other(Error::BadUrl(endpoint.host.clone())))?;
    let tcp = TcpStream::connect(&address)
        .await
        .map_err(|e| Refused::Other(Error::Unreachable(address.clone(), e.to_string())))?;
    tcp.set_nodelay(true).ok();
    let tls = TlsConnector::from(Arc::new(config))
        .connect(server_name, tcp)
        .await;
    match tls {
        Ok(stream) => {
            let presented = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .map(|c| c.as_ref().to_vec())
                .ok_or_else(|| {
                    Refused::Other(Error::Rejected("the server sent no certificate".into()))
                })?;
            match tls_verifier.outcome_for(&presented) {
                Some(Ok(verified)) => Ok((stream, verified)),
                Some(Err(refusal)) => Err(Refused::Refusal(refusal)),
                None => Err(Refused::Other(Error::Rejected(
                    "the server's certificate was never checked".into(),
                ))),
            }
        }
        Err(e) => match tls_verifier.last_refusal() {
            Some(refusal) => Err(Refused::Refusal(refusal)),
            None => Err(Refused::Other(Error::Tls(address.clone(), e.to_string()))),
        },
    }
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
    pub certificate: Verified,
    /// The fresh evidence over our nonce and the session's TLS exporter.
    pub session: Verified,
    /// DER of the server certificate.
    pub certificate_der: Vec<u8>,
    /// The GPU evidence the TEE's evidence binds, fetched and verified (`None`: the
    /// guest binds none, it serves from the CPU).
    pub gpu: Option<cocoon_attestation::gpu::ServedGpuCheck>,
    /// The values the attestor's registry has registered for this guest (empty without
    /// `--registry`).
    pub registered: Vec<RequiredValue>,
}

/// Connects, verifies the certificate, then asks inside the same TLS session for fresh
/// evidence (`POST /v1/attestation`) over a random nonce and the session's RFC 9266 TLS
/// exporter, and verifies that too. A certificate and quote copied from a genuine guest,
/// or a man in the middle who terminates TLS with his own attested key, fail the second
/// check: the exporter of *our* session is in the REPORTDATA only if the TEE that holds
/// the certificate's key answered inside it.
pub async fn connect_and_verify_session(
    endpoint: &Endpoint,
    attestor: &Attestor,
    timeout: Duration,
) -> Result<SessionVerified, Error> {
    Ok(open_attested_session(endpoint, attestor, timeout)
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
    /// `cocoon_attestation::account`).
    pub tls_exporter: [u8; 32],
}

impl AttestedConnection {
    /// `GET path` over this verified session with `headers`; the status and the body, read
    /// up to `limit` bytes (a longer body is an error, never buffered whole).
    pub async fn get(
        &mut self,
        endpoint: &Endpoint,
        path: &str,
        headers: &[(&str, &str)],
        limit: usize,
    ) -> Result<(hyper::StatusCode, bytes::Bytes), Error> {
        use http_body_util::{BodyExt, Empty};
        let tls = |e: String| Error::Tls(endpoint.address(), e);
        let mut request = hyper::Request::get(path).header("host", endpoint.host.as_str());
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request
            .body(Empty::new().map_err(|never| match never {}).boxed())
            .map_err(|e| tls(e.to_string()))?;
        self.sender.ready().await.map_err(|e| tls(e.to_string()))?;
        let response = self
            .sender
            .send_request(request)
            .await
            .map_err(|e| tls(e.to_string()))?;
        let status = response.status();
        let body = http_body_util::Limited::new(response.into_body(), limit)
            .collect()
            .await
            .map_err(|e| tls(format!("reading {path}: {e}")))?
            .to_bytes();
        Ok((status, body))
    }
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
    attestor: &Attestor,
    timeout: Duration,
) -> Result<AttestedConnection, Error> {
    use base64::Engine as _;
    use http_body_util::{BodyExt, Full};

    let (tls, certificate) = connect_attested(endpoint, attestor, timeout).await?;
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
        .export_keying_material(
            &mut exporter,
            cocoon_attestation::report_data::TLS_EXPORTER_LABEL,
            None,
        )
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
    let session = attestor
        .verifier
        .verify_session_evidence(
            &certificate_der,
            &payload,
            &nonce,
            &exporter,
            crate::fetcher::unix_now(),
        )
        .map_err(|e| Error::Rejected(format!("session-bound evidence: {e}")))?;
    let mut connection = AttestedConnection {
        verified: SessionVerified {
            certificate,
            session,
            certificate_der,
            gpu: None,
            registered: Vec::new(),
        },
        sender,
        tls_exporter: exporter,
    };
    // GPU evidence bound in the TEE's evidence is always checked, never passed over.
    if connection
        .verified
        .certificate
        .gpu_evidence_digest
        .is_some()
    {
        let check = tokio::time::timeout(
            timeout.saturating_sub(started.elapsed()),
            check_gpu(&mut connection, endpoint, attestor),
        )
        .await
        .map_err(|_| Error::Timeout(address.clone(), timeout))??;
        connection.verified.gpu = Some(check);
    }
    if let Some(registry) = &attestor.registry {
        let registered = tokio::time::timeout(
            timeout.saturating_sub(started.elapsed()),
            check_registry(&mut connection, endpoint, registry),
        )
        .await
        .map_err(|_| Error::Timeout(address.clone(), timeout))??;
        connection.verified.registered = registered;
    }
    Ok(connection)
}

/// The registry half of an endpoint check (`--registry`): the config document the
/// evidence attests is fetched over the session, and the image, model and prices of the
/// guest must all be registered now.
async fn check_registry(
    connection: &mut AttestedConnection,
    endpoint: &Endpoint,
    registry: &RegistrySource,
) -> Result<Vec<RequiredValue>, Error> {
    let (status, body) = connection
        .get(endpoint, "/v1/attestation/config", &[], MAX_CONFIG_BYTES)
        .await?;
    if !status.is_success() {
        return Err(Error::Rejected(format!(
            "{}: the guest's config is needed to check its registration, and GET \
             /v1/attestation/config answered {status}",
            registry.name()
        )));
    }
    let certificate = &connection.verified.certificate;
    let config = attested_config(certificate.config_digest.as_deref(), &body)?;
    let required = required_values(certificate, &config)?;
    registry.check(&required).await?;
    Ok(required)
}

/// The GPU half of an endpoint check. The certificate carries only the digest of the GPU
/// evidence; the evidence is fetched over the same TLS session whose key the TEE bound, so
/// a relay cannot substitute another machine's GPU report: it would not hash to the bound
/// digest, and a report for another key would not carry this key's nonce.
/// Fetches and verifies the GPU evidence of a verified connection whose certificate binds
/// some: the evidence must hash to the bound digest, every device's report carry the
/// nonce of the certificate's key and chain to a trusted GPU root, and, with RIMs in the
/// attestor, every measurement they cover match.
async fn check_gpu(
    connection: &mut AttestedConnection,
    endpoint: &Endpoint,
    attestor: &Attestor,
) -> Result<ServedGpuCheck, Error> {
    let certificate = parse_certificate(&connection.verified.certificate_der)
        .map_err(|e| Error::Rejected(format!("the certificate: {e}")))?;
    let Some(bound) = certificate
        .evidence
        .gpu_evidence_digest
        .as_ref()
        .map(|d| d.to_vec())
    else {
        return Err(Error::Rejected(
            "the certificate binds no GPU evidence".into(),
        ));
    };
    let (status, body) = connection
        .get(endpoint, "/v1/attestation/gpu", &[], MAX_GPU_DOCUMENT_BYTES)
        .await?;
    if !status.is_success() {
        return Err(Error::Rejected(format!(
            "the TEE's evidence binds GPU evidence, but GET /v1/attestation/gpu answered \
             {status}: {}",
            String::from_utf8_lossy(&body)
        )));
    }
    let check = verify_served_gpu(
        &body,
        &certificate.spki_der,
        &bound,
        crate::fetcher::unix_now(),
        attestor.verifier.anchors().gpu_roots(),
        &attestor.gpu_rims,
    );
    match check.refusal() {
        Some(why) => Err(Error::Rejected(format!("GPU evidence: {why}"))),
        None => Ok(check),
    }
}
