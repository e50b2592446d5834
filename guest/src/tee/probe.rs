//! Choosing the evidence backend (`--tee`).
//!
//! `auto` probes in the order the interfaces supersede each other: configfs-tsm (Linux
//! ≥ 6.7, both TEEs; its `provider` says which), then `/dev/tdx_guest` with the QGS,
//! then `/dev/sev-guest`. It never falls back to simulated evidence: a guest that meant
//! to run in a TEE and silently served development evidence would be worse than one that
//! does not start, so without an interface it fails and lists what it tried.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use cocoon_attestation::evidence::EvidenceKind;

use super::configfs_tsm::{ConfigfsTee, ConfigfsTsm};
use super::paths::TeePaths;
use super::platform::{Host, KernelFs, Platform, RetryPolicy};
use super::qgs::QgsClient;
use super::sev_guest::SevGuestTee;
#[cfg(feature = "simulated")]
use super::simulated::{SimulatedSnpTee, SimulatedTee};
use super::tdx_guest::TdxGuestTee;
use super::tsm_mr::TsmMrRtmr;
use super::EvidenceProvider;
use crate::{Error, Result};

/// The `--tee` choices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TeeChoice {
    /// Probe configfs-tsm (its provider decides TDX or SEV-SNP), then /dev/tdx_guest,
    /// then /dev/sev-guest; fail, listing what was tried, if there is none. Never falls
    /// back to simulated evidence.
    Auto,
    /// Intel TDX: configfs-tsm (provider tdx_guest), else /dev/tdx_guest with the QGS
    /// over vsock; RTMR3 through tsm-mr (Linux ≥ 6.16).
    Tdx,
    /// AMD SEV-SNP: configfs-tsm (provider sev_guest), else /dev/sev-guest
    /// (SNP_GET_EXT_REPORT).
    SevSnp,
    /// TDX v4 quotes from the development DCAP PKI (public seed): no TEE, development only.
    #[cfg(feature = "simulated")]
    Simulated,
    /// An Azure SEV-SNP confidential VM: the paravisor's HCL report from the vTPM
    /// (`--vtpm`, default /dev/tpmrm0) and quotes by its attestation key.
    AzureSevSnp,
    /// Azure's layout on a software TPM (`--vtpm`, swtpm): the guest provisions an RSA AK
    /// and an HCL report around a development SEV-SNP report, then reads them back as on
    /// Azure. No TEE.
    #[cfg(feature = "simulated")]
    SimulatedAzureSevSnp,
    /// SEV-SNP v3 reports from the development ARK/ASK/VCEK (public seed), with quotes
    /// from the vTPM `--vtpm` names (swtpm in development): no TEE.
    #[cfg(feature = "simulated")]
    SimulatedVtpm,
    /// SEV-SNP v3 reports from the development ARK/ASK/VCEK (public seed): no TEE.
    #[cfg(feature = "simulated")]
    SimulatedSevSnp,
}

/// Everything a backend needs besides the choice.
#[derive(Debug, Clone)]
pub struct SelectOptions {
    pub paths: TeePaths,
    pub retry: RetryPolicy,
    /// Bound on each read and write to the QGS.
    pub qgs_timeout: Duration,
    /// SEV-SNP VMPL to request; `None` leaves configfs-tsm at its default and asks the
    /// ioctl for VMPL 0.
    pub snp_vmpl: Option<u32>,
    /// Simulated backends only: set the debug bit in the evidence.
    #[cfg(feature = "simulated")]
    pub simulated_debug: bool,
    /// Simulated SEV-SNP only: attach no certificate table.
    #[cfg(feature = "simulated")]
    pub simulated_snp_without_certificates: bool,
    /// Simulated backends only: the boot measurements to report.
    #[cfg(feature = "simulated")]
    pub simulated_boot: cocoon_attestation_dev::SimulatedBoot,
    /// The config digest the launcher put into HOST_DATA (simulated SEV-SNP plays the
    /// launcher with it).
    pub launch_config_digest: [u8; 48],
    /// A vTPM to quote next to the hardware evidence (`--vtpm`).
    pub vtpm: Option<super::vtpm::VtpmEndpoint>,
    /// The SHA-256 PCRs its quotes cover.
    pub vtpm_pcrs: Vec<u8>,
}

