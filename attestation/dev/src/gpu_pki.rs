//! A development GPU device PKI: a seed-derived "device identity" root, an intermediate
//! and a device key that sign SPDM 1.1 MEASUREMENTS responses in the exact binary format
//! of an H100 in confidential-computing mode.
//!
//! CI has no GPU, but the guest's GPU path (checks, evidence for a key-derived nonce, the
//! digest in REPORTDATA, `GET /v1/attestation/gpu`) and the client's check of it must run
//! end to end. The simulated GPU answers with a real H100 report's measurement record and
//! opaque data (so NVIDIA's real RIMs for that driver and VBIOS match it), the caller's
//! nonce, and a signature by this PKI. Everything derives from the public development
//! seed: the evidence proves nothing, the root says so, and verifiers accept it only when
//! told to (`--allow-simulated`).

use p384::ecdsa::signature::Signer;
use p384::ecdsa::{Signature, SigningKey};
use p384::pkcs8::EncodePrivateKey;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyIdMethod, KeyPair,
    KeyUsagePurpose, SerialNumber,
};
use sha2::{Digest, Sha384};

use cocoon_attestation::gpu::spdm::{GpuReport, NONCE_LEN};
use cocoon_attestation::gpu::{GpuEvidence, GpuRoot};
use cocoon_attestation::{Error, Result};

/// The real H100 report whose measurements and opaque data the development GPU reports.
const TEMPLATE_REPORT_HEX: &[u8] =
    include_bytes!("../data/nvtrust2023_h100_attestation_report.hex.txt");

/// Name of the development GPU root, as anchors list it.
pub const DEV_GPU_ROOT_NAME: &str = "Cocoon DEV GPU Device Identity CA (NOT NVIDIA)";

fn crypto(e: impl std::fmt::Display) -> Error {
    Error::Crypto(e.to_string())
}

/// A P-384 key derived from the seed and a label.
fn derive_key(seed: &[u8], label: &str) -> SigningKey {
    let mut counter = 0u32;
    loop {
        let mut h = Sha384::new();
        h.update(b"cocoon/dev-gpu-pki/");
        h.update(label.as_bytes());
        h.update(counter.to_be_bytes());
        h.update(seed);
        if let Ok(key) = SigningKey::from_slice(&h.finalize()) {
            return key;
        }
        counter += 1;
    }
}

fn rcgen_key(key: &SigningKey) -> Result<KeyPair> {
    let der = key.to_pkcs8_der().map_err(crypto)?;
    KeyPair::try_from(der.as_bytes()).map_err(crypto)
}

fn cert_params(cn: &str, ca: bool, serial: u64) -> Result<CertificateParams> {
    let mut p = CertificateParams::new(Vec::<String>::new()).map_err(crypto)?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn.push(
        DnType::OrganizationName,
        "Cocoon development PKI (NOT NVIDIA)",
    );
    p.distinguished_name = dn;
    p.serial_number = Some(SerialNumber::from(serial));
    p.not_before = time::macros::datetime!(2024-01-01 00:00 UTC);
    p.not_after = time::macros::datetime!(2049-12-31 00:00 UTC);
    p.key_identifier_method = KeyIdMethod::Sha256;
    if ca {
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    } else {
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    }
    Ok(p)
}

/// The development GPU PKI: root → intermediate → device.
pub struct DevGpuPki {
    root_der: Vec<u8>,
    chain: Vec<Vec<u8>>,
    device_key: SigningKey,
    template: GpuReport,
}

impl DevGpuPki {
    /// The PKI every verifier can recreate from the public development seed.
    pub fn dev() -> Result<Self> {
        Self::from_seed(crate::DEV_SEED)
    }

    /// A PKI of its own (tests use one to play an impostor GPU).
    pub fn from_seed(seed: &[u8]) -> Result<Self> {
        let root_key = rcgen_key(&derive_key(seed, "root"))?;
        let root = cert_params(DEV_GPU_ROOT_NAME, true, 1)?
            .self_signed(&root_key)
            .map_err(crypto)?;
        let ca_key = rcgen_key(&derive_key(seed, "provisioner"))?;
        let ca = cert_params("Cocoon DEV GH100 Provisioner ICA", true, 2)?
            .signed_by(&ca_key, &root, &root_key)
            .map_err(crypto)?;
        let device_key = derive_key(seed, "device");
        let device = cert_params("Cocoon DEV GH100 device (simulated)", false, 3)?
            .signed_by(&rcgen_key(&device_key)?, &ca, &ca_key)
            .map_err(crypto)?;
        Ok(Self {
            root_der: root.der().to_vec(),
            chain: vec![
                device.der().to_vec(),
                ca.der().to_vec(),
                root.der().to_vec(),
            ],
            device_key,
            template: GpuReport::parse_hex(TEMPLATE_REPORT_HEX)?,
        })
    }

