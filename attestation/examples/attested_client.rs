//! Talking to a Cocoon guest from Rust with attestation, in a few lines: connect, verify
//! the certificate's evidence and fresh session-bound evidence, then send requests over
//! the same verified TLS session.
//!
//! `cargo run -p cocoon-attestation --example attested_client -- https://127.0.0.1:9443 --allow-simulated`

use std::time::Duration;

use cocoon_attestation::client::{open_attested_session, Endpoint};
use cocoon_attestation::verify::VerifyOptions;
use http_body_util::{BodyExt, Empty};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "https://127.0.0.1:9443".into());
    let allow_simulated = std::env::args().any(|a| a == "--allow-simulated");
    let options = VerifyOptions {
        allow_simulated,
        ..Default::default()
    };

    let endpoint = Endpoint::parse(&url)?;
    let mut session = open_attested_session(&endpoint, options, Duration::from_secs(10)).await?;
    let evidence = &session.verified.certificate;
    println!(
        "verified {} (simulated: {}), certificate {}",
        evidence.tee, evidence.simulated, evidence.certificate_sha256
    );

    let request = hyper::Request::get("/v1/models")
        .header("host", endpoint.address())
        .body(Empty::new().map_err(|never| match never {}).boxed())?;
    let response = session.sender.send_request(request).await?;
    let body = response.into_body().collect().await?.to_bytes();
    println!("{}", String::from_utf8_lossy(&body));
    Ok(())
}
