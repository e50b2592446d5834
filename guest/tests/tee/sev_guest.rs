//! `/dev/sev-guest`.

use crate::fake::*;

pub fn snp_device() -> Arc<FakeKernel> {
    FakeKernel::new(Tee::Snp).with_device()
}

#[test]
fn sev_guest_ext_report_returns_the_report_and_certificates() {
    let kernel = snp_device();
    let tee = backend(&kernel, TeeChoice::Auto);
    assert_eq!(tee.kind(), EvidenceKind::SevSnp);
    let evidence = tee.attest(&snp_report_data()).unwrap();
    assert_eq!(evidence.raw, SNP_REPORT);
    let certs = evidence.certificates.unwrap();
    assert_eq!(certs.get(CertKind::Vcek), Some(MILAN_VCEK));
    assert_eq!(certs.get(CertKind::Ark), Some(milan_ask_ark().1.as_slice()));
    // One call, with SEV_FW_BLOB_MAX_SIZE (16 KiB) of buffer, at VMPL 0.
    assert_eq!(kernel.state().sev_buffers, vec![0x4000]);
    assert_eq!(kernel.state().sev_vmpls, vec![0]);
}

#[test]
fn sev_guest_certificate_buffer_too_small_is_retried_with_the_kernel_length() {
    let kernel = snp_device();
    let tee = backend(&kernel, TeeChoice::SevSnp);
    // The host's table needs five pages: first call INVALID_LEN, then exactly that.
    let mut table = milan_cert_table();
    table.resize(0x4000 + 100, 0);
    kernel.faults().cert_table = Some(table);
    let evidence = tee.attest(&snp_report_data()).unwrap();
    assert_eq!(
        evidence.certificates.unwrap().get(CertKind::Vcek),
        Some(MILAN_VCEK)
    );
    assert_eq!(kernel.state().sev_buffers, vec![0x4000, 0x5000]);
}

#[test]
fn sev_guest_unusable_certificate_length_is_refused() {
    // Not whole pages.
    let e = refusal(&snp_device(), TeeChoice::SevSnp, &snp_report_data(), |f| {
        f.sev_certs_len = Some(0x4000 + 10)
    });
    assert_mentions(&e.to_string(), &["16394", "whole number of pages"]);
    // Absurdly large.
    let e = refusal(&snp_device(), TeeChoice::SevSnp, &snp_report_data(), |f| {
        f.sev_certs_len = Some(64 << 20)
    });
    assert_mentions(&e.to_string(), &["67108864"]);
}

#[test]
fn sev_guest_busy_host_is_retried_then_given_up() {
    let kernel = snp_device();
    let tee = backend(&kernel, TeeChoice::SevSnp);
    kernel.faults().sev_busy = 2;
    tee.attest(&snp_report_data()).unwrap();
    let e = refusal(&kernel, TeeChoice::SevSnp, &snp_report_data(), |f| {
        f.sev_busy = 100
    });
    assert_mentions(
        &e.to_string(),
        &["gave up after 3 attempts", "VMM error 0x2"],
    );
}

#[test]
fn sev_guest_firmware_status_is_reported() {
    let e = refusal(&snp_device(), TeeChoice::SevSnp, &snp_report_data(), |f| {
        f.sev_status = 0x16
    });
    assert_mentions(&e.to_string(), &["firmware status", "0x16"]);
}

#[test]
fn sev_guest_reportdata_mismatch_is_refused() {
    let e = refusal(&snp_device(), TeeChoice::SevSnp, &[9; 64], |_| {});
    assert!(
        matches!(
            e,
            Error::ReportDataMismatch {
                what: "SEV-SNP report",
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn the_real_snp_ioctl_on_a_regular_file_is_not_an_sev_device() {
    let dir = TempDir::new();
    let (device, path) = regular_file(&dir);
    let tee = SevGuestTee::new(Box::new(device), 0, no_wait(3));
    let e = error(tee.attest(&[0; 64])).to_string();
    assert_mentions(&e, &[&path, "not an SEV guest device", "0xc0205302"]);
}
