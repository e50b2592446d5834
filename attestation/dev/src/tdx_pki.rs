//! A development DCAP PKI: a seed-derived "root CA", PCK chain, TCB signing key and
//! attestation key that produce TDX v4 quotes and collateral in Intel's real formats.
//!
//! CI has no TDX machine, but must run the verification that real quotes go through. So
//! the simulated TEE signs real-format quotes with this PKI, and a verifier that has been
//! told to accept the development root runs the full DCAP path on them (`dcap-qvl`: CRLs,
//! TCB info and QE identity signatures, PCK chain, QE report binding, quote signature,
//! TCB matching). Everything is derived from a public seed, so the evidence proves
//! nothing; the root's name says so, and verifiers accept it only when told to.
//!
//! Fidelity: the parts that describe a platform (the PCK certificate's SGX extension with
//! its FMSPC and SVNs, the QE report's identity fields, the TDX module fields of the TD
//! report, the TCB info and QE identity documents) are taken from a real, public quote
//! and its collateral (dcap-qvl's sample, see `tests/fixtures/README.md`), re-signed by
//! the development keys and re-dated to the verification time. Only the keys, the TD's
//! own measurements and REPORTDATA are ours.

use p256::ecdsa::signature::Signer;
use p256::ecdsa::{Signature, SigningKey};
use p256::pkcs8::EncodePrivateKey;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, CustomExtension,
    DistinguishedName, DnType, IsCa, KeyIdMethod, KeyPair, KeyUsagePurpose, SerialNumber,
};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use cocoon_attestation::report_data::ReportData;
use cocoon_attestation::tdx::dcap::TdxCollateral;
use cocoon_attestation::tdx::quote::{
    CertificationData, QuoteHeader, QuoteSignatureData, TdReportBody, TdxQuote,
    ATT_KEY_TYPE_ECDSA_P256, TEE_TYPE_TDX,
};
use cocoon_attestation::{Error, Result};

/// The real quote and collateral whose platform description the dev PKI re-signs.
const TEMPLATE_QUOTE: &[u8] = include_bytes!("../data/dcapqvl_tdx_quote_v4.bin");
const TEMPLATE_COLLATERAL: &[u8] = include_bytes!("../data/dcapqvl_tdx_quote_v4.collateral.json");

/// Intel's QE vendor ID (DCAP verifiers accept no other).
pub const INTEL_QE_VENDOR_ID: [u8; 16] = [
    0x93, 0x9a, 0x72, 0x33, 0xf7, 0x9c, 0x4c, 0xa9, 0x94, 0x0a, 0x0d, 0xb3, 0x95, 0x7f, 0x06, 0x07,
];
/// OID of Intel's SGX extension in PCK certificates.
const SGX_EXTENSION_OID: &[u64] = &[1, 2, 840, 113741, 1, 13, 1];
/// TD_ATTRIBUTES.SEPT_VE_DISABLE (bit 28): DCAP verifiers require it.
const SEPT_VE_DISABLE: u64 = 1 << 28;
/// Offset of REPORTDATA inside an SGX REPORT_BODY (the QE report).
const QE_REPORT_DATA_OFFSET: usize = 320;
const QE_REPORT_LEN: usize = 384;

fn crypto(e: impl std::fmt::Display) -> Error {
    Error::Crypto(e.to_string())
}

