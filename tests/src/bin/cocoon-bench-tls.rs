//! `cocoon-bench-tls`: what attestation costs on the wire, against a real guest process.
//!
//! 1. New connection: TLS 1.3 handshake with the certificate pinned by SHA-256 (what an
//!    SDK does with a pinned CA file: the peer), versus handshake + certificate evidence
//!    verification, versus handshake + certificate + session-bound evidence (a fresh quote
//!    over nonce and TLS exporter, one extra round trip). Ratios against the pinned peer.
//! 2. Per request: `GET /v1/models` through `cocoon-client proxy` (local HTTP, keep-alive)
//!    versus directly over a verified session; p50 and p99 and their ratios.

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use bytes::Bytes;
use cocoon_client::{connect_attested, open_attested_session, Endpoint, SessionBody};
use cocoon_tests::{binary, start_appliance, Service};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};

const CONNECTIONS: usize = 60;
const REQUESTS: usize = 300;

/// The peer: accept exactly the certificate whose SHA-256 is pinned.
#[derive(Debug)]
struct Pinned {
    sha256: Vec<u8>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if Sha256::digest(end_entity.as_ref()).as_slice() == self.sha256.as_slice() {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(
                "certificate does not match the pin".into(),
            ))
        }
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            m,
            c,
            d,
            &self.provider.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            m,
            c,
            d,
            &self.provider.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn summary(name: &str, mut samples: Vec<Duration>) -> (Duration, Duration, Duration) {
    samples.sort();
    let mean = samples.iter().sum::<Duration>() / samples.len() as u32;
    let (p50, p99) = (percentile(&samples, 0.5), percentile(&samples, 0.99));
    println!("  {name:<46} mean {mean:>9.2?}  p50 {p50:>9.2?}  p99 {p99:>9.2?}");
    (mean, p50, p99)
}

async fn get_models(
    sender: &mut hyper::client::conn::http1::SendRequest<SessionBody>,
    host: &str,
) -> Result<()> {
    sender.ready().await?;
    let request = hyper::Request::get("/v1/models")
        .header("host", host)
        .body(
            Empty::<Bytes>::new()
                .map_err(|never| match never {})
                .boxed(),
        )?;
    let response = sender.send_request(request).await?;
    anyhow::ensure!(response.status().is_success(), "HTTP {}", response.status());
    response.into_body().collect().await?;
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let app = start_appliance(&[])?;
    let endpoint = Endpoint::parse(&format!("https://{}", app.guest_addr))?;
    let options = cocoon_tests::dev_attestor();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let pinned = Arc::new(Pinned {
        sha256: hex::decode(&app.guest_pin)?,
        provider: provider.clone(),
    });
    let plain_config = Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .dangerous()
            .with_custom_certificate_verifier(pinned)
            .with_no_client_auth(),
    );
    let timeout = Duration::from_secs(10);

    println!(
        "new connection to the guest ({} each, simulated TDX evidence, full DCAP check)",
        CONNECTIONS
    );
    let (mut plain, mut cert, mut session) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..CONNECTIONS {
        let started = Instant::now();
        let tcp = tokio::net::TcpStream::connect(&app.guest_addr).await?;
        tokio_rustls::TlsConnector::from(plain_config.clone())
            .connect(ServerName::try_from("127.0.0.1")?, tcp)
            .await
            .context("pinned TLS")?;
        plain.push(started.elapsed());
        let started = Instant::now();
        connect_attested(&endpoint, &options, timeout).await?;
        cert.push(started.elapsed());
        let started = Instant::now();
        open_attested_session(&endpoint, &options, timeout).await?;
        session.push(started.elapsed());
    }
    let (plain_mean, _, _) = summary("TLS 1.3, certificate pinned (peer)", plain);
    let (cert_mean, _, _) = summary("TLS + certificate evidence", cert);
    let (session_mean, _, _) = summary("TLS + certificate + session-bound evidence", session);
    println!(
        "  ratio certificate-verified / pinned TLS      {:.2}",
        cert_mean.as_secs_f64() / plain_mean.as_secs_f64()
    );
    println!(
        "  ratio session-verified / pinned TLS          {:.2}",
        session_mean.as_secs_f64() / plain_mean.as_secs_f64()
    );

    // Per-request latency: direct over a verified session vs through cocoon-client proxy.
    let mut cmd = Command::new(binary("cocoon-client")?);
    cmd.args([
        "proxy",
        "--listen",
        "127.0.0.1:0",
        "--upstream",
        &format!("https://{}", app.guest_addr),
        "--allow-simulated",
        "--accept-any-image",
    ]);
    let (_proxy, rest) = Service::start(
        "cocoon-client",
        cmd,
        "cocoon-client: listening on http://",
        Duration::from_secs(60),
    )?;
    let proxy_addr = rest
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string();

    let mut direct = open_attested_session(&endpoint, &options, timeout).await?;
    let tcp = tokio::net::TcpStream::connect(&proxy_addr).await?;
    let (mut via_proxy, conn) =
        hyper::client::conn::http1::handshake::<_, SessionBody>(TokioIo::new(tcp)).await?;
    tokio::spawn(conn);
    for _ in 0..10 {
        get_models(&mut direct.sender, &app.guest_addr).await?;
        get_models(&mut via_proxy, &proxy_addr).await?;
    }
    let (mut d, mut p) = (Vec::new(), Vec::new());
    for _ in 0..REQUESTS {
        let started = Instant::now();
        get_models(&mut direct.sender, &app.guest_addr).await?;
        d.push(started.elapsed());
        let started = Instant::now();
        get_models(&mut via_proxy, &proxy_addr).await?;
        p.push(started.elapsed());
    }
    println!("GET /v1/models, {REQUESTS} requests each on one keep-alive connection");
    let (_, d50, d99) = summary("direct over a verified session (peer)", d);
    let (_, p50, p99) = summary("through cocoon-client proxy", p);
    println!(
        "  ratio proxy / direct  p50 {:.2}  p99 {:.2}",
        p50.as_secs_f64() / d50.as_secs_f64(),
        p99.as_secs_f64() / d99.as_secs_f64()
    );
    Ok(())
}
