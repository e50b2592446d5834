//! Every evidence backend against a fake kernel fed with real recorded evidence.
//!
//! configfs-tsm and tsm-mr cannot be played by a plain directory (mkdir there creates no
//! attributes, reading `outblob` runs no TEE, writing an RTMR extends nothing), so the
//! fake kernel here is a real temporary directory whose few special files behave as the
//! kernel's do (drivers/virt/coco/guest/report.c, tsm-mr.c): mkdir creates the
//! attributes, every write to the entry moves `generation`, `outblob`/`auxblob` serve
//! the recorded TDX quote (dcap-qvl) or SEV-SNP report (go-sev-guest, Milan) with its
//! certificate table, a write to `rtmr3:sha384` extends. The fake devices answer the
//! ioctls the way the TDX and SEV guest drivers do, and a fake QGS on a Unix socket
//! speaks Intel's message protocol, written out byte by byte here. Faults are injected
//! per test: missing interfaces, EBUSY, generation races, truncated blobs, the wrong
//! provider, certificate buffers that are too small, QGS errors and short reads.
//!
//! The fakes echo the recorded evidence whatever is asked, so tests request the
//! recorded REPORTDATA, and ask for something else to see the mismatch refused.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use base64::Engine;
use cocoon_attestation::evidence::EvidenceKind;
use cocoon_attestation::snp::ext_report::CertKind;
use cocoon_guest::tee::configfs_tsm::{ConfigfsTee, ConfigfsTsm, TsmProvider};
use cocoon_guest::tee::qgs::{QgsAddress, QgsClient};
use cocoon_guest::tee::sev_guest::{
    SevGuestDevice, SevGuestTee, SnpExtReportReq, SnpIoctlError, SnpReportResp,
};
use cocoon_guest::tee::tdx_guest::{td_report, TdxDevice, TdxReportReq, TsmMrRtmr};
use cocoon_guest::tee::{
    select_on, ConfigRegister, Evidence, EvidenceProvider, HostDevice, HostFs, KernelFs,
    ParsedEvidence, Platform, RetryPolicy, SelectOptions, TeeChoice, TeePaths,
};
use cocoon_guest::Error;
use sha2::{Digest, Sha384};

const TDX_QUOTE: &[u8] = include_bytes!("fixtures/tdx/dcapqvl_tdx_quote_v4.bin");
const TDX_QUOTE_V5: &[u8] = include_bytes!("fixtures/tdx/gotdx_quote_v5_sample.bin");
const SNP_REPORT: &[u8] = include_bytes!("fixtures/snp/gosev_milan_attestation.bin");
const MILAN_VCEK: &[u8] = include_bytes!("fixtures/snp/gosev_milan_vcek.der");
const MILAN_ASK_ARK: &str = include_str!("fixtures/snp/amd_ask_ark_milan.pem");

/// REPORTDATA of the recorded TDX quote: header (48 bytes), then REPORTDATA at offset
/// 520 of the TD report body (Intel's quote layout).
fn tdx_report_data() -> [u8; 64] {
    TDX_QUOTE[48 + 520..48 + 584].try_into().unwrap()
}

/// REPORTDATA of the recorded SNP report (offset 0x50, SNP firmware ABI).
fn snp_report_data() -> [u8; 64] {
    SNP_REPORT[0x50..0x90].try_into().unwrap()
}

/// The Milan ASK and ARK, DER, from the PEM fixture.
fn milan_ask_ark() -> (Vec<u8>, Vec<u8>) {
    let ders: Vec<Vec<u8>> = MILAN_ASK_ARK
        .split("-----BEGIN CERTIFICATE-----")
        .skip(1)
        .map(|block| {
            let b64: String = block
                .split("-----END CERTIFICATE-----")
                .next()
                .unwrap()
                .split_whitespace()
                .collect();
            base64::engine::general_purpose::STANDARD
                .decode(b64)
                .unwrap()
        })
        .collect();
    assert_eq!(ders.len(), 2, "the fixture holds the ASK then the ARK");
    (ders[0].clone(), ders[1].clone())
}

