//! Full DCAP verification of TDX quotes, by the `dcap-qvl` crate, wrapped.
//!
//! `dcap-qvl` checks the PCK chain to the root we hand it, both CRLs, the TCB info and QE
//! identity signatures and chains, the QE report and its binding to the attestation key,
//! the quote signature, and matches the TCB level. Its TCB status and advisories come
//! back as facts; whether they are acceptable is our [`crate::policy::Policy`]'s call,
//! as is debug (we let `dcap-qvl` pass debug TDs so the policy can name the rule).
//!
//! The facts come from what `dcap-qvl` verified (its parsed report body, the PPID and
//! FMSPC of the PCK certificate it checked, the TCB evaluation data number of the
//! collateral it matched), not from a second reading of the bytes; our own parse must
//! agree with it, or the quote is refused.

use dcap_qvl::policy::QuoteClaims;
use dcap_qvl::verify::QuoteVerifier;
pub use dcap_qvl::QuoteCollateralV3 as TdxCollateral;

use super::quote::{Td15Extension, TdReportBody, TdxQuote};
use crate::{Error, Result};

/// The Intel SGX Root CA, the DCAP trust anchor (DER, from Intel's published PEM).
pub fn intel_sgx_root_ca() -> Vec<u8> {
    const PEM: &[u8] = include_bytes!("intel_sgx_root_ca.pem");
    x509_parser::pem::parse_x509_pem(PEM)
        .map(|(_, pem)| pem.contents)
        .unwrap_or_default()
}

/// A DCAP trust anchor.
#[derive(Debug, Clone)]
pub struct TdxRoot {
    pub der: Vec<u8>,
    /// True for the development root (simulated evidence).
    pub simulated: bool,
}

/// What a verified quote establishes.
#[derive(Debug, Clone)]
pub struct TdxFacts {
    pub quote: TdxQuote,
    /// Intel's TCB status name (`UpToDate`, `OutOfDate`, `SWHardeningNeeded`, …).
    pub tcb_status: String,
    pub advisory_ids: Vec<String>,
    /// The `tcbEvaluationDataNumber` of the collateral the TCB status came from (the
    /// lower of the TCB info's and the QE identity's).
    pub tcb_eval_data_number: u32,
    /// The platform's PPID, from the SGX extension of the PCK certificate (16 bytes).
    pub ppid: Vec<u8>,
    /// The platform's FMSPC, from the PCK certificate.
    pub fmspc: [u8; 6],
    pub simulated: bool,
}

/// The PCK certificate chain a quote carries (PEM, leaf first), read once for what the
/// verifier needs before DCAP: the root it ends at and the platform's FMSPC.
pub struct QuotePckChain {
    pem: Vec<u8>,
}

fn pck_malformed(detail: String) -> Error {
    Error::Malformed {
        what: "TDX quote PCK certificate",
        detail,
    }
}

impl QuotePckChain {
    pub fn of(raw: &[u8]) -> Result<Self> {
        let quote =
            dcap_qvl::quote::Quote::parse(raw).map_err(|e| pck_malformed(format!("{e:#}")))?;
        let pem = quote
            .raw_cert_chain()
            .map_err(|e| pck_malformed(format!("{e:#}")))?
            .to_vec();
        Ok(Self { pem })
    }

    /// The root certificate (DER) the chain ends at, when the chain carries it.
    pub fn root_der(&self) -> Option<Vec<u8>> {
        x509_parser::pem::Pem::iter_from_buffer(&self.pem)
            .filter_map(|p| p.ok())
            .last()
            .map(|p| p.contents)
    }

    /// The platform's FMSPC (from the PCK certificate): the key its collateral is found by.
    pub fn fmspc(&self) -> Result<[u8; 6]> {
        dcap_qvl::intel::parse_pck_extension_from_pem(&self.pem)
            .map(|ext| ext.fmspc)
            .map_err(|e| pck_malformed(format!("{e:#}")))
    }
}

/// `dcap-qvl`'s policy hook, accepting everything: our [`crate::policy::Policy`] judges the
/// claims afterwards and names each rule.
struct ClaimsOnly;

impl dcap_qvl::policy::Policy for ClaimsOnly {
    fn validate(&self, _: &QuoteClaims) -> anyhow::Result<()> {
        Ok(())
    }
}

/// The TD report body as `dcap-qvl` decoded it.
fn body_from_dcap(report: &dcap_qvl::quote::Report) -> Result<TdReportBody> {
    let td10 = report.as_td10().ok_or_else(|| Error::Unsupported {
        what: "quote body (expected a TD report)",
        value: "SGX enclave report".into(),
    })?;
    Ok(TdReportBody {
        tee_tcb_svn: td10.tee_tcb_svn,
        mr_seam: td10.mr_seam,
        mr_signer_seam: td10.mr_signer_seam,
        seam_attributes: td10.seam_attributes,
        td_attributes: td10.td_attributes,
        xfam: td10.xfam,
        mr_td: td10.mr_td,
        mr_config_id: td10.mr_config_id,
        mr_owner: td10.mr_owner,
        mr_owner_config: td10.mr_owner_config,
        rtmr: [td10.rt_mr0, td10.rt_mr1, td10.rt_mr2, td10.rt_mr3],
        report_data: td10.report_data,
        td15: report.as_td15().map(|td15| Td15Extension {
            tee_tcb_svn2: td15.tee_tcb_svn2,
            mr_service_td: td15.mr_service_td,
        }),
    })
}