impl SelectOptions {
    /// The kernel's paths and default retries, for a guest launched for `config_digest`.
    pub fn new(config_digest: [u8; 48]) -> Self {
        Self {
            paths: TeePaths::default(),
            retry: RetryPolicy::default(),
            qgs_timeout: Duration::from_secs(60),
            snp_vmpl: None,
            #[cfg(feature = "simulated")]
            simulated_debug: false,
            #[cfg(feature = "simulated")]
            simulated_snp_without_certificates: false,
            #[cfg(feature = "simulated")]
            simulated_boot: Default::default(),
            launch_config_digest: config_digest,
            vtpm: None,
            vtpm_pcrs: super::vtpm::DEFAULT_QUOTED_PCRS.to_vec(),
        }
    }
}

/// The backend for `choice` on the running kernel.
pub fn select(choice: TeeChoice, options: &SelectOptions) -> Result<Box<dyn EvidenceProvider>> {
    select_on(&Host, choice, options)
}

/// The backend for `choice` on `platform`.
pub fn select_on(
    platform: &dyn Platform,
    choice: TeeChoice,
    options: &SelectOptions,
) -> Result<Box<dyn EvidenceProvider>> {
    let pcrs = &options.vtpm_pcrs;
    match choice {
        TeeChoice::AzureSevSnp => {
            let endpoint = options
                .vtpm
                .clone()
                .unwrap_or_else(|| super::vtpm::VtpmEndpoint::Device("/dev/tpmrm0".into()));
            return Ok(Box::new(super::vtpm::azure::AzureVtpmTee::new(
                &endpoint, pcrs,
            )?));
        }
        #[cfg(feature = "simulated")]
        TeeChoice::SimulatedAzureSevSnp => {
            let endpoint = options.vtpm.as_ref().ok_or_else(|| {
                Error::Tee(
                    "--tee simulated-azure-sev-snp needs --vtpm (a software TPM: swtpm's \
                     socket as unix:PATH or tcp:HOST:PORT)"
                        .into(),
                )
            })?;
            return Ok(Box::new(super::vtpm::azure::simulated(endpoint, pcrs)?));
        }
        _ => {}
    }
    let tee: Box<dyn EvidenceProvider> = match choice {
        #[cfg(feature = "simulated")]
        TeeChoice::Simulated => Box::new(
            SimulatedTee::new(options.simulated_debug)?.booted(options.simulated_boot.clone()),
        ),
        #[cfg(feature = "simulated")]
        TeeChoice::SimulatedSevSnp | TeeChoice::SimulatedVtpm => Box::new(
            SimulatedSnpTee::new(&options.launch_config_digest, options.simulated_debug)?
                .with_certificates(!options.simulated_snp_without_certificates)
                .booted(&options.simulated_boot),
        ),
        TeeChoice::Auto | TeeChoice::Tdx | TeeChoice::SevSnp => probe(platform, choice, options)?,
        TeeChoice::AzureSevSnp => unreachable_choice()?,
        #[cfg(feature = "simulated")]
        TeeChoice::SimulatedAzureSevSnp => unreachable_choice()?,
    };
    #[cfg(feature = "simulated")]
    if choice == TeeChoice::SimulatedVtpm && options.vtpm.is_none() {
        return Err(Error::Tee(
            "--tee simulated-vtpm needs --vtpm (a software TPM: swtpm's socket as \
             unix:PATH or tcp:HOST:PORT)"
                .into(),
        ));
    }
    match &options.vtpm {
        Some(endpoint) => Ok(Box::new(super::vtpm::VtpmTee::new(
            tee,
            endpoint,
            &options.vtpm_pcrs,
        )?)),
        None => Ok(tee),
    }
}

/// The choices `select_on` returns for before it gets here.
fn unreachable_choice() -> Result<Box<dyn EvidenceProvider>> {
    Err(Error::Tee(
        "internal: an Azure choice reached the generic backends".into(),
    ))
}