/// The host's certificate table in the GHCB layout (24-byte entries: GUID in RFC 4122
/// byte order, offset u32 LE, length u32 LE; an all-zero terminator; the DER blobs).
fn milan_cert_table() -> Vec<u8> {
    let (ask, ark) = milan_ask_ark();
    let entries: [(&str, &[u8]); 3] = [
        ("63da758d-e664-4564-adc5-f4b93be8accd", MILAN_VCEK),
        ("4ab7b379-bbac-4fe4-a02f-05aef327c782", &ask),
        ("c0b406a4-a803-4952-9743-3fb6014cd0ae", &ark),
    ];
    let mut out = Vec::new();
    let mut next = (entries.len() + 1) * 24;
    for (guid, der) in &entries {
        out.extend_from_slice(uuid::Uuid::parse_str(guid).unwrap().as_bytes());
        out.extend_from_slice(&(next as u32).to_le_bytes());
        out.extend_from_slice(&(der.len() as u32).to_le_bytes());
        next += der.len();
    }
    out.extend_from_slice(&[0; 24]);
    for (_, der) in &entries {
        out.extend_from_slice(der);
    }
    out
}

/// The TDREPORT the TDX module would produce for the recorded quote's TD: REPORTTYPE
/// 0x81, the requested REPORTDATA at 128, TDINFO at 512 whose first 400 bytes
/// (ATTRIBUTES..RTMR3) are the quote body's TDATTRIBUTES..RTMR3 (body offsets 120..520).
fn td_report_for(report_data: &[u8; 64]) -> [u8; 1024] {
    let body = &TDX_QUOTE[48..48 + 584];
    let mut r = [0u8; 1024];
    r[0] = 0x81;
    r[128..192].copy_from_slice(report_data);
    r[512..912].copy_from_slice(&body[120..520]);
    r
}

/// A directory under the system temp dir, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "cocoon-tee-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn os_err(code: i32) -> io::Error {
    io::Error::from_raw_os_error(code)
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Tee {
    Tdx,
    Snp,
}

/// What to break, and how often.
#[derive(Default)]
struct Faults {
    /// configfs mkdir answers ENXIO (no TSM provider registered).
    no_provider: bool,
    /// The `provider` attribute names this instead of the TEE's driver.
    provider_name: Option<&'static str>,
    mkdir_busy: u32,
    outblob_busy: u32,
    /// Writes to `inblob` that another writer follows before we read.
    races: u32,
    truncate_outblob: Option<usize>,
    /// `auxblob` (and the SNP ioctl's certificate buffer) holds these bytes.
    cert_table: Option<Vec<u8>>,
    tdx_busy: u32,
    /// The TDREPORT's RTMR3 differs from the recorded quote's.
    tdreport_other_td: bool,
    sev_busy: u32,
    /// The SNP ioctl asks for this many certificate bytes, whatever the table needs.
    sev_certs_len: Option<u32>,
    /// STATUS in MSG_REPORT_RSP.
    sev_status: u32,
}

struct State {
    inblobs: HashMap<PathBuf, Vec<u8>>,
    entries_created: u32,
    rtmr3: [u8; 48],
    /// Certificate-buffer sizes the SNP ioctl was called with.
    sev_buffers: Vec<usize>,
    sev_vmpls: Vec<u32>,
    tdx_calls: u32,
}

/// The fake kernel: a temp dir with the interfaces that `with_*` created.
struct FakeKernel {
    dir: TempDir,
    tee: Tee,
    faults: Mutex<Faults>,
    state: Mutex<State>,
}

impl FakeKernel {
    fn new(tee: Tee) -> Arc<Self> {
        Arc::new(Self {
            dir: TempDir::new(),
            tee,
            faults: Mutex::new(Faults::default()),
            state: Mutex::new(State {
                inblobs: HashMap::new(),
                entries_created: 0,
                rtmr3: [0; 48],
                sev_buffers: Vec::new(),
                sev_vmpls: Vec::new(),
                tdx_calls: 0,
            }),
        })
    }

