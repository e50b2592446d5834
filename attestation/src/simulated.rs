//! Simulated TDX evidence: the real quote layout, signed by a development key.
//!
//! CI has no TEE, yet must run the verifier code that real evidence goes through. So the
//! simulated backend writes genuine TDX v4 quote bytes (header, TD 1.0 body, ECDSA P-256
//! signature over both) whose attestation key is derived from a public development seed.
//! Anyone can derive that key, which is exactly why verifiers refuse it unless told
//! otherwise: it shows the code path works, never that a TEE exists.
//!
//! The quote header's QE vendor ID is `COCOON-SIMULATED` so the bytes identify
//! themselves even outside our certificate extension.

use p256::ecdsa::signature::{Signer, Verifier};
use p256::ecdsa::{Signature, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256, Sha384};

use crate::report_data::ReportData;
use crate::tdx::quote::{
    CertificationData, QuoteHeader, QuoteSignatureData, TdReportBody, TdxQuote,
    ATT_KEY_TYPE_ECDSA_P256, TEE_TYPE_TDX,
};
use crate::{Error, Result};

/// The public seed of the development evidence key.
pub const DEV_SEED: &[u8] = b"cocoon development evidence: NOT a TEE";

/// QE vendor ID written into simulated quotes.
pub const SIMULATED_QE_VENDOR_ID: [u8; 16] = *b"COCOON-SIMULATED";

/// Certification data type 5 (PCK certificate chain): simulated quotes carry none.
const CERT_TYPE_PCK_CHAIN: u16 = 5;

/// TDX RTMR extension: `RTMR := SHA-384(RTMR || digest)`, digest zero-padded to 48 bytes.
pub fn rtmr_extend(rtmr: &[u8; 48], digest: &[u8]) -> [u8; 48] {
    let mut padded = [0u8; 48];
    let n = digest.len().min(48);
    padded[..n].copy_from_slice(&digest[..n]);
    let mut h = Sha384::new();
    h.update(rtmr);
    h.update(padded);
    h.finalize().into()
}

fn labelled_digest(label: &str) -> [u8; 48] {
    Sha384::digest(format!("cocoon simulated {label}").as_bytes()).into()
}

/// What a simulated TD reports about itself.
#[derive(Debug, Clone)]
pub struct SimulatedTdConfig {
    /// SHA-384 of the measured config, extended into RTMR3.
    pub config_digest: Vec<u8>,
    /// Launch the simulated TD with TD_ATTRIBUTES.DEBUG set (for policy tests).
    pub debug: bool,
}

/// A development "TEE" that signs TDX v4 quotes with a seed-derived key.
pub struct SimulatedTdx {
    key: SigningKey,
}

impl SimulatedTdx {
    /// The development TEE every verifier knows (derived from [`DEV_SEED`]).
    pub fn dev() -> Self {
        Self::from_seed(DEV_SEED)
    }

    /// A simulated TEE with its own key (tests use this to play an impostor).
    pub fn from_seed(seed: &[u8]) -> Self {
        let mut counter = 0u32;
        loop {
            let mut h = Sha256::new();
            h.update(b"cocoon/simulated-tdx/attestation-key");
            h.update(counter.to_be_bytes());
            h.update(seed);
            // A SHA-256 output is a valid P-256 scalar except with negligible probability;
            // the loop makes even that case deterministic instead of a panic.
            if let Ok(key) = SigningKey::from_slice(&h.finalize()) {
                return Self { key };
            }
            counter += 1;
        }
    }

    /// The attestation public key as it appears in a quote (x || y).
    pub fn attestation_key(&self) -> [u8; 64] {
        raw_point(self.key.verifying_key())
    }

