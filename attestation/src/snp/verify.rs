//! Verification of a SEV-SNP report: ARK → ASK → VCEK/VLEK → report signature, then the
//! VCEK's TCB extensions against REPORTED_TCB.
//!
//! The `sev` crate checks the RSA-PSS certificate chain. It does not check dates, which
//! ARK is trusted, the report bytes as received, or the TCB extensions, so those are
//! checked here.

use p384::ecdsa::signature::Verifier;
use p384::ecdsa::{Signature, VerifyingKey};
use sev::certs::snp::{ca, Certificate, Chain, Verifiable};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::report::{SnpReport, TcbVersion, SIG_ALGO_ECDSA_P384_SHA384};
use crate::{Error, Result};

/// AMD's OID arc for VCEK/VLEK extensions: 1.3.6.1.4.1.3704.1.
const AMD_ARC: &str = "1.3.6.1.4.1.3704.1";

/// A trusted AMD Root Key, by product line.
#[derive(Debug, Clone)]
pub struct TrustedArk {
    pub product: &'static str,
    pub der: Vec<u8>,
    /// True for the development root (simulated evidence).
    pub simulated: bool,
}

/// AMD's production ARKs for Milan, Genoa and Turin, as shipped in the `sev` crate.
pub fn amd_production_arks() -> Vec<TrustedArk> {
    use sev::certs::snp::builtin;
    let mut out = Vec::new();
    for (product, pem) in [
        ("Milan", builtin::milan::ARK),
        ("Genoa", builtin::genoa::ARK),
        ("Turin", builtin::turin::ARK),
    ] {
        if let Ok(cert) = Certificate::from_pem(pem) {
            if let Ok(der) = cert.to_der() {
                out.push(TrustedArk {
                    product,
                    der,
                    simulated: false,
                });
            }
        }
    }
    out
}

/// What a verified report establishes.
#[derive(Debug, Clone)]
pub struct SnpFacts {
    pub report: SnpReport,
    /// Product line of the trusted ARK that anchors the chain.
    pub product: &'static str,
    pub simulated: bool,
    /// TCB the VCEK was issued for (its extensions).
    pub certified_tcb: TcbVersion,
    /// The report was signed by a VLEK (chained through the ASVK) rather than a VCEK;
    /// the report's SIGNING_KEY and the certificate's kind agree.
    pub vlek: bool,
}

impl SnpFacts {
    /// The chip's CHIP_ID; `None` when the report carries none (VLEK-signed, or the guest
    /// asked the firmware to mask it).
    pub fn chip_id(&self) -> Option<[u8; 64]> {
        (!self.vlek && !self.report.chip_id_masked()).then_some(self.report.chip_id)
    }
}

/// What kind of endorsement key a certificate holds, from its subject's common name
/// (AMD names them `SEV-VCEK` and `SEV-VLEK`).
fn endorsement_kind(cert: &X509Certificate<'_>) -> Result<bool> {
    let cn = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .unwrap_or("");
    if cn.starts_with("SEV-VLEK") {
        Ok(true)
    } else if cn.starts_with("SEV-VCEK") {
        Ok(false)
    } else {
        Err(Error::Malformed {
            what: "VCEK/VLEK certificate",
            detail: format!("subject CN '{cn}' names neither a VCEK nor a VLEK"),
        })
    }
}

fn pem_certificates(pem: &[u8]) -> Result<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    for item in x509_parser::pem::Pem::iter_from_buffer(pem) {
        let item = item.map_err(|e| Error::Malformed {
            what: "PEM certificate chain",
            detail: e.to_string(),
        })?;
        out.push(item.contents);
    }
    if out.is_empty() {
        return Err(Error::Malformed {
            what: "PEM certificate chain",
            detail: "no certificates".into(),
        });
    }
    Ok(out)
}

fn x509<'a>(der: &'a [u8], what: &'static str) -> Result<X509Certificate<'a>> {
    X509Certificate::from_der(der)
        .map(|(_, c)| c)
        .map_err(|e| Error::Malformed {
            what,
            detail: e.to_string(),
        })
}

fn extension_integer(cert: &X509Certificate<'_>, oid: &str) -> Option<u8> {
    let ext = cert
        .extensions()
        .iter()
        .find(|e| e.oid.to_id_string() == oid)?;
    let (_, obj) = x509_parser::der_parser::ber::parse_ber_integer(ext.value).ok()?;
    obj.as_u64().ok().and_then(|v| u8::try_from(v).ok())
}

