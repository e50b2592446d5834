//! The GPU half of an endpoint check: the evidence a guest's TEE evidence binds, fetched
//! over the attested session (`GET /v1/attestation/gpu`) and verified.
//!
//! The certificate carries only the digest of the GPU evidence; the evidence is fetched
//! over the same TLS session whose key the TEE bound, so a relay cannot substitute
//! another machine's GPU report: it would not hash to the bound digest, and a report
//! for another key would not carry this key's nonce.

use cocoon_attestation::gpu::served::MAX_GPU_DOCUMENT_BYTES;
use cocoon_attestation::gpu::{verify_served_gpu, ServedGpuCheck};
use cocoon_attestation::ratls::parse_certificate;

use crate::session::{AttestedConnection, Attestor, Endpoint};
use cocoon_attestation::Error;

/// Fetches and verifies the GPU evidence of a verified connection whose certificate binds
/// some: the evidence must hash to the bound digest, every device's report carry the
/// nonce of the certificate's key and chain to a trusted GPU root, and, with RIMs in the
/// attestor, every measurement they cover match.
pub async fn check_gpu(
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
