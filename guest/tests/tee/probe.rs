//! Probing (`--tee auto`) and the simulated backends.

use crate::fake::*;
use crate::sev_guest::snp_device;

#[test]
fn auto_prefers_configfs_over_the_devices() {
    let kernel = snp_configfs().with_device();
    backend(&kernel, TeeChoice::Auto)
        .attest(&snp_report_data())
        .unwrap();
    assert!(
        kernel.state().sev_buffers.is_empty(),
        "the ioctl was not used"
    );
    assert_eq!(kernel.live_entries(), 0);
}

#[test]
fn auto_passes_over_a_configfs_without_provider_to_the_device() {
    let kernel = snp_configfs().with_device();
    kernel.faults().no_provider = true;
    backend(&kernel, TeeChoice::Auto)
        .attest(&snp_report_data())
        .unwrap();
    assert_eq!(kernel.state().sev_buffers.len(), 1, "the ioctl was used");
}

#[test]
fn auto_without_any_interface_fails_and_lists_what_it_tried() {
    let kernel = FakeKernel::new(Tee::Tdx);
    match error(select_on(
        &Fake(kernel.clone()),
        TeeChoice::Auto,
        &options(&kernel),
    )) {
        Error::NoTee { tried } => {
            let paths = kernel.paths();
            for path in [paths.tsm_report_dir, paths.tdx_guest, paths.sev_guest] {
                assert_mentions(&tried, &[&path.display().to_string()]);
            }
        }
        other => panic!("expected NoTee, got {other}"),
    }
    // An explicit choice only looks where that TEE can be.
    let kernel = snp_device();
    let e = error(select_on(
        &Fake(kernel.clone()),
        TeeChoice::Tdx,
        &options(&kernel),
    ));
    assert!(
        matches!(e, Error::NoTee { ref tried } if !tried.contains("sev-guest")),
        "{e}"
    );
}

#[cfg(feature = "simulated")]
#[test]
fn simulated_backends_go_through_the_same_post_read_checks() {
    let kernel = FakeKernel::new(Tee::Tdx);
    let asked = [0x11; 64];
    let evidence = backend(&kernel, TeeChoice::Simulated)
        .attest(&asked)
        .unwrap();
    assert_eq!(evidence.kind, EvidenceKind::Tdx);
    assert_eq!(quote_of(&evidence).body.report_data, asked);

    let snp = backend(&kernel, TeeChoice::SimulatedSevSnp);
    let evidence = snp.attest(&asked).unwrap();
    assert_eq!(evidence.kind, EvidenceKind::SevSnp);
    // The certificate table was split by the shared path: the development chain.
    let certs = evidence
        .certificates
        .expect("the simulated host's certificate table");
    let pki = cocoon_attestation_dev::DevSnpPki::dev().unwrap();
    assert_eq!(certs.get(CertKind::Vcek), Some(pki.vcek_der()));
    assert_eq!(
        certs.get(CertKind::Ark),
        Some(pki.trusted_ark().der.as_slice())
    );
    assert_eq!(snp.evidence(&asked).unwrap().len(), 0x4A0);
}