    /// The development root, as a GPU anchor (marked simulated).
    pub fn root(&self) -> GpuRoot {
        GpuRoot {
            name: DEV_GPU_ROOT_NAME,
            der: self.root_der.clone(),
            simulated: true,
        }
    }

    /// The device chain, DER, leaf first, root last (as the driver returns it).
    pub fn chain(&self) -> &[Vec<u8>] {
        &self.chain
    }

    /// The device chain as PEM (NVML's `attestationCertChain` form).
    pub fn chain_pem(&self) -> String {
        self.chain
            .iter()
            .map(|der| cocoon_attestation::ratls::certificate_pem(der))
            .collect()
    }

    /// A report (request ‖ response, binary) for `nonce`, signed by the device key.
    pub fn report(&self, nonce: &[u8; NONCE_LEN]) -> Result<Vec<u8>> {
        let mut report = self.template.clone();
        report.request.nonce = *nonce;
        // The responder's nonce: fresh per request, as a device's is.
        let mut h = Sha384::new();
        h.update(b"cocoon/dev-gpu/responder-nonce");
        h.update(nonce);
        report
            .response
            .nonce
            .copy_from_slice(&h.finalize()[..NONCE_LEN]);
        let signed = report.signed_bytes()?;
        let signature: Signature = self.device_key.sign(&signed);
        report.response.signature = signature.to_bytes().to_vec();
        report.to_bytes()
    }

    /// The evidence a simulated GPU gives for `nonce`.
    pub fn evidence(&self, nonce: &[u8; NONCE_LEN]) -> Result<GpuEvidence> {
        Ok(GpuEvidence {
            report: self.report(nonce)?,
            chain: self.chain.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cocoon_attestation::gpu::{
        gpu_verdict_with_rims, nvidia_device_roots, verify_gpu_evidence,
    };

    const AT: i64 = 1_800_000_000;

    #[test]
    fn dev_gpu_reports_verify_with_the_dev_root_only() {
        let pki = DevGpuPki::dev().unwrap();
        let nonce = [3u8; 32];
        let ev = pki.evidence(&nonce).unwrap();
        let facts = verify_gpu_evidence(&ev, &nonce, AT, &[pki.root()]).unwrap();
        assert_eq!(facts.driver_version.as_deref(), Some("545.00"));
        assert_eq!(facts.root, DEV_GPU_ROOT_NAME);
        // NVIDIA's root does not accept it; another seed's root does not either.
        assert!(verify_gpu_evidence(&ev, &nonce, AT, &nvidia_device_roots()).is_err());
        let other = DevGpuPki::from_seed(b"impostor").unwrap();
        assert!(verify_gpu_evidence(&ev, &nonce, AT, &[other.root()]).is_err());
        // Another nonce, or one flipped byte in the measurements: refused.
        assert!(verify_gpu_evidence(&ev, &[4u8; 32], AT, &[pki.root()]).is_err());
        let mut tampered = ev.clone();
        tampered.report[100] ^= 1;
        assert!(verify_gpu_evidence(&tampered, &nonce, AT, &[pki.root()]).is_err());
    }

    #[test]
    fn dev_gpu_reports_carry_real_measurements_nvidia_rims_cover() {
        let pki = DevGpuPki::dev().unwrap();
        let nonce = [5u8; 32];
        let ev = pki.evidence(&nonce).unwrap();
        let rims = [
            (
                "driver".to_string(),
                include_bytes!("../../tests/fixtures/gpu/nvtrust_driver_rim_test_no_gpu.swidtag")
                    .to_vec(),
            ),
            (
                "vbios".to_string(),
                include_bytes!(
                    "../../tests/fixtures/gpu/nvtrust_vbios_rim_1010_0200_882_96005E0001_test_no_gpu.swidtag"
                )
                .to_vec(),
            ),
        ];
        // At a time inside the RIM signer's validity (as for the real report).
        let verdict = gpu_verdict_with_rims(&ev, &nonce, 1_717_200_000, &[pki.root()], &rims);
        assert!(verdict.verified, "{:?}", verdict.errors);
        let refs = verdict.references.unwrap();
        assert_eq!(refs.matched.len(), 33);
        assert!(refs.mismatches.is_empty());
    }
}
