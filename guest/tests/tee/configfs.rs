//! configfs-tsm (both TEEs).

use crate::fake::*;

#[test]
fn configfs_tdx_returns_the_recorded_quote_and_removes_its_entry() {
    let kernel = tdx_configfs();
    let tee = backend(&kernel, TeeChoice::Tdx);
    assert_eq!(tee.kind(), EvidenceKind::Tdx);
    let evidence = tee.attest(&tdx_report_data()).unwrap();
    assert_eq!(evidence.raw, TDX_QUOTE);
    assert_eq!(quote_of(&evidence).body.report_data, tdx_report_data());
    assert!(evidence.certificates.is_none(), "TDX has no auxblob");
    assert_eq!(kernel.live_entries(), 0);
    // The probe entry and the report entry.
    assert_eq!(kernel.state().entries_created, 2);
}

#[test]
fn configfs_snp_splits_the_auxblob_into_typed_certificates() {
    let kernel = snp_configfs();
    let tee = backend(&kernel, TeeChoice::SevSnp);
    assert_eq!(tee.kind(), EvidenceKind::SevSnp);
    let evidence = tee.attest(&snp_report_data()).unwrap();
    assert_eq!(evidence.raw, SNP_REPORT);
    let certs = evidence
        .certificates
        .expect("the auxblob certificate table");
    let (ask, ark) = milan_ask_ark();
    assert_eq!(certs.get(CertKind::Vcek), Some(MILAN_VCEK));
    assert_eq!(certs.get(CertKind::Ask), Some(ask.as_slice()));
    assert_eq!(certs.get(CertKind::Ark), Some(ark.as_slice()));
    assert_eq!(certs.get(CertKind::Vlek), None);
    assert_eq!(kernel.live_entries(), 0);
    // SEV-SNP has no guest-extendable register.
    assert_eq!(
        tee.extend_config_register(&[1; 48]).unwrap(),
        ConfigRegister::None
    );
}

#[test]
fn configfs_snp_writes_privlevel_and_counts_it_as_a_write() {
    let kernel = snp_configfs();
    let tee_at = |level| {
        let tsm = ConfigfsTsm::new(kernel.clone(), kernel.paths().tsm_report_dir, no_wait(1));
        ConfigfsTee::sev_snp(tsm, Some(level))
    };
    // One attempt only: a generation check that forgot the privlevel write would see a
    // "race" and give up.
    tee_at(2).attest(&snp_report_data()).unwrap();
    let e = error(tee_at(7).attest(&snp_report_data())).to_string();
    assert_mentions(&e, &["privilege level 7", "privlevel_floor"]);
    assert_eq!(kernel.live_entries(), 0);
}

#[test]
fn configfs_missing_interface_is_named_with_what_it_needs() {
    // HostFs on a directory that does not exist: the real ENOENT.
    let dir = TempDir::new();
    let missing = dir.0.join("sys/kernel/config/tsm/report");
    let tsm = ConfigfsTsm::new(Arc::new(HostFs), &missing, no_wait(3));
    assert!(!tsm.is_present());
    let e = error(tsm.report(&[0; 64], None)).to_string();
    let path = missing.display().to_string();
    assert_mentions(
        &e,
        &[
            &path,
            "configfs-tsm not available",
            "Linux ≥ 6.7",
            "CONFIG_TSM_REPORTS",
        ],
    );
}

#[test]
fn a_plain_directory_is_not_configfs_and_is_left_clean() {
    // HostFs on a real directory: mkdir works, but creates no attributes.
    let dir = TempDir::new();
    let tsm = ConfigfsTsm::new(Arc::new(HostFs), &dir.0, no_wait(3));
    let e = error(tsm.provider()).to_string();
    assert_mentions(&e, &["provider is missing", "not configfs-tsm"]);
    assert_eq!(
        std::fs::read_dir(&dir.0).unwrap().count(),
        0,
        "the entry was removed"
    );
}

#[test]
fn configfs_without_a_registered_provider_says_the_driver_is_missing() {
    let kernel = tdx_configfs();
    kernel.faults().no_provider = true;
    let tsm = ConfigfsTsm::new(kernel.clone(), kernel.paths().tsm_report_dir, no_wait(3));
    let e = error(tsm.provider()).to_string();
    assert_mentions(
        &e,
        &["no TSM provider is registered", "driver is not loaded"],
    );
}