    /// A TDX v4 quote over `report_data`.
    pub fn quote(&self, report_data: &ReportData, td: &SimulatedTdConfig) -> Vec<u8> {
        let header = QuoteHeader {
            version: 4,
            attestation_key_type: ATT_KEY_TYPE_ECDSA_P256,
            tee_type: TEE_TYPE_TDX,
            qe_svn: 0,
            pce_svn: 0,
            qe_vendor_id: SIMULATED_QE_VENDOR_ID,
            user_data: [0; 20],
        };
        let td_attributes: u64 = if td.debug { 1 } else { 0 };
        let body = TdReportBody {
            tee_tcb_svn: [0; 16],
            mr_seam: labelled_digest("MRSEAM"),
            mr_signer_seam: [0; 48],
            seam_attributes: [0; 8],
            td_attributes: td_attributes.to_le_bytes(),
            xfam: 0x0006_1ae7u64.to_le_bytes(),
            mr_td: labelled_digest("MRTD"),
            mr_config_id: [0; 48],
            mr_owner: [0; 48],
            mr_owner_config: [0; 48],
            rtmr: [
                labelled_digest("RTMR0"),
                labelled_digest("RTMR1"),
                labelled_digest("RTMR2"),
                rtmr_extend(&[0; 48], &td.config_digest),
            ],
            report_data: *report_data,
            td15: None,
        };
        let signed = TdxQuote::encode_signed_part(&header, &body);
        let signature: Signature = self.key.sign(&signed);
        let quote = TdxQuote {
            header,
            body,
            signature_data: QuoteSignatureData {
                signature: signature.to_bytes().into(),
                attestation_key: self.attestation_key(),
                certification_data: CertificationData {
                    cert_type: CERT_TYPE_PCK_CHAIN,
                    data: Vec::new(),
                },
            },
            signed_bytes: signed,
        };
        quote.to_bytes()
    }
}

fn raw_point(key: &VerifyingKey) -> [u8; 64] {
    let point = key.to_encoded_point(false);
    let mut out = [0u8; 64];
    // An uncompressed SEC1 point is 0x04 || x || y.
    out.copy_from_slice(&point.as_bytes()[1..65]);
    out
}

/// Checks the ECDSA quote signature with the attestation key the quote carries.
///
/// On its own this proves only that whoever holds that key signed the quote; callers
/// must also establish that the key is one they trust (for simulated evidence: the
/// development key; for real quotes: the QE report chain to Intel).
pub fn verify_quote_signature(quote: &TdxQuote) -> Result<()> {
    let mut sec1 = [0u8; 65];
    sec1[0] = 0x04;
    sec1[1..].copy_from_slice(&quote.signature_data.attestation_key);
    let key = VerifyingKey::from_sec1_bytes(&sec1)
        .map_err(|_| Error::BadSignature("attestation key is not a P-256 point".into()))?;
    let signature = Signature::from_slice(&quote.signature_data.signature)
        .map_err(|_| Error::BadSignature("quote signature is not a valid r||s pair".into()))?;
    key.verify(&quote.signed_bytes, &signature)
        .map_err(|_| Error::BadSignature("quote signature does not verify".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> SimulatedTdConfig {
        SimulatedTdConfig {
            config_digest: vec![3; 48],
            debug: false,
        }
    }

    #[test]
    fn simulated_quote_parses_and_verifies() {
        let tee = SimulatedTdx::dev();
        let bytes = tee.quote(&[5; 64], &config());
        let q = TdxQuote::parse(&bytes).unwrap();
        assert_eq!(q.body.report_data, [5; 64]);
        assert_eq!(q.header.qe_vendor_id, SIMULATED_QE_VENDOR_ID);
        assert_eq!(q.signature_data.attestation_key, tee.attestation_key());
        assert_eq!(q.body.rtmr[3], rtmr_extend(&[0; 48], &[3; 48]));
        verify_quote_signature(&q).unwrap();
        assert!(!q.body.debug());
    }

    #[test]
    fn tampering_breaks_the_signature() {
        let bytes = SimulatedTdx::dev().quote(&[5; 64], &config());
        for offset in [10usize, 48 + 136, 568, 631] {
            let mut bad = bytes.clone();
            bad[offset] ^= 1;
            let q = TdxQuote::parse(&bad).unwrap();
            assert!(verify_quote_signature(&q).is_err(), "offset {offset}");
        }
    }

    #[test]
    fn seeds_give_distinct_keys_and_debug_bit_is_set_on_request() {
        assert_ne!(
            SimulatedTdx::dev().attestation_key(),
            SimulatedTdx::from_seed(b"other").attestation_key()
        );
        let mut cfg = config();
        cfg.debug = true;
        let q = TdxQuote::parse(&SimulatedTdx::dev().quote(&[0; 64], &cfg)).unwrap();
        assert!(q.body.debug());
    }
}