fn extension_bytes<'a>(cert: &'a X509Certificate<'_>, oid: &str) -> Option<&'a [u8]> {
    let ext = cert
        .extensions()
        .iter()
        .find(|e| e.oid.to_id_string() == oid)?;
    // hwID is an OCTET STRING; some issuers store the raw 64 bytes.
    match x509_parser::der_parser::ber::parse_ber_octetstring(ext.value) {
        Ok(([], obj)) => obj.as_slice().ok(),
        _ => Some(ext.value),
    }
}

/// Verifies `report` against `vcek_der` and the `chain_pem` (ASK and ARK, any order) at
/// `now`, trusting only the ARKs in `trusted`.
pub fn verify_report(
    report_bytes: &[u8],
    vcek_der: &[u8],
    chain_pem: &[u8],
    now: i64,
    trusted: &[TrustedArk],
) -> Result<SnpFacts> {
    let report = SnpReport::parse(report_bytes)?;
    if report.signature_algo != SIG_ALGO_ECDSA_P384_SHA384 {
        return Err(Error::Unsupported {
            what: "SNP SIGNATURE_ALGO (expected 1, ECDSA P-384/SHA-384)",
            value: report.signature_algo.to_string(),
        });
    }
    // SIGNING_KEY: 0 = VCEK, 1 = VLEK, 7 = none; the rest are reserved.
    let signing_key = (report.key_info >> 2) & 0b111;
    if signing_key > 1 {
        return Err(Error::Unsupported {
            what: "SNP SIGNING_KEY (expected 0, VCEK, or 1, VLEK)",
            value: signing_key.to_string(),
        });
    }
    let vek_x509 = x509(vcek_der, "VCEK certificate")?;
    let vlek = endorsement_kind(&vek_x509)?;
    if vlek != report.signed_by_vlek() {
        let name = |vlek: bool| if vlek { "VLEK" } else { "VCEK" };
        return Err(Error::Policy {
            rule: "the certificate's kind must match the report's SIGNING_KEY",
            observed: format!("a {} certificate", name(vlek)),
            expected: format!("a {} (SIGNING_KEY = {signing_key})", name(!vlek)),
        });
    }
    // The chain: one self-signed ARK, and the intermediate that issued the VCEK (the
    // ASK) or the VLEK (the ASVK); AMD's and Trustee's bundles may carry both.
    let chain = pem_certificates(chain_pem)?;
    let mut ark_der = None;
    let mut ask_der = None;
    for der in &chain {
        let cert = x509(der, "ASK/ARK certificate")?;
        if cert.subject() == cert.issuer() {
            ark_der = Some(der.clone());
        } else if cert.subject() == vek_x509.issuer() {
            ask_der = Some(der.clone());
        }
    }
    let (ark_der, ask_der) = match (ark_der, ask_der) {
        (Some(a), Some(b)) => (a, b),
        _ => {
            return Err(Error::Malformed {
                what: "ASK/ARK chain",
                detail: format!(
                    "expected one self-signed ARK and the {} that issued the {}",
                    if vlek { "ASVK" } else { "ASK" },
                    if vlek { "VLEK" } else { "VCEK" }
                ),
            })
        }
    };
    let anchor = trusted.iter().find(|t| t.der == ark_der).ok_or_else(|| {
        Error::BadSignature(
            "the chain's ARK is not a trusted AMD root (Milan, Genoa, Turin)".into(),
        )
    })?;
    for (der, name) in [(&ark_der, "ARK"), (&ask_der, "ASK")] {
        crate::unix_time::check_certificate_window(&x509(der, "ASK/ARK certificate")?, name, now)?;
    }
    crate::unix_time::check_certificate_window(&vek_x509, "VCEK", now)?;

    let io = |what: &str| {
        let what = what.to_string();
        move |e: std::io::Error| Error::BadSignature(format!("{what}: {e}"))
    };
    let sev_chain = Chain {
        ca: ca::Chain {
            ark: Certificate::from_der(&ark_der).map_err(io("ARK"))?,
            ask: Certificate::from_der(&ask_der).map_err(io("ASK"))?,
        },
        vek: Certificate::from_der(vcek_der).map_err(io("VCEK"))?,
    };
    (&sev_chain)
        .verify()
        .map_err(io("certificate chain ARK -> ASK -> VCEK"))?;

    // The report signature, over the bytes exactly as received.
    let point = vek_x509.public_key().subject_public_key.data.as_ref();
    let key = VerifyingKey::from_sec1_bytes(point)
        .map_err(|_| Error::BadSignature("the VCEK key is not a P-384 point".into()))?;
    let signature = Signature::from_scalars(report.signature_r, report.signature_s)
        .map_err(|_| Error::BadSignature("the report signature is not a valid (r, s)".into()))?;
    key.verify(&report.signed_bytes, &signature)
        .map_err(|_| Error::BadSignature("the VCEK did not sign this report".into()))?;

    // TCB extensions: the VCEK is issued for one TCB; REPORTED_TCB must be that TCB.
    let ext = |n: &str| extension_integer(&vek_x509, &format!("{AMD_ARC}.3.{n}"));
    let certified_tcb = TcbVersion {
        fmc: ext("9"),
        bootloader: ext("1").ok_or_else(|| missing("blSPL"))?,
        tee: ext("2").ok_or_else(|| missing("teeSPL"))?,
        snp: ext("3").ok_or_else(|| missing("snpSPL"))?,
        microcode: ext("8").ok_or_else(|| missing("ucodeSPL"))?,
    };
    let reported = report.reported_tcb;
    let same = certified_tcb.bootloader == reported.bootloader
        && certified_tcb.tee == reported.tee
        && certified_tcb.snp == reported.snp
        && certified_tcb.microcode == reported.microcode
        && certified_tcb.fmc == reported.fmc;
    if !same {
        return Err(Error::Policy {
            rule: "REPORTED_TCB must equal the TCB in the VCEK's extensions",
            observed: reported.to_string(),
            expected: certified_tcb.to_string(),
        });
    }
    if !report.signed_by_vlek() && !report.chip_id_masked() {
        let hwid =
            extension_bytes(&vek_x509, &format!("{AMD_ARC}.4")).ok_or_else(|| missing("hwID"))?;
        if hwid != report.chip_id {
            return Err(Error::Policy {
                rule: "CHIP_ID must equal the VCEK's hwID",
                observed: hex::encode(report.chip_id),
                expected: hex::encode(hwid),
            });
        }
    }
    Ok(SnpFacts {
        report,
        product: anchor.product,
        simulated: anchor.simulated,
        certified_tcb,
        vlek,
    })
}