#[test]
fn configfs_busy_is_retried() {
    let kernel = tdx_configfs();
    let tee = backend(&kernel, TeeChoice::Tdx);
    {
        let mut faults = kernel.faults();
        faults.mkdir_busy = 1;
        faults.outblob_busy = 1;
    }
    assert_eq!(tee.attest(&tdx_report_data()).unwrap().raw, TDX_QUOTE);
    assert_eq!(kernel.live_entries(), 0);
}

#[test]
fn configfs_busy_every_time_gives_up_after_the_bound() {
    let kernel = tdx_configfs();
    let e = refusal(&kernel, TeeChoice::Tdx, &tdx_report_data(), |f| {
        f.outblob_busy = 100
    });
    assert_mentions(
        &e.to_string(),
        &["gave up after 3 attempts", "outblob", "busy"],
    );
    assert_eq!(kernel.faults().outblob_busy, 97, "exactly three reads");
    assert_eq!(kernel.live_entries(), 0);
}

#[test]
fn configfs_generation_race_discards_the_report_and_retries() {
    let kernel = snp_configfs();
    let tee = backend(&kernel, TeeChoice::SevSnp);
    let created = kernel.state().entries_created;
    kernel.faults().races = 2;
    assert_eq!(tee.attest(&snp_report_data()).unwrap().raw, SNP_REPORT);
    assert_eq!(
        kernel.state().entries_created - created,
        3,
        "two raced, one clean"
    );
    assert_eq!(kernel.live_entries(), 0);
}

#[test]
fn configfs_generation_race_every_time_is_a_clear_error() {
    let kernel = tdx_configfs();
    let e = refusal(&kernel, TeeChoice::Tdx, &tdx_report_data(), |f| {
        f.races = 100
    });
    assert_mentions(
        &e.to_string(),
        &["generation", "from 0 to 2", "another writer"],
    );
    assert_eq!(kernel.live_entries(), 0);
}

#[test]
fn configfs_truncated_outblob_is_refused() {
    let e = refusal(&tdx_configfs(), TeeChoice::Tdx, &tdx_report_data(), |f| {
        f.truncate_outblob = Some(1000)
    });
    assert_mentions(&e.to_string(), &["not a TDX quote", "truncated"]);
    let e = refusal(
        &snp_configfs(),
        TeeChoice::SevSnp,
        &snp_report_data(),
        |f| f.truncate_outblob = Some(0x4A0 - 1),
    );
    assert_mentions(&e.to_string(), &["not an SEV-SNP report", "1183"]);
}

#[test]
fn configfs_malformed_certificate_table_is_refused() {
    let mut table = milan_cert_table();
    table[16..20].copy_from_slice(&1_000_000u32.to_le_bytes()); // the VCEK's offset
    let e = refusal(
        &snp_configfs(),
        TeeChoice::SevSnp,
        &snp_report_data(),
        |f| f.cert_table = Some(table),
    );
    assert_mentions(&e.to_string(), &["certificate table", "VCEK", "outside"]);
}

#[test]
fn configfs_reportdata_mismatch_is_refused() {
    let asked = [0x42; 64];
    match refusal(&tdx_configfs(), TeeChoice::Tdx, &asked, |_| {}) {
        Error::ReportDataMismatch {
            what,
            observed,
            requested,
        } => {
            assert_eq!(what, "TDX quote");
            assert_eq!(observed, hex::encode(tdx_report_data()));
            assert_eq!(requested, hex::encode(asked));
        }
        other => panic!("expected a REPORTDATA mismatch, got {other}"),
    }
}

#[test]
fn configfs_wrong_provider_is_refused() {
    // --tee sev-snp inside a TDX guest.
    let kernel = tdx_configfs();
    let e = error(select_on(
        &Fake(kernel.clone()),
        TeeChoice::SevSnp,
        &options(&kernel),
    ));
    assert_mentions(&e.to_string(), &["--tee sev-snp", "tdx_guest"]);
    // A provider the guest does not know.
    let kernel = tdx_configfs();
    kernel.faults().provider_name = Some("arm_cca_guest");
    let e = error(select_on(
        &Fake(kernel.clone()),
        TeeChoice::Auto,
        &options(&kernel),
    ));
    assert_mentions(&e.to_string(), &["arm_cca_guest is not supported"]);
    // A provider that changes under a running backend.
    let e = refusal(
        &snp_configfs(),
        TeeChoice::SevSnp,
        &snp_report_data(),
        |f| f.provider_name = Some("tdx_guest"),
    );
    assert_mentions(&e.to_string(), &["the provider is tdx_guest"]);
    assert_eq!(TsmProvider::SevGuest.kind(), Some(EvidenceKind::SevSnp));
}