    fn paths(&self) -> TeePaths {
        let root = &self.dir.0;
        TeePaths {
            tsm_report_dir: root.join("sys/kernel/config/tsm/report"),
            tdx_guest: root.join("dev/tdx_guest"),
            sev_guest: root.join("dev/sev-guest"),
            rtmr3: root.join("sys/class/misc/tdx_guest/measurements/rtmr3:sha384"),
            qgs: QgsAddress::Unix(root.join("qgs.sock")),
        }
    }

    fn with_configfs(self: Arc<Self>) -> Arc<Self> {
        std::fs::create_dir_all(self.paths().tsm_report_dir).unwrap();
        self
    }

    fn with_tsm_mr(self: Arc<Self>) -> Arc<Self> {
        let path = self.paths().rtmr3;
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, []).unwrap();
        self
    }

    fn with_device(self: Arc<Self>) -> Arc<Self> {
        let paths = self.paths();
        let path = match self.tee {
            Tee::Tdx => paths.tdx_guest,
            Tee::Snp => paths.sev_guest,
        };
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, []).unwrap();
        self
    }

    fn faults(&self) -> std::sync::MutexGuard<'_, Faults> {
        self.faults.lock().unwrap()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }

    /// Report entries still present (the backend must remove every one it made).
    fn live_entries(&self) -> usize {
        std::fs::read_dir(self.paths().tsm_report_dir)
            .map(|d| d.count())
            .unwrap_or(0)
    }

    fn is_entry(&self, path: &Path) -> bool {
        path.parent() == Some(self.paths().tsm_report_dir.as_path())
    }

    /// The entry and attribute name, for a path inside an entry.
    fn attribute<'a>(&self, path: &'a Path) -> Option<(PathBuf, &'a str)> {
        let entry = path.parent()?;
        let name = path.file_name()?.to_str()?;
        self.is_entry(entry).then(|| (entry.to_path_buf(), name))
    }

    fn cert_table(&self) -> Vec<u8> {
        self.faults()
            .cert_table
            .clone()
            .unwrap_or_else(milan_cert_table)
    }

    fn bump_generation(&self, entry: &Path, by: u64) -> io::Result<()> {
        let path = entry.join("generation");
        let now: u64 = std::fs::read_to_string(&path)?.trim().parse().unwrap();
        std::fs::write(path, format!("{}\n", now + by))
    }
}

impl KernelFs for FakeKernel {
    fn create_dir(&self, path: &Path) -> io::Result<()> {
        if !self.is_entry(path) {
            return std::fs::create_dir(path);
        }
        {
            let mut faults = self.faults();
            if faults.no_provider {
                return Err(os_err(libc::ENXIO));
            }
            if faults.mkdir_busy > 0 {
                faults.mkdir_busy -= 1;
                return Err(os_err(libc::EBUSY));
            }
        }
        std::fs::create_dir(path)?;
        let provider = self.faults().provider_name.unwrap_or(match self.tee {
            Tee::Tdx => "tdx_guest",
            Tee::Snp => "sev_guest",
        });
        std::fs::write(path.join("provider"), format!("{provider}\n"))?;
        std::fs::write(path.join("generation"), "0\n")?;
        let mut attributes = vec!["inblob", "outblob"];
        if self.tee == Tee::Snp {
            attributes.extend(["auxblob", "privlevel", "privlevel_floor"]);
        }
        for name in attributes {
            std::fs::write(path.join(name), [])?;
        }
        self.state().entries_created += 1;
        Ok(())
    }

    fn remove_dir(&self, path: &Path) -> io::Result<()> {
        if self.is_entry(path) {
            // configfs removes an item's attributes with it.
            for entry in std::fs::read_dir(path)? {
                std::fs::remove_file(entry?.path())?;
            }
            self.state().inblobs.remove(path);
        }
        std::fs::remove_dir(path)
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        if path == self.paths().rtmr3 {
            return Ok(self.state().rtmr3.to_vec());
        }
        match self.attribute(path) {
            Some((entry, "outblob")) => {
                if !self.state().inblobs.contains_key(&entry) {
                    return Err(os_err(libc::EINVAL));
                }
                let mut faults = self.faults();
                if faults.outblob_busy > 0 {
                    faults.outblob_busy -= 1;
                    return Err(os_err(libc::EBUSY));
                }
                let blob = match self.tee {
                    Tee::Tdx => TDX_QUOTE,
                    Tee::Snp => SNP_REPORT,
                };
                let len = faults.truncate_outblob.unwrap_or(blob.len());
                Ok(blob[..len].to_vec())
            }
            Some((entry, "auxblob")) => {
                if !self.state().inblobs.contains_key(&entry) {
                    return Err(os_err(libc::EINVAL));
                }
                Ok(self.cert_table())
            }
            _ => std::fs::read(path),
        }
    }

