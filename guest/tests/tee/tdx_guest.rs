//! `/dev/tdx_guest` and the QGS.

use crate::fake::*;

/// What the fake QGS answers.
#[derive(Clone, Copy)]
enum QgsReply {
    Quote(&'static [u8]),
    Error(u32),
    /// Announces the quote, sends half, closes.
    Short,
    /// Announces a 16 MiB body.
    Huge,
}

/// A QGS on `path` that serves one connection and returns the TDREPORT it received.
fn spawn_qgs(path: &Path, reply: QgsReply) -> JoinHandle<Vec<u8>> {
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path).unwrap();
    std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut prefix = [0u8; 4];
        s.read_exact(&mut prefix).unwrap();
        let len = u32::from_be_bytes(prefix) as usize;
        let mut req = vec![0u8; len];
        s.read_exact(&mut req).unwrap();
        // qgs_msg_get_quote_req_t: header {major 1, minor, type 0, size, error 0},
        // report_size, id_list_size, report.
        assert_eq!(u16::from_le_bytes([req[0], req[1]]), 1, "major version");
        assert_eq!(&req[4..8], &0u32.to_le_bytes(), "GET_QUOTE_REQ");
        assert_eq!(&req[8..12], &(len as u32).to_le_bytes(), "size");
        assert_eq!(&req[16..20], &1024u32.to_le_bytes(), "report_size");
        assert_eq!(&req[20..24], &0u32.to_le_bytes(), "id_list_size");
        let report = req[24..].to_vec();
        let (error, quote): (u32, &[u8]) = match reply {
            QgsReply::Quote(quote) => (0, quote),
            QgsReply::Short => (0, TDX_QUOTE),
            QgsReply::Error(code) => (code, &[]),
            QgsReply::Huge => {
                s.write_all(&(16u32 << 20).to_be_bytes()).unwrap();
                return report;
            }
        };
        // qgs_msg_get_quote_resp_t: header {1, 1, GET_QUOTE_RESP, size, error},
        // selected_id_size, quote_size, quote.
        let mut resp = Vec::new();
        resp.extend_from_slice(&1u16.to_le_bytes());
        resp.extend_from_slice(&1u16.to_le_bytes());
        resp.extend_from_slice(&1u32.to_le_bytes());
        resp.extend_from_slice(&((24 + quote.len()) as u32).to_le_bytes());
        resp.extend_from_slice(&error.to_le_bytes());
        resp.extend_from_slice(&0u32.to_le_bytes());
        resp.extend_from_slice(&(quote.len() as u32).to_le_bytes());
        resp.extend_from_slice(quote);
        s.write_all(&(resp.len() as u32).to_be_bytes()).unwrap();
        let send = match reply {
            QgsReply::Short => resp.len() / 2,
            _ => resp.len(),
        };
        s.write_all(&resp[..send]).unwrap();
        report
    })
}

/// A TDX guest with `/dev/tdx_guest`, tsm-mr and no configfs-tsm; the QGS's socket path.
fn tdx_device() -> (Arc<FakeKernel>, PathBuf) {
    let kernel = FakeKernel::new(Tee::Tdx).with_device().with_tsm_mr();
    let QgsAddress::Unix(path) = kernel.paths().qgs else {
        unreachable!("the fake QGS is on a Unix socket")
    };
    (kernel, path)
}

/// The error a `/dev/tdx_guest` backend gives when the QGS answers `reply`.
fn qgs_refusal(reply: QgsReply, fault: impl FnOnce(&mut Faults)) -> Error {
    let (kernel, path) = tdx_device();
    let qgs = spawn_qgs(&path, reply);
    let e = refusal(&kernel, TeeChoice::Tdx, &tdx_report_data(), fault);
    qgs.join().unwrap();
    e
}

#[test]
fn tdx_guest_device_and_qgs_return_the_recorded_quote() {
    let (kernel, path) = tdx_device();
    let tee = backend(&kernel, TeeChoice::Auto);
    assert_eq!(tee.kind(), EvidenceKind::Tdx);
    let qgs = spawn_qgs(&path, QgsReply::Quote(TDX_QUOTE));
    assert_eq!(tee.attest(&tdx_report_data()).unwrap().raw, TDX_QUOTE);
    // The QGS got this TD's TDREPORT, with the requested REPORTDATA at offset 128.
    assert_eq!(qgs.join().unwrap(), td_report_for(&tdx_report_data()));
    assert_eq!(
        tee.extend_config_register(&[7; 48]).unwrap(),
        ConfigRegister::TdxRtmr(3)
    );
}

#[test]
fn tdx_guest_device_busy_is_retried() {
    let (kernel, path) = tdx_device();
    let tee = backend(&kernel, TeeChoice::Tdx);
    kernel.faults().tdx_busy = 2;
    let qgs = spawn_qgs(&path, QgsReply::Quote(TDX_QUOTE));
    tee.attest(&tdx_report_data()).unwrap();
    qgs.join().unwrap();
    assert_eq!(kernel.state().tdx_calls, 3);
}

#[test]
fn a_quote_for_another_td_is_refused() {
    // The QGS answers with somebody else's quote: REPORTDATA differs.
    let e = qgs_refusal(QgsReply::Quote(TDX_QUOTE_V5), |_| {});
    assert!(matches!(e, Error::ReportDataMismatch { .. }), "{e}");
    // Same REPORTDATA, but the quote's RTMR3 is not this TD's.
    let e = qgs_refusal(QgsReply::Quote(TDX_QUOTE), |f| f.tdreport_other_td = true);
    assert_mentions(&e.to_string(), &["quote for another TD", "RTMR3"]);
}

#[test]
fn qgs_errors_are_reported() {
    let e = qgs_refusal(QgsReply::Error(0x0001_2003), |_| {}).to_string();
    assert_mentions(&e, &["0x12003", "INVALID_PARAMETER"]);
    let e = qgs_refusal(QgsReply::Short, |_| {}).to_string();
    assert_mentions(&e, &["short read", "closed after"]);
    let e = qgs_refusal(QgsReply::Huge, |_| {}).to_string();
    assert_mentions(&e, &["length prefix", "16777216"]);
    // Nobody listening.
    let (kernel, _) = tdx_device();
    let e = refusal(&kernel, TeeChoice::Tdx, &tdx_report_data(), |_| {}).to_string();
    assert_mentions(&e, &["QGS at unix:", "cannot connect"]);
}

#[test]
fn the_vsock_transport_names_the_qgs_it_could_not_reach() {
    // The real AF_VSOCK path; no QGS listens on this machine, whatever vsock support it
    // has, so this is always an error.
    let client = QgsClient::new(QgsAddress::default(), Duration::from_secs(2));
    let e = error(client.get_quote(&td_report_for(&[0; 64]))).to_string();
    assert_mentions(&e, &["QGS at vsock CID 2 port 4050"]);
}

#[test]
fn the_real_tdx_ioctl_on_a_regular_file_is_not_a_tdx_device() {
    let dir = TempDir::new();
    let (device, path) = regular_file(&dir);
    let e = error(td_report(&device, &[0; 64], &no_wait(3))).to_string();
    assert_mentions(&e, &[&path, "not a TDX guest device", "0xc4405401"]);
}
