//! The guest's TLS identity: a key made in the TEE and a certificate carrying evidence.

use std::sync::Arc;

use cocoon_attestation::evidence::{EvidencePayload, PAYLOAD_VERSION};
use cocoon_attestation::ratls::{build_certificate, CertificateParams, SubjectAltName, TlsKey};
use cocoon_attestation::report_data::{certificate_binding_with, BoundExtras};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::gpu::GpuAttestation;
use crate::tee::EvidenceProvider;
use crate::Result;

/// Collects the GPUs' evidence for a TLS key (its DER SubjectPublicKeyInfo).
pub type GpuEvidenceSource<'a> = &'a dyn Fn(&[u8]) -> Result<GpuAttestation>;

/// A certificate and the rustls configuration that serves it.
pub struct GuestIdentity {
    pub certificate_der: Vec<u8>,
    /// DER SubjectPublicKeyInfo of the TLS key (what every REPORTDATA binds).
    pub spki_der: Vec<u8>,
    pub server_config: Arc<rustls::ServerConfig>,
    /// The GPUs' evidence the certificate binds (`None`: no GPU).
    pub gpu: Option<GpuAttestation>,
}

impl GuestIdentity {
    /// Makes a fresh key, binds it in evidence from `tee`, and builds a TLS 1.3 server
    /// configuration around the resulting certificate. `event_log` explains the config
    /// register (see [`crate::tee::EvidenceProvider::extend_config_register`]);
    /// `receipt_key` is the usage-receipt key the evidence vouches for; `gpu`, when the
    /// guest has GPUs, collects their evidence for the new key, and its digest is bound.
    pub fn create(
        tee: &dyn EvidenceProvider,
        config_digest: &[u8; 48],
        event_log: &[u8],
        receipt_key: &[u8; 32],
        names: &[SubjectAltName],
        validity: time::Duration,
        gpu: Option<GpuEvidenceSource<'_>>,
    ) -> Result<Self> {
        let key = TlsKey::generate()?;
        // The GPUs sign a nonce derived from this key, so their evidence is fresh for it.
        let gpu = gpu.map(|collect| collect(key.spki_der())).transpose()?;
        let gpu_digest = gpu.as_ref().map(|g| g.digest);
        let extras = BoundExtras {
            receipt_key: Some(receipt_key),
            gpu_evidence_digest: gpu_digest.as_ref().map(|d| &d[..]),
            vtpm_ak: tee.vtpm_attestation_key(),
        };
        let report_data = certificate_binding_with(key.spki_der(), config_digest, extras);
        let evidence = tee.attest(&report_data)?;
        // Check this very evidence the way a verifier will before it goes into the
        // certificate: a guest that clients would refuse should not start.
        crate::tee::self_check(&evidence, &report_data, config_digest, event_log).map_err(|e| {
            crate::Error::Tee(format!(
                "the guest's own evidence does not match its measured config: {e}"
            ))
        })?;
        let payload = EvidencePayload {
            version: PAYLOAD_VERSION,
            kind: tee.kind(),
            evidence: evidence.raw,
            event_log: event_log.to_vec(),
            config_digest: config_digest.to_vec(),
            gpu_evidence_digest: gpu_digest.map(|d| d.to_vec()),
            receipt_key: Some(receipt_key.to_vec()),
            snp_certificates: evidence.certificates.map(|table| table.encode()),
            vtpm: evidence.vtpm,
        };
        // Back-date by a minute so a client whose clock is slightly behind still accepts.
        let now = OffsetDateTime::now_utc();
        let certificate_der = build_certificate(
            &key,
            &CertificateParams {
                common_name: "cocoon-guest",
                subject_alt_names: names,
                not_before: now - time::Duration::minutes(1),
                not_after: now + validity,
                evidence: &payload,
            },
        )?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_no_client_auth()
            .with_single_cert(
                vec![CertificateDer::from(certificate_der.clone())],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.pkcs8_der().to_vec())),
            )?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            certificate_der,
            spki_der: key.spki_der().to_vec(),
            server_config: Arc::new(config),
            gpu,
        })
    }

    /// SHA-256 of the certificate, hex: the pin clients print and compare.
    pub fn certificate_sha256(&self) -> String {
        hex::encode(Sha256::digest(&self.certificate_der))
    }
}

// The tests sign with the simulated backends, which exist only with that feature.
#[cfg(all(test, feature = "simulated"))]
mod tests {
    use super::*;
    use crate::tee::{SimulatedSnpTee, SimulatedTee};
    use cocoon_attestation::event_log::RuntimeEventLog;

    fn create(tee: &dyn EvidenceProvider, digest: &[u8; 48], log: &[u8]) -> Result<GuestIdentity> {
        GuestIdentity::create(
            tee,
            digest,
            log,
            &[7; 32],
            &[SubjectAltName::parse("localhost")],
            time::Duration::hours(1),
            None,
        )
    }

    #[test]
    fn an_identity_is_made_only_over_evidence_that_matches_the_measured_config() {
        let digest = [5u8; 48];
        let log = RuntimeEventLog::config(3, &digest).to_cbor().unwrap();

        // TDX: RTMR3 extended as the log says: accepted; never extended: refused.
        let tee = SimulatedTee::new(false).unwrap();
        let err = create(&tee, &digest, &log).err().expect("unextended RTMR3");
        assert!(err.to_string().contains("RTMR3"), "{err}");
        tee.extend_config_register(&digest).unwrap();
        create(&tee, &digest, &log).unwrap();

        // SEV-SNP: HOST_DATA set for this config: accepted; for another: refused.
        create(&SimulatedSnpTee::new(&digest, false).unwrap(), &digest, &[]).unwrap();
        let other = SimulatedSnpTee::new(&[6u8; 48], false).unwrap();
        let err = create(&other, &digest, &[])
            .err()
            .expect("foreign HOST_DATA");
        assert!(err.to_string().contains("HOST_DATA"), "{err}");
    }
}
