//! The fakes every backend test runs on: the recorded evidence, a fake kernel (configfs-tsm,
//! tsm-mr, the guest devices) in a temporary directory, and the helpers the tests share.

pub use std::collections::HashMap;
pub use std::io::{self, Read, Write};
pub use std::os::unix::net::UnixListener;
pub use std::path::{Path, PathBuf};
pub use std::sync::atomic::{AtomicU32, Ordering};
pub use std::sync::{Arc, Mutex};
pub use std::thread::JoinHandle;
pub use std::time::Duration;

pub use base64::Engine;
pub use cocoon_attestation::evidence::EvidenceKind;
pub use cocoon_attestation::snp::ext_report::CertKind;
pub use cocoon_guest::tee::configfs_tsm::{ConfigfsTee, ConfigfsTsm, TsmProvider};
pub use cocoon_guest::tee::platform::{
    SevGuestDevice, SnpExtReportReq, SnpIoctlError, SnpReportResp, TdxDevice, TdxReportReq,
};
pub use cocoon_guest::tee::qgs::{QgsAddress, QgsClient};
pub use cocoon_guest::tee::sev_guest::SevGuestTee;
pub use cocoon_guest::tee::tdx_guest::td_report;
pub use cocoon_guest::tee::tsm_mr::TsmMrRtmr;
pub use cocoon_guest::tee::{
    select_on, ConfigRegister, Evidence, EvidenceProvider, HostDevice, HostFs, KernelFs,
    ParsedEvidence, Platform, RetryPolicy, SelectOptions, TeeChoice, TeePaths,
};
pub use cocoon_guest::Error;
pub use sha2::{Digest, Sha384};

pub const TDX_QUOTE: &[u8] = include_bytes!("../fixtures/tdx/dcapqvl_tdx_quote_v4.bin");
pub const TDX_QUOTE_V5: &[u8] = include_bytes!("../fixtures/tdx/gotdx_quote_v5_sample.bin");
pub const SNP_REPORT: &[u8] = include_bytes!("../fixtures/snp/gosev_milan_attestation.bin");
pub const MILAN_VCEK: &[u8] = include_bytes!("../fixtures/snp/gosev_milan_vcek.der");
pub const MILAN_ASK_ARK: &str = include_str!("../fixtures/snp/amd_ask_ark_milan.pem");

/// REPORTDATA of the recorded TDX quote: header (48 bytes), then REPORTDATA at offset
/// 520 of the TD report body (Intel's quote layout).
pub fn tdx_report_data() -> [u8; 64] {
    TDX_QUOTE[48 + 520..48 + 584].try_into().unwrap()
}

/// REPORTDATA of the recorded SNP report (offset 0x50, SNP firmware ABI).
pub fn snp_report_data() -> [u8; 64] {
    SNP_REPORT[0x50..0x90].try_into().unwrap()
}