/// Checks AMD's KDS certificate revocation list (`/vcek/v1/{product}/crl` or
/// `/vlek/v1/{product}/crl`, DER) against a chain: the CRL must be signed by the chain's
/// ARK (RSA-PSS with SHA-384, as AMD signs), current at `now` (thisUpdate ≤ now ≤
/// nextUpdate), and list none of the certificates the ARK issued (the ASK or ASVK).
/// `chain_pem` is the ASK/ASVK and ARK; `vek_der`, the VCEK or VLEK, is checked too in
/// case its issuer is the CRL's issuer.
pub fn check_snp_crl(crl_der: &[u8], chain_pem: &[u8], vek_der: &[u8], now: i64) -> Result<()> {
    let bad = |detail: String| Error::Malformed {
        what: "AMD KDS CRL",
        detail,
    };
    let (rest, crl) = x509_parser::parse_x509_crl(crl_der).map_err(|e| bad(e.to_string()))?;
    if !rest.is_empty() {
        return Err(bad(format!("{} bytes after the CRL", rest.len())));
    }
    let chain = pem_certificates(chain_pem)?;
    let mut certs = Vec::new();
    for der in chain.iter().map(Vec::as_slice).chain([vek_der]) {
        certs.push(x509(der, "SNP certificate")?);
    }
    let ark = certs
        .iter()
        .find(|c| c.subject() == c.issuer() && c.subject() == crl.issuer())
        .ok_or_else(|| {
            Error::BadSignature(format!(
                "the CRL's issuer ({}) is not the chain's ARK",
                crl.issuer()
            ))
        })?;
    // AMD signs with RSASSA-PSS; the key bits of an RSA SPKI (PSS or not) are PKCS#1.
    let key = ring::signature::UnparsedPublicKey::new(
        &ring::signature::RSA_PSS_2048_8192_SHA384,
        ark.public_key().subject_public_key.data.as_ref(),
    );
    key.verify(
        crl.tbs_cert_list.as_ref(),
        crl.signature_value.data.as_ref(),
    )
    .map_err(|_| Error::BadSignature("the ARK did not sign this CRL (RSA-PSS/SHA-384)".into()))?;
    let this_update = crl.last_update().timestamp();
    let next_update = crl
        .next_update()
        .ok_or_else(|| bad("no nextUpdate".into()))?
        .timestamp();
    if now < this_update || now > next_update {
        return Err(Error::CertificateExpired {
            at: format!("{} (AMD KDS CRL)", crate::unix_time::format_time(now)),
            not_before: crate::unix_time::format_time(this_update),
            not_after: crate::unix_time::format_time(next_update),
        });
    }
    for cert in certs
        .iter()
        .filter(|c| c.issuer() == crl.issuer() && c.subject() != c.issuer())
    {
        if crl
            .iter_revoked_certificates()
            .any(|r| r.raw_serial() == cert.raw_serial())
        {
            return Err(Error::Policy {
                rule: "AMD KDS CRL",
                observed: format!(
                    "{} (serial {}) is revoked",
                    cert.subject(),
                    hex::encode(cert.raw_serial())
                ),
                expected: "no certificate of the chain revoked".into(),
            });
        }
    }
    Ok(())
}