/// Reads a collateral bundle (dcap-qvl's JSON: PEM chains, hex CRLs and signatures).
pub fn collateral_from_json(bytes: &[u8]) -> Result<TdxCollateral> {
    serde_json::from_slice(bytes).map_err(|e| Error::Malformed {
        what: "TDX collateral JSON",
        detail: e.to_string(),
    })
}

/// Verifies `raw` at `now` (Unix seconds) against `collateral`, trusting `root`.
pub fn verify_quote(
    raw: &[u8],
    collateral: &TdxCollateral,
    now: i64,
    root: &TdxRoot,
) -> Result<TdxFacts> {
    let mut quote = TdxQuote::parse(raw)?;
    let now = u64::try_from(now).map_err(|_| Error::Unsupported {
        what: "verification time",
        value: now.to_string(),
    })?;
    let claims = QuoteVerifier::new(root.der.clone())
        .allow_debug(true)
        .verify_with_policy(raw, collateral, now, &ClaimsOnly)
        .map_err(|e| Error::Dcap(format!("{e:#}")))?;
    let body = body_from_dcap(&claims.report)?;
    if body != quote.body || claims.header.version != quote.header.version {
        return Err(Error::Malformed {
            what: "TDX quote",
            detail: "dcap-qvl and this crate read the quote body differently".into(),
        });
    }
    quote.body = body;
    let pck = claims.platform.pck;
    Ok(TdxFacts {
        quote,
        tcb_status: claims.tcb.status.to_string(),
        advisory_ids: claims.tcb.advisory_ids,
        tcb_eval_data_number: claims.tcb.eval_data_number,
        ppid: pck.ppid,
        fmspc: pck.fmspc,
        simulated: root.simulated,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const QUOTE: &[u8] = include_bytes!("../../tests/fixtures/tdx/dcapqvl_tdx_quote_v4.bin");
    const COLLATERAL: &[u8] =
        include_bytes!("../../tests/fixtures/tdx/dcapqvl_tdx_quote_v4.collateral.json");
    /// 2025-07-01T00:00:00Z: inside the TCB info / QE identity window (2025-06-19 .. 07-19).
    const INSIDE: i64 = 1_751_328_000;

    fn intel() -> TdxRoot {
        TdxRoot {
            der: intel_sgx_root_ca(),
            simulated: false,
        }
    }

    #[test]
    fn real_quote_verifies_up_to_date() {
        let c = collateral_from_json(COLLATERAL).unwrap();
        let facts = verify_quote(QUOTE, &c, INSIDE, &intel()).unwrap();
        assert_eq!(facts.tcb_status, "UpToDate");
        assert!(facts.advisory_ids.is_empty());
        assert!(!facts.quote.body.debug());
        // Facts dcap-qvl verified: the collateral's evaluation number (TCB info 17), the
        // PCK certificate's FMSPC (the TCB info's, B0C06F000000) and PPID.
        assert_eq!(facts.tcb_eval_data_number, 17);
        assert_eq!(hex::encode_upper(facts.fmspc), "B0C06F000000");
        assert_eq!(facts.ppid.len(), 16);
        // The body is dcap-qvl's reading, and ours agrees with it byte for byte.
        assert_eq!(facts.quote.body, TdxQuote::parse(QUOTE).unwrap().body);
    }

    #[test]
    fn fails_outside_window_tampered_or_with_wrong_root() {
        let c = collateral_from_json(COLLATERAL).unwrap();
        // 2031-01-01: the CRLs have expired.
        let err = verify_quote(QUOTE, &c, 1_924_992_000, &intel())
            .unwrap_err()
            .to_string();
        assert!(err.to_lowercase().contains("expired"), "{err}");
        // Before the TCB info was issued.
        assert!(verify_quote(QUOTE, &c, 1_700_000_000, &intel()).is_err());
        // A flipped byte in the body (MRTD) and in the quote signature.
        for offset in [48 + 136, 48 + 584 + 4 + 10] {
            let mut bad = QUOTE.to_vec();
            bad[offset] ^= 1;
            assert!(
                verify_quote(&bad, &c, INSIDE, &intel()).is_err(),
                "offset {offset}"
            );
        }
        // Another root: the chain does not end there.
        let wrong = TdxRoot {
            der: include_bytes!("../../tests/fixtures/snp/gosev_milan_vcek.der").to_vec(),
            simulated: false,
        };
        assert!(verify_quote(QUOTE, &c, INSIDE, &wrong).is_err());
    }
}