    fn write(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        if path == self.paths().rtmr3 {
            if data.len() != 48 {
                return Err(os_err(libc::EINVAL));
            }
            let mut state = self.state();
            let mut h = Sha384::new();
            h.update(state.rtmr3);
            h.update(data);
            state.rtmr3 = h.finalize().into();
            return Ok(());
        }
        match self.attribute(path) {
            Some((entry, "inblob")) => {
                if data.len() > 64 {
                    return Err(os_err(libc::EINVAL));
                }
                self.state().inblobs.insert(entry.clone(), data.to_vec());
                let raced = {
                    let mut faults = self.faults();
                    let raced = faults.races > 0;
                    faults.races = faults.races.saturating_sub(1);
                    raced
                };
                self.bump_generation(&entry, if raced { 2 } else { 1 })
            }
            Some((entry, "privlevel")) => {
                let level: u32 = String::from_utf8_lossy(data).trim().parse().unwrap_or(99);
                if level > 3 {
                    return Err(os_err(libc::EINVAL));
                }
                self.bump_generation(&entry, 1)
            }
            Some((_, "provider" | "generation" | "outblob" | "auxblob" | "privlevel_floor")) => {
                Err(os_err(libc::EACCES))
            }
            _ => std::fs::write(path, data),
        }
    }

    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }
}

/// `TDX_CMD_GET_REPORT0` as the tdx_guest driver answers it.
struct FakeTdxDevice(Arc<FakeKernel>, PathBuf);

impl TdxDevice for FakeTdxDevice {
    fn get_report0(&self, req: &mut TdxReportReq) -> io::Result<()> {
        let mut faults = self.0.faults();
        self.0.state().tdx_calls += 1;
        if faults.tdx_busy > 0 {
            faults.tdx_busy -= 1;
            return Err(os_err(libc::EBUSY));
        }
        req.tdreport = td_report_for(&req.reportdata);
        if faults.tdreport_other_td {
            req.tdreport[512 + 352] ^= 0x01; // RTMR3
        }
        Ok(())
    }

    fn path(&self) -> &Path {
        &self.1
    }
}

/// `SNP_GET_EXT_REPORT` as the sev-guest driver answers it.
struct FakeSevDevice(Arc<FakeKernel>, PathBuf);

impl SevGuestDevice for FakeSevDevice {
    fn get_ext_report(
        &self,
        req: &mut SnpExtReportReq,
        resp: &mut SnpReportResp,
        certs: &mut [u8],
    ) -> Result<(), SnpIoctlError> {
        let table = self.0.cert_table();
        let mut faults = self.0.faults();
        {
            let mut state = self.0.state();
            state.sev_buffers.push(certs.len());
            state.sev_vmpls.push(req.data.vmpl);
        }
        assert_eq!(
            req.certs_len as usize,
            certs.len(),
            "certs_len is the buffer's length"
        );
        if faults.sev_busy > 0 {
            faults.sev_busy -= 1;
            return Err(SnpIoctlError {
                errno: libc::EAGAIN,
                exitinfo2: 2 << 32, // SNP_GUEST_VMM_ERR_BUSY
            });
        }
        let needed = faults
            .sev_certs_len
            .unwrap_or_else(|| table.len().div_ceil(4096) as u32 * 4096);
        if certs.len() < needed as usize {
            req.certs_len = needed;
            return Err(SnpIoctlError {
                errno: libc::EIO,
                exitinfo2: 1 << 32, // SNP_GUEST_VMM_ERR_INVALID_LEN
            });
        }
        resp.data[0..4].copy_from_slice(&faults.sev_status.to_le_bytes());
        resp.data[4..8].copy_from_slice(&(SNP_REPORT.len() as u32).to_le_bytes());
        resp.data[0x20..0x20 + SNP_REPORT.len()].copy_from_slice(SNP_REPORT);
        certs[..table.len()].copy_from_slice(&table);
        Ok(())
    }