fn wants(choice: TeeChoice, kind: EvidenceKind) -> bool {
    match choice {
        TeeChoice::Auto => true,
        TeeChoice::Tdx => kind == EvidenceKind::Tdx,
        TeeChoice::SevSnp | TeeChoice::AzureSevSnp => kind == EvidenceKind::SevSnp,
        #[cfg(feature = "simulated")]
        TeeChoice::Simulated
        | TeeChoice::SimulatedSevSnp
        | TeeChoice::SimulatedVtpm
        | TeeChoice::SimulatedAzureSevSnp => false,
    }
}

fn probe(
    platform: &dyn Platform,
    choice: TeeChoice,
    options: &SelectOptions,
) -> Result<Box<dyn EvidenceProvider>> {
    let fs: Arc<dyn KernelFs> = platform.fs();
    let paths = &options.paths;
    let rtmr3 = || TsmMrRtmr::new(fs.clone(), &paths.rtmr3);
    let mut tried = Vec::new();

    let tsm = ConfigfsTsm::new(fs.clone(), &paths.tsm_report_dir, options.retry);
    let dir = paths.tsm_report_dir.display();
    if !tsm.is_present() {
        tried.push(format!("configfs-tsm {dir}: not present"));
    } else {
        match tsm.provider() {
            Ok(provider) => match provider.kind() {
                Some(kind) if wants(choice, kind) => {
                    tracing::info!(
                        provider = provider.name(),
                        "evidence from configfs-tsm {dir}"
                    );
                    return Ok(match kind {
                        EvidenceKind::Tdx => Box::new(ConfigfsTee::tdx(tsm, rtmr3())),
                        _ => Box::new(ConfigfsTee::sev_snp(tsm, options.snp_vmpl)),
                    });
                }
                Some(kind) => {
                    return Err(Error::TeeInterface {
                        interface: dir.to_string(),
                        detail: format!(
                            "--tee {} was asked for, but the configfs-tsm provider is {}: \
                             this is {} guest",
                            clap::ValueEnum::to_possible_value(&choice)
                                .map(|v| v.get_name().to_string())
                                .unwrap_or_default(),
                            provider.name(),
                            kind.tee_name()
                        ),
                    })
                }
                None => tried.push(format!(
                    "configfs-tsm {dir}: provider {} is not supported (tdx_guest, sev_guest)",
                    provider.name()
                )),
            },
            Err(e) => tried.push(format!("configfs-tsm: {e}")),
        }
    }

    if wants(choice, EvidenceKind::Tdx) {
        let path = &paths.tdx_guest;
        if let Some(device) = open_device(&*fs, path, &mut tried, |p| platform.open_tdx_guest(p)) {
            tracing::info!("evidence from {} and the {}", path.display(), paths.qgs);
            return Ok(Box::new(TdxGuestTee::new(
                device,
                QgsClient::new(paths.qgs.clone(), options.qgs_timeout),
                rtmr3(),
                options.retry,
            )));
        }
    }

    if wants(choice, EvidenceKind::SevSnp) {
        let path = &paths.sev_guest;
        if let Some(device) = open_device(&*fs, path, &mut tried, |p| platform.open_sev_guest(p)) {
            tracing::info!("evidence from {}", path.display());
            return Ok(Box::new(SevGuestTee::new(
                device,
                options.snp_vmpl.unwrap_or(0),
                options.retry,
            )));
        }
    }

    Err(Error::NoTee {
        tried: tried.join("; "),
    })
}

/// The device at `path`, or `None` with the reason added to `tried`.
fn open_device<D>(
    fs: &dyn KernelFs,
    path: &Path,
    tried: &mut Vec<String>,
    open: impl FnOnce(&Path) -> std::io::Result<D>,
) -> Option<D> {
    if !fs.exists(path) {
        tried.push(format!("{}: not present", path.display()));
        return None;
    }
    open(path)
        .map_err(|e| tried.push(format!("{}: cannot open: {e}", path.display())))
        .ok()
}
