//! RTMR3 through tsm-mr.

use crate::fake::*;

#[test]
fn tdx_config_register_is_rtmr3_through_tsm_mr() {
    let kernel = tdx_configfs();
    let tee = backend(&kernel, TeeChoice::Auto);
    let digest = [0x33; 48];
    assert_eq!(
        tee.extend_config_register(&digest).unwrap(),
        ConfigRegister::TdxRtmr(3)
    );
    let mut expected = Sha384::new();
    expected.update([0u8; 48]);
    expected.update(digest);
    let expected: [u8; 48] = expected.finalize().into();
    assert_eq!(kernel.state().rtmr3, expected);
}

#[test]
fn tdx_without_tsm_mr_refuses_to_leave_rtmr3_unextended() {
    let kernel = FakeKernel::new(Tee::Tdx).with_configfs();
    let tee = backend(&kernel, TeeChoice::Tdx);
    let e = error(tee.extend_config_register(&[0x33; 48])).to_string();
    assert_mentions(&e, &["no tsm-mr interface", "6.16", "unextended RTMR3"]);
}

#[test]
fn an_rtmr_write_that_does_not_extend_is_detected() {
    // HostFs on a plain 48-byte file: the write replaces instead of extending.
    let dir = TempDir::new();
    let path = dir.0.join("rtmr3:sha384");
    std::fs::write(&path, [0u8; 48]).unwrap();
    let rtmr = TsmMrRtmr::new(Arc::new(HostFs), &path);
    assert_mentions(
        &error(rtmr.extend(&[0x33; 48])).to_string(),
        &["did not extend"],
    );
    // A file of the wrong size is not an RTMR.
    std::fs::write(&path, [0u8; 12]).unwrap();
    let e = error(rtmr.extend(&[0x33; 48])).to_string();
    assert_mentions(&e, &["read 12 bytes, expected 48"]);
}