    fn path(&self) -> &Path {
        &self.1
    }
}

/// The fake kernel as a platform.
struct Fake(Arc<FakeKernel>);

impl Platform for Fake {
    fn fs(&self) -> Arc<dyn KernelFs> {
        self.0.clone()
    }

    fn open_tdx_guest(&self, path: &Path) -> io::Result<Box<dyn TdxDevice>> {
        Ok(Box::new(FakeTdxDevice(self.0.clone(), path.to_path_buf())))
    }

    fn open_sev_guest(&self, path: &Path) -> io::Result<Box<dyn SevGuestDevice>> {
        Ok(Box::new(FakeSevDevice(self.0.clone(), path.to_path_buf())))
    }
}

fn no_wait(attempts: u32) -> RetryPolicy {
    RetryPolicy {
        attempts,
        backoff: Duration::ZERO,
    }
}

fn options(kernel: &FakeKernel) -> SelectOptions {
    SelectOptions {
        paths: kernel.paths(),
        retry: no_wait(3),
        qgs_timeout: Duration::from_secs(20),
        ..SelectOptions::new([0x5a; 48])
    }
}

fn backend(kernel: &Arc<FakeKernel>, choice: TeeChoice) -> Box<dyn EvidenceProvider> {
    match select_on(&Fake(kernel.clone()), choice, &options(kernel)) {
        Ok(tee) => tee,
        Err(e) => panic!("no backend: {e}"),
    }
}

fn error<T>(result: cocoon_guest::Result<T>) -> Error {
    match result {
        Ok(_) => panic!("expected an error"),
        Err(e) => e,
    }
}

fn quote_of(evidence: &Evidence) -> &cocoon_attestation::tdx::TdxQuote {
    match &evidence.parsed {
        ParsedEvidence::Tdx(quote) => quote,
        ParsedEvidence::SevSnp(_) => panic!("expected a TDX quote"),
    }
}

/// Asserts that `text` mentions every one of `parts`.
fn assert_mentions(text: &str, parts: &[&str]) {
    for part in parts {
        assert!(text.contains(part), "{part:?} missing from: {text}");
    }
}

/// What a fresh `choice` backend on `kernel` says about `asked` once `fault` is set.
fn refusal(
    kernel: &Arc<FakeKernel>,
    choice: TeeChoice,
    asked: &[u8; 64],
    fault: impl FnOnce(&mut Faults),
) -> Error {
    let tee = backend(kernel, choice);
    fault(&mut kernel.faults());
    error(tee.attest(asked))
}

fn tdx_configfs() -> Arc<FakeKernel> {
    FakeKernel::new(Tee::Tdx).with_configfs().with_tsm_mr()
}

fn snp_configfs() -> Arc<FakeKernel> {
    FakeKernel::new(Tee::Snp).with_configfs()
}

// ---------------------------------------------------------------------------------------
// configfs-tsm

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

// ---------------------------------------------------------------------------------------
// RTMR3 through tsm-mr

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

// ---------------------------------------------------------------------------------------
// /dev/tdx_guest and the QGS

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

/// A regular file to run the real ioctls on (they answer ENOTTY there).
fn regular_file(dir: &TempDir) -> (HostDevice, String) {
    let path = dir.0.join("not-a-device");
    std::fs::write(&path, [0u8; 16]).unwrap();
    (HostDevice::open(&path).unwrap(), path.display().to_string())
}

#[test]
fn the_real_tdx_ioctl_on_a_regular_file_is_not_a_tdx_device() {
    let dir = TempDir::new();
    let (device, path) = regular_file(&dir);
    let e = error(td_report(&device, &[0; 64], &no_wait(3))).to_string();
    assert_mentions(&e, &[&path, "not a TDX guest device", "0xc4405401"]);
}

// ---------------------------------------------------------------------------------------
// /dev/sev-guest

fn snp_device() -> Arc<FakeKernel> {
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

// ---------------------------------------------------------------------------------------
// Probing and the simulated backends

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