/// A P-256 key derived from the seed and a label.
fn derive_key(seed: &[u8], label: &str) -> SigningKey {
    let mut counter = 0u32;
    loop {
        let mut h = Sha256::new();
        h.update(b"cocoon/dev-pki/");
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

fn name(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn.push(
        DnType::OrganizationName,
        "Cocoon development PKI (NOT Intel)",
    );
    dn
}

/// Serial number of the development PCK certificate.
const PCK_LEAF_SERIAL: u64 = 3;

fn cert_params(cn: &str, ca: bool, serial: u64) -> Result<CertificateParams> {
    let mut p = CertificateParams::new(Vec::<String>::new()).map_err(crypto)?;
    p.distinguished_name = name(cn);
    p.serial_number = Some(SerialNumber::from(serial));
    p.not_before = time::macros::datetime!(2024-01-01 00:00 UTC);
    p.not_after = time::macros::datetime!(2049-12-31 00:00 UTC);
    p.key_identifier_method = KeyIdMethod::Sha256;
    if ca {
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    } else {
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::ContentCommitment,
        ];
    }
    Ok(p)
}

fn pem(der: &[u8]) -> String {
    cocoon_attestation::ratls::certificate_pem(der)
}

/// The pieces of the template quote the dev PKI reuses.
struct Template {
    quote: TdxQuote,
    qe_report: [u8; QE_REPORT_LEN],
    qe_auth_data: Vec<u8>,
    pck_sgx_extension: Vec<u8>,
    collateral: TdxCollateral,
}

fn template() -> Result<Template> {
    let quote = TdxQuote::parse(TEMPLATE_QUOTE)?;
    let cd = &quote.signature_data.certification_data.data;
    let malformed = |detail: &str| Error::Malformed {
        what: "template quote",
        detail: detail.into(),
    };
    if cd.len() < QE_REPORT_LEN + 64 + 2 {
        return Err(malformed("short QE certification data"));
    }
    let mut qe_report = [0u8; QE_REPORT_LEN];
    qe_report.copy_from_slice(&cd[..QE_REPORT_LEN]);
    let mut at = QE_REPORT_LEN + 64;
    let auth_len = u16::from_le_bytes([cd[at], cd[at + 1]]) as usize;
    at += 2;
    let qe_auth_data = cd
        .get(at..at + auth_len)
        .ok_or_else(|| malformed("auth data"))?
        .to_vec();
    at += auth_len + 2 + 4;
    let chain = cd.get(at..).ok_or_else(|| malformed("PCK chain"))?;
    let (_, leaf_pem) =
        x509_parser::pem::parse_x509_pem(chain).map_err(|_| malformed("PCK leaf PEM"))?;
    let leaf = leaf_pem.parse_x509().map_err(|_| malformed("PCK leaf"))?;
    let pck_sgx_extension = leaf
        .extensions()
        .iter()
        .find(|e| e.oid.to_id_string() == "1.2.840.113741.1.13.1")
        .map(|e| e.value.to_vec())
        .ok_or_else(|| malformed("no SGX extension in the PCK leaf"))?;
    let collateral = cocoon_attestation::tdx::dcap::collateral_from_json(TEMPLATE_COLLATERAL)?;
    Ok(Template {
        quote,
        qe_report,
        qe_auth_data,
        pck_sgx_extension,
        collateral,
    })
}

/// What the simulated TD reports about itself.
#[derive(Debug, Clone)]
pub struct DevTdMeasurements {
    pub mr_td: [u8; 48],
    pub rtmr: [[u8; 48]; 4],
    /// Set TD_ATTRIBUTES.DEBUG (for testing that verifiers refuse it).
    pub debug: bool,
}

/// What a host chooses about a TD besides its measurements (see [`DevPki::quote_with`]).
#[derive(Debug, Clone)]
pub struct DevQuoteOptions {
    /// Quote format version: 4, or 5 (TD 1.0 body behind v5's body descriptor).
    pub version: u16,
    /// TD_ATTRIBUTES; default SEPT_VE_DISABLE, plus DEBUG when the TD asks for it.
    pub td_attributes: Option<u64>,
    /// XFAM; default the template quote's.
    pub xfam: Option<u64>,
    pub mr_config_id: [u8; 48],
    pub mr_owner: [u8; 48],
    pub mr_owner_config: [u8; 48],
}

impl Default for DevQuoteOptions {
    fn default() -> Self {
        Self {
            version: 4,
            td_attributes: None,
            xfam: None,
            mr_config_id: [0; 48],
            mr_owner: [0; 48],
            mr_owner_config: [0; 48],
        }
    }
}

/// TD_ATTRIBUTES the dev PKI sets by default (SEPT_VE_DISABLE).
pub const DEV_TD_ATTRIBUTES: u64 = SEPT_VE_DISABLE;

/// The development DCAP PKI.
pub struct DevPki {
    root_key: KeyPair,
    root: rcgen::Certificate,
    pck_ca_key: KeyPair,
    pck_ca: rcgen::Certificate,
    pck_leaf_signer: SigningKey,
    pck_leaf: rcgen::Certificate,
    tcb_signer: SigningKey,
    tcb_cert: rcgen::Certificate,
    attestation_key: SigningKey,
    template: Template,
}

impl DevPki {
    /// The PKI every verifier can recreate from the public development seed.
    pub fn dev() -> Result<Self> {
        Self::from_seed(crate::DEV_SEED)
    }

    /// A PKI of its own (tests use one to play an impostor with another root).
    pub fn from_seed(seed: &[u8]) -> Result<Self> {
        let template = template()?;
        let root_key = rcgen_key(&derive_key(seed, "root"))?;
        let root = cert_params("Cocoon DEV SGX Root CA (NOT INTEL)", true, 1)?
            .self_signed(&root_key)
            .map_err(crypto)?;
        let pck_ca_key = rcgen_key(&derive_key(seed, "pck-ca"))?;
        let pck_ca = cert_params("Cocoon DEV SGX PCK Platform CA", true, 2)?
            .signed_by(&pck_ca_key, &root, &root_key)
            .map_err(crypto)?;
        let pck_leaf_signer = derive_key(seed, "pck-leaf");
        let mut leaf_params =
            cert_params("Cocoon DEV SGX PCK Certificate", false, PCK_LEAF_SERIAL)?;
        leaf_params.custom_extensions = vec![CustomExtension::from_oid_content(
            SGX_EXTENSION_OID,
            template.pck_sgx_extension.clone(),
        )];
        let pck_leaf = leaf_params
            .signed_by(&rcgen_key(&pck_leaf_signer)?, &pck_ca, &pck_ca_key)
            .map_err(crypto)?;
        let tcb_signer = derive_key(seed, "tcb-signing");
        let tcb_cert = cert_params("Cocoon DEV SGX TCB Signing", false, 4)?
            .signed_by(&rcgen_key(&tcb_signer)?, &root, &root_key)
            .map_err(crypto)?;
        Ok(Self {
            root_key,
            root,
            pck_ca_key,
            pck_ca,
            pck_leaf_signer,
            pck_leaf,
            tcb_signer,
            tcb_cert,
            attestation_key: derive_key(seed, "attestation-key"),
            template,
        })
    }

    /// DER of the development root CA: the trust anchor a verifier must be given.
    pub fn root_der(&self) -> Vec<u8> {
        self.root.der().to_vec()
    }

    /// A TDX v4 quote over `report_data` in Intel's format, signed through this PKI.
    pub fn quote(&self, report_data: &ReportData, td: &DevTdMeasurements) -> Result<Vec<u8>> {
        self.quote_with(report_data, td, &DevQuoteOptions::default())
    }

    /// A quote with the fields a host chooses set as `options` says (version 4 or 5,
    /// TD_ATTRIBUTES, XFAM, the owner registers), so tests can play a hostile host.
    pub fn quote_with(
        &self,
        report_data: &ReportData,
        td: &DevTdMeasurements,
        options: &DevQuoteOptions,
    ) -> Result<Vec<u8>> {
        let t = &self.template.quote;
        if options.version != 4 && options.version != 5 {
            return Err(Error::Unsupported {
                what: "dev quote version (4 or 5)",
                value: options.version.to_string(),
            });
        }
        let header = QuoteHeader {
            version: options.version,
            attestation_key_type: ATT_KEY_TYPE_ECDSA_P256,
            tee_type: TEE_TYPE_TDX,
            qe_svn: t.header.qe_svn,
            pce_svn: t.header.pce_svn,
            qe_vendor_id: INTEL_QE_VENDOR_ID,
            user_data: t.header.user_data,
        };
        let td_attributes = options
            .td_attributes
            .unwrap_or(SEPT_VE_DISABLE | u64::from(td.debug));
        let body = TdReportBody {
            tee_tcb_svn: t.body.tee_tcb_svn,
            mr_seam: t.body.mr_seam,
            mr_signer_seam: t.body.mr_signer_seam,
            seam_attributes: t.body.seam_attributes,
            td_attributes: td_attributes.to_le_bytes(),
            xfam: options.xfam.map_or(t.body.xfam, u64::to_le_bytes),
            mr_td: td.mr_td,
            mr_config_id: options.mr_config_id,
            mr_owner: options.mr_owner,
            mr_owner_config: options.mr_owner_config,
            rtmr: td.rtmr,
            report_data: *report_data,
            td15: None,
        };
        let signed = TdxQuote::encode_signed_part(&header, &body);
        let signature: Signature = self.attestation_key.sign(&signed);
        let attestation_key = raw_point(&self.attestation_key);

        // QE report: the template's identity, REPORTDATA = SHA-256(att key || auth data).
        let mut qe_report = self.template.qe_report;
        let auth = &self.template.qe_auth_data;
        let mut h = Sha256::new();
        h.update(attestation_key);
        h.update(auth);
        qe_report[QE_REPORT_DATA_OFFSET..QE_REPORT_DATA_OFFSET + 32].copy_from_slice(&h.finalize());
        qe_report[QE_REPORT_DATA_OFFSET + 32..QE_REPORT_DATA_OFFSET + 64].fill(0);
        let qe_signature: Signature = self.pck_leaf_signer.sign(&qe_report);
        let chain = format!(
            "{}{}{}",
            pem(self.pck_leaf.der()),
            pem(self.pck_ca.der()),
            pem(self.root.der())
        );
        let mut cert_data = Vec::new();
        cert_data.extend_from_slice(&qe_report);
        cert_data.extend_from_slice(&qe_signature.to_bytes());
        cert_data.extend_from_slice(&(auth.len() as u16).to_le_bytes());
        cert_data.extend_from_slice(auth);
        cert_data.extend_from_slice(&5u16.to_le_bytes());
        cert_data.extend_from_slice(&(chain.len() as u32).to_le_bytes());
        cert_data.extend_from_slice(chain.as_bytes());
        let quote = TdxQuote {
            header,
            body,
            signature_data: QuoteSignatureData {
                signature: signature.to_bytes().into(),
                attestation_key,
                certification_data: CertificationData {
                    cert_type: 6,
                    data: cert_data,
                },
            },
            signed_bytes: signed,
        };
        Ok(quote.to_bytes())
    }

    /// Collateral valid from a day before `now` to 30 days after it: the template's TCB
    /// info and QE identity re-dated and re-signed, and fresh empty CRLs.
    pub fn collateral(&self, now: i64) -> Result<TdxCollateral> {
        self.collateral_with(now, false, &|_| {})
    }

    /// Like [`Self::collateral`], with the PCK certificate listed in the PCK CRL (for
    /// testing that a revoked platform is refused).
    pub fn collateral_revoking_pck(&self, now: i64) -> Result<TdxCollateral> {
        self.collateral_with(now, true, &|_| {})
    }

    /// Like [`Self::collateral`], with the TCB info JSON edited by `edit` before it is
    /// signed (tests use it to serve unusual but correctly signed collateral).
    pub fn collateral_with_tcb_info(
        &self,
        now: i64,
        edit: impl Fn(&mut serde_json::Value),
    ) -> Result<TdxCollateral> {
        self.collateral_with(now, false, &edit)
    }

    fn collateral_with(
        &self,
        now: i64,
        revoke_pck: bool,
        edit: &dyn Fn(&mut serde_json::Value),
    ) -> Result<TdxCollateral> {
        let now = OffsetDateTime::from_unix_timestamp(now).map_err(crypto)?;
        let issue = now - time::Duration::days(1);
        let next = now + time::Duration::days(30);
        let fmt =
            |t: OffsetDateTime| cocoon_attestation::unix_time::format_time(t.unix_timestamp());
        let redate = |json: &str, edit: &dyn Fn(&mut serde_json::Value)| -> Result<String> {
            let mut value: serde_json::Value =
                serde_json::from_str(json).map_err(|e| Error::Malformed {
                    what: "template collateral",
                    detail: e.to_string(),
                })?;
            value["issueDate"] = fmt(issue).into();
            value["nextUpdate"] = fmt(next).into();
            edit(&mut value);
            Ok(value.to_string())
        };
        let tcb_info = redate(&self.template.collateral.tcb_info, edit)?;
        let qe_identity = redate(&self.template.collateral.qe_identity, &|_| {})?;
        let sign = |text: &str| -> Vec<u8> {
            let s: Signature = self.tcb_signer.sign(text.as_bytes());
            s.to_bytes().to_vec()
        };
        let crl =
            |issuer: &rcgen::Certificate, key: &KeyPair, revoked: &[u64]| -> Result<Vec<u8>> {
                CertificateRevocationListParams {
                    this_update: issue,
                    next_update: next,
                    crl_number: SerialNumber::from(1u64),
                    issuing_distribution_point: None,
                    revoked_certs: revoked
                        .iter()
                        .map(|serial| rcgen::RevokedCertParams {
                            serial_number: SerialNumber::from(*serial),
                            revocation_time: issue,
                            reason_code: Some(rcgen::RevocationReason::KeyCompromise),
                            invalidity_date: None,
                        })
                        .collect(),
                    key_identifier_method: KeyIdMethod::Sha256,
                }
                .signed_by(issuer, key)
                .map(|c| c.der().to_vec())
                .map_err(crypto)
            };
        let tcb_chain = format!("{}{}", pem(self.tcb_cert.der()), pem(self.root.der()));
        Ok(TdxCollateral {
            pck_crl_issuer_chain: format!("{}{}", pem(self.pck_ca.der()), pem(self.root.der())),
            root_ca_crl: crl(&self.root, &self.root_key, &[])?,
            pck_crl: crl(
                &self.pck_ca,
                &self.pck_ca_key,
                if revoke_pck { &[PCK_LEAF_SERIAL] } else { &[] },
            )?,
            tcb_info_issuer_chain: tcb_chain.clone(),
            tcb_info_signature: sign(&tcb_info),
            tcb_info,
            qe_identity_issuer_chain: tcb_chain,
            qe_identity_signature: sign(&qe_identity),
            qe_identity,
            pck_certificate_chain: None,
        })
    }
}

fn raw_point(key: &SigningKey) -> [u8; 64] {
    let point = key.verifying_key().to_encoded_point(false);
    let mut out = [0u8; 64];
    out.copy_from_slice(&point.as_bytes()[1..65]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use cocoon_attestation::tdx::dcap::{intel_sgx_root_ca, verify_quote, TdxRoot};

    const NOW: i64 = 1_800_000_000;

    fn td(debug: bool) -> DevTdMeasurements {
        DevTdMeasurements {
            mr_td: [1; 48],
            rtmr: [[2; 48], [3; 48], [4; 48], [5; 48]],
            debug,
        }
    }

    #[test]
    fn dev_quote_passes_full_dcap_verification_with_the_dev_root_only() {
        let pki = DevPki::dev().unwrap();
        let quote = pki.quote(&[7; 64], &td(false)).unwrap();
        let collateral = pki.collateral(NOW).unwrap();
        let dev_root = TdxRoot {
            der: pki.root_der(),
            simulated: true,
        };
        let facts = verify_quote(&quote, &collateral, NOW, &dev_root).unwrap();
        assert_eq!(facts.tcb_status, "UpToDate");
        assert!(facts.simulated);
        assert_eq!(facts.quote.body.report_data, [7; 64]);
        assert_eq!(facts.quote.body.mr_td, [1; 48]);
        // The same bytes fail against Intel's root.
        let intel = TdxRoot {
            der: intel_sgx_root_ca(),
            simulated: false,
        };
        assert!(verify_quote(&quote, &collateral, NOW, &intel).is_err());
    }

    #[test]
    fn dev_quote_fails_when_tampered_expired_or_from_another_pki() {
        let pki = DevPki::dev().unwrap();
        let quote = pki.quote(&[7; 64], &td(false)).unwrap();
        let collateral = pki.collateral(NOW).unwrap();
        let root = TdxRoot {
            der: pki.root_der(),
            simulated: true,
        };
        let mut bad = quote.clone();
        bad[568] ^= 1; // REPORTDATA
        assert!(verify_quote(&bad, &collateral, NOW, &root).is_err());
        // Collateral made for another time: outside its window.
        assert!(verify_quote(&quote, &collateral, NOW + 60 * 86_400, &root).is_err());
        // An impostor PKI's quote does not chain to the dev root.
        let other = DevPki::from_seed(b"impostor").unwrap();
        let forged = other.quote(&[7; 64], &td(false)).unwrap();
        assert!(verify_quote(&forged, &collateral, NOW, &root).is_err());
        // Debug TDs verify cryptographically; the policy refuses them.
        let dbg = pki.quote(&[7; 64], &td(true)).unwrap();
        assert!(verify_quote(&dbg, &collateral, NOW, &root)
            .unwrap()
            .quote
            .body
            .debug());
    }

    fn root_spki(pki: &DevPki) -> Vec<u8> {
        let der = pki.root_der();
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        cert.tbs_certificate.subject_pki.raw.to_vec()
    }

    #[test]
    fn keys_are_deterministic_per_seed_and_instances_interoperate() {
        // Certificate signatures use random nonces, the keys do not: a verifier that
        // recreates the PKI from the seed trusts what the guest's instance signed.
        let guest = DevPki::dev().unwrap();
        let verifier = DevPki::dev().unwrap();
        assert_eq!(root_spki(&guest), root_spki(&verifier));
        assert_ne!(
            root_spki(&guest),
            root_spki(&DevPki::from_seed(b"x").unwrap())
        );
        let quote = guest.quote(&[9; 64], &td(false)).unwrap();
        let root = TdxRoot {
            der: verifier.root_der(),
            simulated: true,
        };
        verify_quote(&quote, &verifier.collateral(NOW).unwrap(), NOW, &root).unwrap();
    }
}