fn missing(name: &str) -> Error {
    Error::Malformed {
        what: "VCEK certificate",
        detail: format!("no {name} extension"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPORT: &[u8] = include_bytes!("../../tests/fixtures/snp/gosev_milan_attestation.bin");
    const VCEK: &[u8] = include_bytes!("../../tests/fixtures/snp/gosev_milan_vcek.der");
    const MILAN: &[u8] = include_bytes!("../../tests/fixtures/snp/amd_ask_ark_milan.pem");
    const GENOA: &[u8] = include_bytes!("../../tests/fixtures/snp/amd_ask_ark_genoa.pem");

    fn vcek_window() -> (i64, i64) {
        let c = x509(VCEK, "vcek").unwrap();
        (
            c.validity().not_before.timestamp(),
            c.validity().not_after.timestamp(),
        )
    }

    fn inside() -> i64 {
        let (from, to) = vcek_window();
        from + (to - from) / 2
    }

    #[test]
    fn real_milan_report_verifies() {
        let facts = verify_report(REPORT, VCEK, MILAN, inside(), &amd_production_arks()).unwrap();
        assert_eq!(facts.product, "Milan");
        assert!(!facts.simulated);
        assert_eq!(facts.certified_tcb, facts.report.reported_tcb);
        assert!(!facts.vlek);
        // The same with Trustee's bundle of ASK, ARK and ASVK: the intermediate is the one
        // that issued the VCEK, not whichever comes last.
        const WITH_ASVK: &[u8] =
            include_bytes!("../../tests/fixtures/snp/trustee_milan_ask_ark_asvk.pem");
        verify_report(REPORT, VCEK, WITH_ASVK, inside(), &amd_production_arks()).unwrap();
    }

    #[test]
    fn tampering_and_wrong_chains_fail() {
        let arks = amd_production_arks();
        // Any flipped byte in the signed part breaks the signature.
        for offset in [0x50usize, 0x90, 0x180, 0x29f] {
            let mut bad = REPORT.to_vec();
            bad[offset] ^= 0x01;
            let err = verify_report(&bad, VCEK, MILAN, inside(), &arks).unwrap_err();
            assert!(
                matches!(err, Error::BadSignature(_) | Error::Policy { .. }),
                "{offset:#x}: {err}"
            );
        }
        // A flipped signature byte.
        let mut bad = REPORT.to_vec();
        bad[0x2A0] ^= 0x01;
        assert!(verify_report(&bad, VCEK, MILAN, inside(), &arks).is_err());
        // The Genoa chain did not issue this VCEK.
        assert!(verify_report(REPORT, VCEK, GENOA, inside(), &arks).is_err());
        // A trust list without Milan.
        let no_milan: Vec<_> = arks
            .iter()
            .filter(|a| a.product != "Milan")
            .cloned()
            .collect();
        let err = verify_report(REPORT, VCEK, MILAN, inside(), &no_milan).unwrap_err();
        assert!(err.to_string().contains("not a trusted AMD root"), "{err}");
    }

    #[test]
    fn outside_the_vcek_window_fails() {
        let (from, to) = vcek_window();
        for t in [from - 1, to + 1] {
            let err = verify_report(REPORT, VCEK, MILAN, t, &amd_production_arks()).unwrap_err();
            assert!(matches!(err, Error::CertificateExpired { .. }), "{err}");
        }
    }
}
