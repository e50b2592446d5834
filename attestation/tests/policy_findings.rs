//! The verifier-side findings of the 2026-11-29 security review (4, 8, 9, 12, 17, 22 are
//! here or next to the code they fix), each as evidence that a hostile host or operator
//! can produce, verified by `verify_quote` / `verify_report` and judged by the policy.

use cocoon_attestation::policy::{MinSnpTcb, Policy};
use cocoon_attestation::snp::verify::{amd_production_arks, verify_report, SnpFacts};
use cocoon_attestation::snp::TcbVersion;
use cocoon_attestation::tdx::dcap::{verify_quote, TdxFacts, TdxRoot};
use cocoon_attestation_dev::snp_pki::{
    DevProduct, DevReportOptions, DevSnpOptions, DevSnpPki, DEV_TCB,
};
use cocoon_attestation_dev::tdx_pki::{
    DevPki, DevQuoteOptions, DevTdMeasurements, DEV_TD_ATTRIBUTES,
};

const NOW: i64 = 1_800_000_000;

fn td() -> DevTdMeasurements {
    DevTdMeasurements {
        mr_td: [1; 48],
        rtmr: [[2; 48], [3; 48], [4; 48], [5; 48]],
        debug: false,
    }
}

fn tdx_facts(pki: &DevPki, options: &DevQuoteOptions) -> TdxFacts {
    let quote = pki.quote_with(&[7; 64], &td(), options).unwrap();
    let root = TdxRoot {
        der: pki.root_der(),
        simulated: true,
    };
    verify_quote(&quote, &pki.collateral(NOW).unwrap(), NOW, &root).unwrap()
}

