//! Does the guest pass the operator's attestation policy? Checked exactly as a client
//! checks it, with `cocoon-client`'s attested session: the certificate's evidence, then
//! fresh evidence over our nonce and this TLS session's exporter (so a certificate replayed
//! from another guest fails). The operator's policy is `[attestation]` and `[collateral]`
//! of the config, the same knobs as `cocoon-verify`.
//!
//! Why the host verifies at all, when clients verify for themselves: an operator must not
//! serve (and bill for) a guest that its own clients would refuse, and a misbuilt image or
//! a wrong policy should stop at the operator, loudly, not at every client.

use std::time::Duration;

use cocoon_attestation::Verified;
use cocoon_client::args::{CollateralArgs, PolicyArgs};
use cocoon_client::{open_attested_session, Attestor, Endpoint, SessionVerified};

use crate::error::{Error, Result};
use crate::vm::config::LoadedConfig;

/// The verifier built from the config's policy, and the warning to log when that policy
/// accepts any image.
pub fn operator_attestor(loaded: &LoadedConfig) -> Result<(Attestor, Option<String>)> {
    policy_attestor(&loaded.config.attestation, &loaded.config.collateral)
}

/// The verifier an `[attestation]` + `[collateral]` pair selects, and the warning to log
/// when it accepts any image.
pub fn policy_attestor(
    policy: &PolicyArgs,
    collateral: &CollateralArgs,
) -> Result<(Attestor, Option<String>)> {
    let (attestor, _manifest) = cocoon_client::args::attestor(policy, collateral)?;
    let warning = cocoon_client::args::any_image_warning(attestor.verifier.policy());
    Ok((attestor, warning))
}

/// Verifies the guest at `address` (`host:port`) within `timeout`; returns a summary for
/// the log.
pub async fn verify_guest(address: &str, attestor: &Attestor, timeout: Duration) -> Result<String> {
    Ok(summary(
        &attest(address, attestor, timeout).await?.certificate,
    ))
}

/// Verifies the guest at `address` (`host:port`) within `timeout` as a client would: the
/// certificate's evidence, then fresh evidence bound to this TLS session.
pub async fn attest(
    address: &str,
    attestor: &Attestor,
    timeout: Duration,
) -> Result<SessionVerified> {
    let fail = |detail: String| Error::Attestation {
        address: address.to_string(),
        detail,
    };
    let endpoint =
        Endpoint::parse(&format!("https://{address}")).map_err(|e| fail(e.to_string()))?;
    let session = open_attested_session(&endpoint, attestor, timeout)
        .await
        .map_err(|e| fail(e.to_string()))?;
    Ok(session.verified)
}

/// One line for the log: TEE, measurements and config digest, each shortened.
pub fn summary(verified: &Verified) -> String {
    let measurements = verified
        .measurements
        .iter()
        .map(|(name, value)| format!("{name}={}", short(value)))
        .collect::<Vec<_>>()
        .join(" ");
    format!(
        "{}{} {measurements} config={}",
        verified.tee,
        if verified.simulated {
            " (SIMULATED)"
        } else {
            ""
        },
        verified
            .config_digest
            .as_deref()
            .map(short)
            .unwrap_or("none")
    )
}

/// The first 16 hex digits, for logs.
fn short(hex: &str) -> &str {
    hex.get(..16).unwrap_or(hex)
}
