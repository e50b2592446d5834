//! The 64-byte REPORTDATA that binds evidence to a TLS key.
//!
//! The TEE signs whatever 64 bytes the guest puts in REPORTDATA. If those bytes were the
//! raw key, a quote made for one purpose could be replayed for another; so every use gets
//! its own domain tag, and every variable-length input is length-prefixed so that no two
//! different inputs hash the same bytes.
//!
//! Certificate binding (version 1):
//! `SHA-512( "cocoon/ra-tls/cert/v1" || u32be(len(SPKI)) || SPKI || u32be(len(cfg)) || cfg )`
//! where SPKI is the DER SubjectPublicKeyInfo of the certificate and `cfg` the 48-byte
//! SHA-384 digest of the guest's measured configuration. When the payload carries the
//! optional receipt key or GPU evidence digest, each present one is appended as
//! `u32be(len(name)) || name || u32be(len(value)) || value` (names `receipt-key`,
//! `gpu-evidence`, `vtpm-ak`, in that order; `vtpm-ak` is the vTPM attestation key's
//! `TPMT_PUBLIC` when the guest binds it itself), so a certificate without them hashes exactly as above.

use sha2::{Digest, Sha256, Sha512};

/// Domain tag for REPORTDATA that binds an RA-TLS certificate key.
pub const CERT_BINDING_TAG: &[u8] = b"cocoon/ra-tls/cert/v1";

/// Domain tag for REPORTDATA that binds evidence to one TLS session.
pub const SESSION_BINDING_TAG: &[u8] = b"cocoon/ra-tls/session/v1";

/// TLS exporter label for the session binding (RFC 9266), 32 bytes, no context.
pub const TLS_EXPORTER_LABEL: &[u8] = b"EXPORTER-Channel-Binding";

/// The 64 bytes a TEE report carries as its user data.
pub type ReportData = [u8; 64];

/// Optional payload fields that REPORTDATA also binds when they are present.
#[derive(Debug, Default, Clone, Copy)]
pub struct BoundExtras<'a> {
    /// Ed25519 public key that signs usage receipts.
    pub receipt_key: Option<&'a [u8]>,
    /// SHA-384 of the GPU's attestation evidence.
    pub gpu_evidence_digest: Option<&'a [u8]>,
    /// The vTPM attestation key's `TPMT_PUBLIC` ([`crate::vtpm::AkBinding::ReportData`]).
    pub vtpm_ak: Option<&'a [u8]>,
}

/// REPORTDATA that binds a certificate's public key and the measured-config digest.
pub fn certificate_binding(spki_der: &[u8], config_digest: &[u8]) -> ReportData {
    certificate_binding_with(spki_der, config_digest, BoundExtras::default())
}

/// REPORTDATA that binds a certificate's public key, the measured-config digest and the
/// optional payload fields present in `extras`.
pub fn certificate_binding_with(
    spki_der: &[u8],
    config_digest: &[u8],
    extras: BoundExtras<'_>,
) -> ReportData {
    let lp = |hasher: &mut Sha512, part: &[u8]| {
        hasher.update((part.len() as u32).to_be_bytes());
        hasher.update(part);
    };
    let mut hasher = Sha512::new();
    hasher.update(CERT_BINDING_TAG);
    lp(&mut hasher, spki_der);
    lp(&mut hasher, config_digest);
    for (name, value) in [
        (&b"receipt-key"[..], extras.receipt_key),
        (&b"gpu-evidence"[..], extras.gpu_evidence_digest),
        (&b"vtpm-ak"[..], extras.vtpm_ak),
    ] {
        if let Some(value) = value {
            lp(&mut hasher, name);
            lp(&mut hasher, value);
        }
    }
    hasher.finalize().into()
}

/// REPORTDATA for evidence asked for inside a TLS session:
/// `SHA-512("cocoon/ra-tls/session/v1" || lp(SPKI) || lp(cfg) || lp(nonce) || lp(exporter))`
/// with `lp(x) = u32be(len(x)) || x`.
pub fn session_binding(
    spki_der: &[u8],
    config_digest: &[u8],
    nonce: &[u8],
    tls_exporter: &[u8],
) -> ReportData {
    let mut hasher = Sha512::new();
    hasher.update(SESSION_BINDING_TAG);
    for part in [spki_der, config_digest, nonce, tls_exporter] {
        hasher.update((part.len() as u32).to_be_bytes());
        hasher.update(part);
    }
    hasher.finalize().into()
}

/// The SEV-SNP HOST_DATA a guest is launched with: SHA-256 of the measured-config digest (the
/// field is 32 bytes; the digest is 48).
pub fn snp_host_data(config_digest: &[u8]) -> [u8; 32] {
    Sha256::digest(config_digest).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binding_depends_on_every_input_and_on_boundaries() {
        let a = certificate_binding(b"key", b"cfg");
        assert_ne!(a, certificate_binding(b"key2", b"cfg"));
        assert_ne!(a, certificate_binding(b"key", b"cfg2"));
        // Moving bytes across the boundary must change the result (length prefixes).
        assert_ne!(certificate_binding(b"ke", b"ycfg"), a);
        assert_eq!(a, certificate_binding(b"key", b"cfg"));
        // Optional fields change the binding, and which field holds a value matters.
        let key = BoundExtras {
            receipt_key: Some(b"k"),
            gpu_evidence_digest: None,
            vtpm_ak: None,
        };
        let gpu = BoundExtras {
            receipt_key: None,
            gpu_evidence_digest: Some(b"k"),
            vtpm_ak: None,
        };
        let ak = BoundExtras {
            vtpm_ak: Some(b"k"),
            ..BoundExtras::default()
        };
        assert_ne!(
            certificate_binding_with(b"key", b"cfg", ak),
            certificate_binding_with(b"key", b"cfg", gpu)
        );
        let with_key = certificate_binding_with(b"key", b"cfg", key);
        assert_ne!(with_key, a);
        assert_ne!(with_key, certificate_binding_with(b"key", b"cfg", gpu));
    }

    #[test]
    fn session_binding_is_domain_separated_and_covers_nonce_and_exporter() {
        let s = session_binding(b"key", b"cfg", b"nonce", b"exp");
        assert_ne!(&s[..], &certificate_binding(b"key", b"cfg")[..]);
        assert_ne!(s, session_binding(b"key", b"cfg", b"nonce2", b"exp"));
        assert_ne!(s, session_binding(b"key", b"cfg", b"nonce", b"exp2"));
        assert_ne!(s, session_binding(b"key", b"cfg", b"nonceexp", b""));
    }
}