fn rules(errors: &[cocoon_attestation::Error]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

// ---------------------------------------------------------------------------- TDX

/// Finding 4: the profiling bits of TD_ATTRIBUTES.TUD make a TD "under debug".
#[test]
fn tdx_profiling_attributes_are_refused_as_debug() {
    let pki = DevPki::dev().unwrap();
    for (bit, name) in [(4, "HGS_PLUS_PROF"), (5, "PERF_PROF"), (6, "PMT_PROF")] {
        let facts = tdx_facts(
            &pki,
            &DevQuoteOptions {
                td_attributes: Some(DEV_TD_ATTRIBUTES | 1 << bit),
                ..DevQuoteOptions::default()
            },
        );
        let errors = Policy::default().check_tdx(&facts);
        let text = rules(&errors);
        assert!(
            text.contains("debug must be off") && text.contains(name),
            "{name}: {text}"
        );
        assert!(
            Policy::default()
                .allow_debug(true)
                .check_tdx(&facts)
                .is_empty(),
            "{name} is accepted where debug is"
        );
    }
}

/// Finding 4: TD_ATTRIBUTES and XFAM are compared with the values a policy (or a
/// manifest, through it) carries.
#[test]
fn tdx_td_attributes_and_xfam_allowlists() {
    let pki = DevPki::dev().unwrap();
    let plain = tdx_facts(&pki, &DevQuoteOptions::default());
    let mut pinned = Policy::default();
    pinned.tdx.td_attributes = vec!["0x10000000".into()];
    pinned.tdx.xfam = vec!["0x602E7".into()];
    assert!(
        pinned.check_tdx(&plain).is_empty(),
        "{}",
        rules(&pinned.check_tdx(&plain))
    );
    let other = tdx_facts(
        &pki,
        &DevQuoteOptions {
            td_attributes: Some(DEV_TD_ATTRIBUTES | 1 << 63),
            xfam: Some(0xe7),
            ..DevQuoteOptions::default()
        },
    );
    let text = rules(&pinned.check_tdx(&other));
    assert!(text.contains("tdx.td_attributes"), "{text}");
    assert!(text.contains("tdx.xfam") && text.contains("0xe7"), "{text}");
}

/// Finding 9: MRCONFIGID, MROWNER and MROWNERCONFIG must be zero unless pinned.
#[test]
fn tdx_owner_registers_must_be_zero_unless_pinned() {
    let pki = DevPki::dev().unwrap();
    assert!(Policy::default()
        .check_tdx(&tdx_facts(&pki, &DevQuoteOptions::default()))
        .is_empty());
    for (rule, options) in [
        (
            "tdx.mr_config_id",
            DevQuoteOptions {
                mr_config_id: [1; 48],
                ..DevQuoteOptions::default()
            },
        ),
        (
            "tdx.mr_owner",
            DevQuoteOptions {
                mr_owner: [1; 48],
                ..DevQuoteOptions::default()
            },
        ),
        (
            "tdx.mr_owner_config",
            DevQuoteOptions {
                mr_owner_config: [1; 48],
                ..DevQuoteOptions::default()
            },
        ),
    ] {
        let facts = tdx_facts(&pki, &options);
        let text = rules(&Policy::default().check_tdx(&facts));
        assert!(
            text.contains(rule) && text.contains("all zero"),
            "{rule}: {text}"
        );
    }
    let facts = tdx_facts(
        &pki,
        &DevQuoteOptions {
            mr_owner: [1; 48],
            ..DevQuoteOptions::default()
        },
    );
    let mut pinned = Policy::default();
    pinned.tdx.mr_owner = vec!["01".repeat(48)];
    assert!(pinned.check_tdx(&facts).is_empty());
}

/// Finding 9: a floor on the collateral's tcbEvaluationDataNumber.
#[test]
fn tdx_tcb_evaluation_data_number_floor() {
    let pki = DevPki::dev().unwrap();
    let facts = tdx_facts(&pki, &DevQuoteOptions::default());
    // The dev collateral re-signs the real TCB info and QE identity of dcap-qvl's sample.
    assert_eq!(facts.tcb_eval_data_number, 17);
    let mut policy = Policy::default();
    policy.tdx.min_tcb_eval_data_number = Some(17);
    assert!(policy.check_tdx(&facts).is_empty());
    policy.tdx.min_tcb_eval_data_number = Some(18);
    let text = rules(&policy.check_tdx(&facts));
    assert!(text.contains("tdx.min_tcb_eval_data_number"), "{text}");
}

/// Finding 9: bytes after the quote's signature data are refused by `verify_quote`
/// (neither dcap-qvl nor the old parser looked at them).
#[test]
fn tdx_trailing_bytes_are_refused() {
    let pki = DevPki::dev().unwrap();
    let quote = pki.quote(&[7; 64], &td()).unwrap();
    let root = TdxRoot {
        der: pki.root_der(),
        simulated: true,
    };
    let collateral = pki.collateral(NOW).unwrap();
    assert!(verify_quote(&quote, &collateral, NOW, &root).is_ok());
    let mut tail = quote.clone();
    tail.extend_from_slice(b"not covered by any signature");
    let err = verify_quote(&tail, &collateral, NOW, &root)
        .unwrap_err()
        .to_string();
    assert!(err.contains("after the signature data"), "{err}");
}

/// TDX v5 quotes end to end: the dev PKI makes them, `verify_quote` verifies them.
#[test]
fn tdx_v5_quote_verifies_end_to_end() {
    let pki = DevPki::dev().unwrap();
    let facts = tdx_facts(
        &pki,
        &DevQuoteOptions {
            version: 5,
            ..DevQuoteOptions::default()
        },
    );
    assert_eq!(facts.quote.header.version, 5);
    assert_eq!(facts.quote.body.report_data, [7; 64]);
    assert_eq!(facts.tcb_status, "UpToDate");
    assert!(Policy::default().check_tdx(&facts).is_empty());
    // A v5 quote with a flipped body byte fails like a v4 one.
    let mut bad = pki
        .quote_with(
            &[7; 64],
            &td(),
            &DevQuoteOptions {
                version: 5,
                ..DevQuoteOptions::default()
            },
        )
        .unwrap();
    bad[54 + 136] ^= 1; // MRTD, behind v5's 6-byte body descriptor
    let root = TdxRoot {
        der: pki.root_der(),
        simulated: true,
    };
    assert!(verify_quote(&bad, &pki.collateral(NOW).unwrap(), NOW, &root).is_err());
}

/// Finding 12 (policy part): PPID and FMSPC allowlists; FMSPC in any case.
#[test]
fn tdx_ppid_and_fmspc_allowlists() {
    let pki = DevPki::dev().unwrap();
    let facts = tdx_facts(&pki, &DevQuoteOptions::default());
    assert_eq!(facts.ppid.len(), 16);
    assert_eq!(hex::encode_upper(facts.fmspc), "B0C06F000000");
    let mut policy = Policy::default();
    policy.tdx.ppid = vec![hex::encode(&facts.ppid)];
    policy.tdx.fmspc = vec!["b0c06f000000".into()];
    assert!(
        policy.check_tdx(&facts).is_empty(),
        "{}",
        rules(&policy.check_tdx(&facts))
    );
    policy.tdx.fmspc = vec!["B0C06F000000".into()];
    assert!(policy.check_tdx(&facts).is_empty());
    policy.tdx.ppid = vec!["00".repeat(16)];
    policy.tdx.fmspc = vec!["00606A000000".into()];
    let text = rules(&policy.check_tdx(&facts));
    assert!(
        text.contains("tdx.ppid") && text.contains("tdx.fmspc"),
        "{text}"
    );
    // Policy values are checked when the file is read.
    policy.tdx.ppid = vec!["abcd".into()];
    assert!(policy.validate().is_err());
}

/// FMSPC is compared without regard to case: a TCB info naming it in lower case still
/// matches the PCK certificate's FMSPC.
#[test]
fn tdx_fmspc_case_does_not_matter_in_tcb_info() {
    let pki = DevPki::dev().unwrap();
    let quote = pki.quote(&[7; 64], &td()).unwrap();
    let root = TdxRoot {
        der: pki.root_der(),
        simulated: true,
    };
    let collateral = pki
        .collateral_with_tcb_info(NOW, |tcb_info| {
            let fmspc = tcb_info["fmspc"].as_str().unwrap().to_ascii_lowercase();
            tcb_info["fmspc"] = fmspc.into();
        })
        .unwrap();
    assert!(collateral.tcb_info.contains("\"fmspc\":\"b0c06f000000\""));
    let facts = verify_quote(&quote, &collateral, NOW, &root).unwrap();
    assert_eq!(facts.tcb_status, "UpToDate");
}

// ---------------------------------------------------------------------------- SNP

fn snp_facts(pki: &DevSnpPki, options: &DevReportOptions) -> cocoon_attestation::Result<SnpFacts> {
    let report = pki.report_with(&[7; 64], &[1; 48], &[2; 32], options);
    verify_report(
        &report,
        pki.vcek_der(),
        pki.chain_pem().as_bytes(),
        NOW,
        &[pki.trusted_ark()],
    )
}

/// Finding 8: a default TCB floor per product on REPORTED_TCB, and on LAUNCH_TCB.
#[test]
fn snp_default_tcb_floor_applies_to_reported_and_launch_tcb() {
    let dev = DevSnpPki::dev().unwrap();
    let ok = snp_facts(dev, &DevReportOptions::default()).unwrap();
    assert!(
        Policy::default().check_snp(&ok).is_empty(),
        "{}",
        rules(&Policy::default().check_snp(&ok))
    );

    // A machine on microcode 1 (a VCEK really issued for that TCB).
    let old = DevSnpPki::from_seed_with(
        b"old microcode",
        DevSnpOptions {
            tcb: TcbVersion {
                microcode: 1,
                ..DEV_TCB
            },
            ..DevSnpOptions::default()
        },
    )
    .unwrap();
    let facts = snp_facts(&old, &DevReportOptions::default()).unwrap();
    let text = rules(&Policy::default().check_snp(&facts));
    assert!(
        text.contains("snp.min_tcb") && text.contains("REPORTED_TCB"),
        "{text}"
    );
    assert!(Policy::default()
        .min_snp_tcb(MinSnpTcb::NONE)
        .check_snp(&facts)
        .is_empty());

    // Launched under older firmware than it reports now (a hot update since).
    let facts = snp_facts(
        dev,
        &DevReportOptions {
            launch_tcb: Some(TcbVersion { snp: 8, ..DEV_TCB }),
            ..DevReportOptions::default()
        },
    )
    .unwrap();
    let text = rules(&Policy::default().check_snp(&facts));
    assert!(
        text.contains("snp.min_tcb") && text.contains("LAUNCH_TCB"),
        "{text}"
    );
}

/// Finding 8: VMPL 0 by default.
#[test]
fn snp_vmpl_zero_is_required_by_default() {
    let facts = snp_facts(
        DevSnpPki::dev().unwrap(),
        &DevReportOptions {
            vmpl: 3,
            ..DevReportOptions::default()
        },
    )
    .unwrap();
    let text = rules(&Policy::default().check_snp(&facts));
    assert!(text.contains("snp.vmpl"), "{text}");
    let mut relaxed = Policy::default();
    relaxed.snp.vmpl = None;
    assert!(relaxed.check_snp(&facts).is_empty());
}

/// Finding 8: PLATFORM_INFO.ALIAS_CHECK_COMPLETE (BadRAM) where the report version
/// defines it; SMT_EN under the SMT rule.
#[test]
fn snp_platform_info_bits_are_checked() {
    let dev = DevSnpPki::dev().unwrap();
    let facts = snp_facts(
        dev,
        &DevReportOptions {
            platform_info: 0x1,
            ..DevReportOptions::default()
        },
    )
    .unwrap();
    let text = rules(&Policy::default().check_snp(&facts));
    assert!(text.contains("snp.require_alias_check"), "{text}");
    let mut no_smt = Policy::default();
    no_smt.snp.require_alias_check = false;
    assert!(no_smt.check_snp(&facts).is_empty());
    no_smt.snp.allow_smt = false;
    let text = rules(&no_smt.check_snp(&facts));
    assert!(text.contains("PLATFORM_INFO.SMT_EN"), "{text}");
    let mut tsme = Policy::default();
    tsme.snp.require_tsme = true;
    let ok = snp_facts(dev, &DevReportOptions::default()).unwrap();
    assert!(rules(&tsme.check_snp(&ok)).contains("snp.require_tsme"));
}

/// Finding 8: guest POLICY bits a policy can require: SINGLE_SOCKET and a minimum ABI.
#[test]
fn snp_policy_single_socket_and_min_abi() {
    let dev = DevSnpPki::dev().unwrap();
    let plain = snp_facts(dev, &DevReportOptions::default()).unwrap();
    let mut strict = Policy::default();
    strict.snp.require_single_socket = true;
    strict.snp.min_abi = Some("1.55".into());
    let text = rules(&strict.check_snp(&plain));
    assert!(text.contains("snp.require_single_socket"), "{text}");
    assert!(
        text.contains("snp.min_abi") && text.contains("ABI 0.0"),
        "{text}"
    );
    // ABI 1.55, SMT, reserved bit 17, SINGLE_SOCKET.
    let pinned = snp_facts(
        dev,
        &DevReportOptions {
            policy: Some(55 | 1 << 8 | 1 << 16 | 1 << 17 | 1 << 20),
            ..DevReportOptions::default()
        },
    )
    .unwrap();
    assert!(
        strict.check_snp(&pinned).is_empty(),
        "{}",
        rules(&strict.check_snp(&pinned))
    );
    strict.snp.min_abi = Some("1.x".into());
    assert!(strict.validate().is_err());
}

/// Finding 8: the certificate's kind must match SIGNING_KEY. A report that claims a
/// VLEK skipped the CHIP_ID/hwID check while a VCEK signed it.
#[test]
fn snp_signing_key_must_match_the_certificate_kind() {
    let dev = DevSnpPki::dev().unwrap();
    let err = snp_facts(
        dev,
        &DevReportOptions {
            key_info: Some(1 << 2),
            ..DevReportOptions::default()
        },
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("SIGNING_KEY"), "{err}");
    let err = snp_facts(
        dev,
        &DevReportOptions {
            key_info: Some(7 << 2),
            ..DevReportOptions::default()
        },
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("SIGNING_KEY"), "{err}");
}

/// Finding 8: a VLEK-signed report verifies through the ASVK; a VCEK claim on it fails.
#[test]
fn snp_vlek_report_verifies_through_the_asvk() {
    let pki = DevSnpPki::from_seed_with(
        b"vlek",
        DevSnpOptions {
            product: DevProduct::Genoa,
            tcb: TcbVersion {
                fmc: None,
                bootloader: 10,
                tee: 0,
                snp: 25,
                microcode: 84,
            },
            vlek: true,
        },
    )
    .unwrap();
    let facts = snp_facts(&pki, &DevReportOptions::default()).unwrap();
    assert!(facts.vlek);
    assert_eq!(facts.chip_id(), None);
    assert!(
        Policy::default().check_snp(&facts).is_empty(),
        "{}",
        rules(&Policy::default().check_snp(&facts))
    );
    // A CHIP_ID allowlist cannot be met by a VLEK report.
    let mut pinned = Policy::default();
    pinned.snp.chip_id = vec!["11".repeat(64)];
    assert!(rules(&pinned.check_snp(&facts)).contains("snp.chip_id"));
    let err = snp_facts(
        &pki,
        &DevReportOptions {
            key_info: Some(0),
            ..DevReportOptions::default()
        },
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("SIGNING_KEY"), "{err}");
}

/// Turin's TCB layout (FMC first) and report version 5, end to end; Turin has no default
/// floor here, so the policy must name one.
#[test]
fn snp_turin_v5_report_verifies_and_needs_a_named_floor() {
    let tcb = TcbVersion {
        fmc: Some(1),
        bootloader: 2,
        tee: 3,
        snp: 4,
        microcode: 5,
    };
    let pki = DevSnpPki::from_seed_with(
        b"turin",
        DevSnpOptions {
            product: DevProduct::Turin,
            tcb,
            vlek: false,
        },
    )
    .unwrap();
    let facts = snp_facts(
        &pki,
        &DevReportOptions {
            version: 5,
            ..DevReportOptions::default()
        },
    )
    .unwrap();
    assert_eq!(facts.report.version, 5);
    assert_eq!(facts.report.product(), Some("Turin"));
    assert_eq!(facts.report.reported_tcb, tcb);
    assert_eq!(facts.certified_tcb, tcb);
    let text = rules(&Policy::default().check_snp(&facts));
    assert!(text.contains("Turin: no default TCB floor"), "{text}");
    let floor = MinSnpTcb {
        fmc: Some(1),
        bootloader: 2,
        tee: 3,
        snp: 4,
        microcode: 5,
    };
    assert!(Policy::default()
        .min_snp_tcb(floor.clone())
        .check_snp(&facts)
        .is_empty());
    let higher = MinSnpTcb {
        fmc: Some(2),
        ..floor
    };
    assert!(rules(&Policy::default().min_snp_tcb(higher).check_snp(&facts)).contains("fmc=1"));
}

const GENOA_V5: &[u8] = include_bytes!("fixtures/snp/oak_genoa_oc_report_v5.bin");
const GENOA_V5_VCEK: &[u8] = include_bytes!("fixtures/snp/oak_genoa_vcek.der");
const GENOA_V3: &[u8] = include_bytes!("fixtures/snp/trustee_azure_genoa_report_v3.bin");
const GENOA_V3_VCEK: &[u8] = include_bytes!("fixtures/snp/trustee_azure_genoa_vcek.pem");
const GENOA_CHAIN: &[u8] = include_bytes!("fixtures/snp/amd_ask_ark_genoa.pem");
const GENOA_ASK_ARK_ASVK: &[u8] = include_bytes!("fixtures/snp/trustee_genoa_ask_ark_asvk.pem");
/// 2026-01-01: inside both Genoa VCEKs' validity.
const GENOA_AT: i64 = 1_767_225_600;

fn pem_der(pem: &[u8]) -> Vec<u8> {
    x509_parser::pem::parse_x509_pem(pem).unwrap().1.contents
}

/// Real Genoa reports (version 5 and 3) verify and meet the default policy, with AMD's
/// chain as KDS serves it and as Trustee bundles it (ASK, ARK and ASVK together).
#[test]
fn real_genoa_reports_pass_the_default_policy() {
    let arks = amd_production_arks();
    let v3_vcek = pem_der(GENOA_V3_VCEK);
    for (name, report, vcek) in [
        ("v5", GENOA_V5, GENOA_V5_VCEK),
        ("v3", GENOA_V3, v3_vcek.as_slice()),
    ] {
        for chain in [GENOA_CHAIN, GENOA_ASK_ARK_ASVK] {
            let facts = verify_report(report, vcek, chain, GENOA_AT, &arks)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(facts.product, "Genoa");
            assert_eq!(facts.report.product(), Some("Genoa"));
            assert!(!facts.vlek);
            assert_eq!(facts.chip_id(), Some(facts.report.chip_id));
            let errors = Policy::default().check_snp(&facts);
            assert!(errors.is_empty(), "{name}: {}", rules(&errors));
        }
    }
    let facts = verify_report(GENOA_V5, GENOA_V5_VCEK, GENOA_CHAIN, GENOA_AT, &arks).unwrap();
    assert_eq!(facts.report.version, 5);
    assert_eq!(
        facts.report.reported_tcb,
        TcbVersion {
            fmc: None,
            bootloader: 10,
            tee: 0,
            snp: 25,
            microcode: 84
        }
    );
    // Finding 12: a CHIP_ID allowlist.
    let mut pinned = Policy::default();
    pinned.snp.chip_id = vec![hex::encode(facts.report.chip_id)];
    assert!(pinned.check_snp(&facts).is_empty());
    pinned.snp.chip_id = vec!["00".repeat(64)];
    assert!(rules(&pinned.check_snp(&facts)).contains("snp.chip_id"));
}

// ---------------------------------------------------------------------------- KDS CRL

fn serial(der: &[u8]) -> Vec<u8> {
    x509_parser::parse_x509_certificate(der)
        .unwrap()
        .1
        .raw_serial()
        .to_vec()
}

/// Finding 8: AMD's KDS CRL, signed by the ARK, revokes an ASK (or ASVK); a stale CRL,
/// one signed by another ARK, or one that lists the chain's ASK refuses.
#[test]
fn snp_kds_crl_revokes_the_ask() {
    use cocoon_attestation::snp::verify::check_snp_crl;
    let pki = DevSnpPki::dev().unwrap();
    let chain = pki.chain_pem();
    let day = 86_400;
    let clean = pki.crl(&[&[0x7f, 0x01]], NOW - day, NOW + 7 * day).unwrap();
    check_snp_crl(&clean, chain.as_bytes(), pki.vcek_der(), NOW).unwrap();

    let ask_serial = serial(pki.ask_der());
    let revoked = pki.crl(&[&ask_serial], NOW - day, NOW + 7 * day).unwrap();
    let err = check_snp_crl(&revoked, chain.as_bytes(), pki.vcek_der(), NOW)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("revoked") && err.contains("SEV-Milan-DEV"),
        "{err}"
    );

    let err = check_snp_crl(&clean, chain.as_bytes(), pki.vcek_der(), NOW + 8 * day)
        .unwrap_err()
        .to_string();
    assert!(err.contains("AMD KDS CRL"), "{err}");
    assert!(check_snp_crl(&clean, chain.as_bytes(), pki.vcek_der(), NOW - 2 * day).is_err());

    // Another ARK's CRL (same names: only the signature tells them apart).
    let other = DevSnpPki::from_seed(b"impostor").unwrap();
    let forged = other.crl(&[], NOW - day, NOW + 7 * day).unwrap();
    let err = check_snp_crl(&forged, chain.as_bytes(), pki.vcek_der(), NOW)
        .unwrap_err()
        .to_string();
    assert!(err.contains("did not sign this CRL"), "{err}");
    let mut tampered = clean.clone();
    let at = tampered.len() - 10;
    tampered[at] ^= 1;
    assert!(check_snp_crl(&tampered, chain.as_bytes(), pki.vcek_der(), NOW).is_err());
}