/// The Milan ASK and ARK, DER, from the PEM fixture.
pub fn milan_ask_ark() -> (Vec<u8>, Vec<u8>) {
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
pub fn milan_cert_table() -> Vec<u8> {
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
pub fn td_report_for(report_data: &[u8; 64]) -> [u8; 1024] {
    let body = &TDX_QUOTE[48..48 + 584];
    let mut r = [0u8; 1024];
    r[0] = 0x81;
    r[128..192].copy_from_slice(report_data);
    r[512..912].copy_from_slice(&body[120..520]);
    r
}

/// A directory under the system temp dir, removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> Self {
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

pub fn os_err(code: i32) -> io::Error {
    io::Error::from_raw_os_error(code)
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Tee {
    Tdx,
    Snp,
}

/// What to break, and how often.
#[derive(Default)]
pub struct Faults {
    /// configfs mkdir answers ENXIO (no TSM provider registered).
    pub no_provider: bool,
    /// The `provider` attribute names this instead of the TEE's driver.
    pub provider_name: Option<&'static str>,
    pub mkdir_busy: u32,
    pub outblob_busy: u32,
    /// Writes to `inblob` that another writer follows before we read.
    pub races: u32,
    pub truncate_outblob: Option<usize>,
    /// `auxblob` (and the SNP ioctl's certificate buffer) holds these bytes.
    pub cert_table: Option<Vec<u8>>,
    pub tdx_busy: u32,
    /// The TDREPORT's RTMR3 differs from the recorded quote's.
    pub tdreport_other_td: bool,
    pub sev_busy: u32,
    /// The SNP ioctl asks for this many certificate bytes, whatever the table needs.
    pub sev_certs_len: Option<u32>,
    /// STATUS in MSG_REPORT_RSP.
    pub sev_status: u32,
}

pub struct State {
    pub inblobs: HashMap<PathBuf, Vec<u8>>,
    pub entries_created: u32,
    pub rtmr3: [u8; 48],
    /// Certificate-buffer sizes the SNP ioctl was called with.
    pub sev_buffers: Vec<usize>,
    pub sev_vmpls: Vec<u32>,
    pub tdx_calls: u32,
}

/// The fake kernel: a temp dir with the interfaces that `with_*` created.
pub struct FakeKernel {
    pub dir: TempDir,
    pub tee: Tee,
    pub faults: Mutex<Faults>,
    pub state: Mutex<State>,
}

impl FakeKernel {
    pub fn new(tee: Tee) -> Arc<Self> {
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

    pub fn paths(&self) -> TeePaths {
        let root = &self.dir.0;
        TeePaths {
            tsm_report_dir: root.join("sys/kernel/config/tsm/report"),
            tdx_guest: root.join("dev/tdx_guest"),
            sev_guest: root.join("dev/sev-guest"),
            rtmr3: root.join("sys/class/misc/tdx_guest/measurements/rtmr3:sha384"),
            qgs: QgsAddress::Unix(root.join("qgs.sock")),
        }
    }

    pub fn with_configfs(self: Arc<Self>) -> Arc<Self> {
        std::fs::create_dir_all(self.paths().tsm_report_dir).unwrap();
        self
    }

    pub fn with_tsm_mr(self: Arc<Self>) -> Arc<Self> {
        let path = self.paths().rtmr3;
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, []).unwrap();
        self
    }

    pub fn with_device(self: Arc<Self>) -> Arc<Self> {
        let paths = self.paths();
        let path = match self.tee {
            Tee::Tdx => paths.tdx_guest,
            Tee::Snp => paths.sev_guest,
        };
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, []).unwrap();
        self
    }

    pub fn faults(&self) -> std::sync::MutexGuard<'_, Faults> {
        self.faults.lock().unwrap()
    }

    pub fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }

    /// Report entries still present (the backend must remove every one it made).
    pub fn live_entries(&self) -> usize {
        std::fs::read_dir(self.paths().tsm_report_dir)
            .map(|d| d.count())
            .unwrap_or(0)
    }

    pub fn is_entry(&self, path: &Path) -> bool {
        path.parent() == Some(self.paths().tsm_report_dir.as_path())
    }

    /// The entry and attribute name, for a path inside an entry.
    pub fn attribute<'a>(&self, path: &'a Path) -> Option<(PathBuf, &'a str)> {
        let entry = path.parent()?;
        let name = path.file_name()?.to_str()?;
        self.is_entry(entry).then(|| (entry.to_path_buf(), name))
    }

    pub fn cert_table(&self) -> Vec<u8> {
        self.faults()
            .cert_table
            .clone()
            .unwrap_or_else(milan_cert_table)
    }

    pub fn bump_generation(&self, entry: &Path, by: u64) -> io::Result<()> {
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
pub struct FakeTdxDevice(pub Arc<FakeKernel>, pub PathBuf);

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
pub struct FakeSevDevice(pub Arc<FakeKernel>, pub PathBuf);

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
pub struct Fake(pub Arc<FakeKernel>);

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

pub fn no_wait(attempts: u32) -> RetryPolicy {
    RetryPolicy {
        attempts,
        backoff: Duration::ZERO,
    }
}

pub fn options(kernel: &FakeKernel) -> SelectOptions {
    SelectOptions {
        paths: kernel.paths(),
        retry: no_wait(3),
        qgs_timeout: Duration::from_secs(20),
        ..SelectOptions::new([0x5a; 48])
    }
}

pub fn backend(kernel: &Arc<FakeKernel>, choice: TeeChoice) -> Box<dyn EvidenceProvider> {
    match select_on(&Fake(kernel.clone()), choice, &options(kernel)) {
        Ok(tee) => tee,
        Err(e) => panic!("no backend: {e}"),
    }
}

pub fn error<T>(result: cocoon_guest::Result<T>) -> Error {
    match result {
        Ok(_) => panic!("expected an error"),
        Err(e) => e,
    }
}

pub fn quote_of(evidence: &Evidence) -> &cocoon_attestation::tdx::TdxQuote {
    match &evidence.parsed {
        ParsedEvidence::Tdx(quote) => quote,
        ParsedEvidence::SevSnp(_) => panic!("expected a TDX quote"),
    }
}

/// Asserts that `text` mentions every one of `parts`.
pub fn assert_mentions(text: &str, parts: &[&str]) {
    for part in parts {
        assert!(text.contains(part), "{part:?} missing from: {text}");
    }
}

/// What a fresh `choice` backend on `kernel` says about `asked` once `fault` is set.
pub fn refusal(
    kernel: &Arc<FakeKernel>,
    choice: TeeChoice,
    asked: &[u8; 64],
    fault: impl FnOnce(&mut Faults),
) -> Error {
    let tee = backend(kernel, choice);
    fault(&mut kernel.faults());
    error(tee.attest(asked))
}

pub fn tdx_configfs() -> Arc<FakeKernel> {
    FakeKernel::new(Tee::Tdx).with_configfs().with_tsm_mr()
}

pub fn snp_configfs() -> Arc<FakeKernel> {
    FakeKernel::new(Tee::Snp).with_configfs()
}

/// A regular file to run the real ioctls on (they answer ENOTTY there).
pub fn regular_file(dir: &TempDir) -> (HostDevice, String) {
    let path = dir.0.join("not-a-device");
    std::fs::write(&path, [0u8; 16]).unwrap();
    (HostDevice::open(&path).unwrap(), path.display().to_string())
}
