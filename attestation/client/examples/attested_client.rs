//! Talking to a Cocoon guest from Rust with attestation, in a few lines: connect, verify
//! the certificate's evidence and fresh session-bound evidence, then send requests over
//! the same verified TLS session.
//!
//! `cargo run -p cocoon-client --example attested_client -- https://127.0.0.1:9443 --allow-simulated`

use std::time::Duration;

use cocoon_attestation::{Policy, TrustAnchors, Verifier};
use cocoon_client::{open_attested_session, Attestor, Endpoint};
use http_body_util::{BodyExt, Empty};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "https://127.0.0.1:9443".into());
    // A real client pins the published image with a signed manifest; this example accepts
    // any image so that it runs against `make run`'s development guest.
    let policy = Policy {
        accept_any_image: true,
        ..Default::default()
    };
    let attestor = if std::env::args().any(|a| a == "--allow-simulated") {
        Attestor::offline(cocoon_attestation_dev::verifier(policy)?)
    } else {
        Attestor::offline(Verifier::new(TrustAnchors::vendor(), policy))
    };

    let endpoint = Endpoint::parse(&url)?;
    let mut session = open_attested_session(&endpoint, &attestor, Duration::from_secs(10)).await?;
    let evidence = &session.verified.certificate;
    println!(
        "verified {} (simulated: {}), certificate {}",
        evidence.tee,
        evidence.simulated,
        evidence
            .certificate
            .as_ref()
            .map(|c| c.sha256.as_str())
            .unwrap_or("?")
    );

    let request = hyper::Request::get("/v1/models")
        .header("host", endpoint.address())
        .body(Empty::new().map_err(|never| match never {}).boxed())?;
    let response = session.sender.send_request(request).await?;
    let body = response.into_body().collect().await?.to_bytes();
    println!("{}", String::from_utf8_lossy(&body));
    Ok(())
}
