//! The reference-value manifest of a release, in the format `cocoon-verify manifest
//! sign` signs (`cocoon_attestation::manifest::Manifest`, version 1).
//!
//! Everything in it is computed here from the release's artifacts, except RTMR0, which
//! cannot be predicted yet: the publisher must supply it from a measured boot of the
//! same VM shape, and the command refuses to write a TDX section without it rather than
//! guess.

use std::path::{Path, PathBuf};

use cocoon_attestation::manifest::{Manifest, SnpReference, TdxReference, MANIFEST_VERSION};

use crate::error::{read_file, Error, Result};
use crate::snp::{self, SnpInputs};
use crate::tdx::{self, mrtd::PageAddOrder, rtmr};

/// An image build's boot artifacts: `vmlinuz`, `initrd.img`, `cmdline`.
#[derive(Debug, Clone)]
pub struct ImageDir {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub cmdline: String,
}

impl ImageDir {
    /// Reads `dir/cmdline` (one trailing newline stripped) and checks the other two exist.
    pub fn open(dir: &Path) -> Result<Self> {
        let kernel = dir.join("vmlinuz");
        let initrd = dir.join("initrd.img");
        for (what, path) in [("kernel", &kernel), ("initrd", &initrd)] {
            std::fs::metadata(path).map_err(|source| Error::Read {
                what,
                path: path.clone(),
                source,
            })?;
        }
        let raw = read_file("command line", &dir.join("cmdline"))?;
        let text = String::from_utf8(raw)
            .map_err(|_| Error::Usage(format!("{}/cmdline is not UTF-8", dir.display())))?;
        let cmdline = text.strip_suffix('\n').unwrap_or(&text).to_string();
        if cmdline.contains('\n') {
            return Err(Error::Usage(format!(
                "{}/cmdline has more than one line; the kernel command line is one line",
                dir.display()
            )));
        }
        Ok(Self {
            kernel,
            initrd,
            cmdline,
        })
    }
}

/// The TDX part of a manifest request.
#[derive(Debug, Clone)]
pub struct TdxRequest {
    pub firmware: PathBuf,
    /// RTMR0 from a measured boot of the same VM shape (hex); required.
    pub rtmr0: Option<String>,
    pub order: PageAddOrder,
    pub header: rtmr::KernelHeader,
}

/// The SEV-SNP part: one digest per vCPU count and type.
#[derive(Debug, Clone)]
pub struct SnpRequest {
    pub ovmf: PathBuf,
    pub vcpus: Vec<u32>,
    pub vcpu_types: Vec<String>,
    pub guest_features: u64,
}

/// Everything `cocoon-measure manifest` needs.
#[derive(Debug, Clone)]
pub struct ManifestRequest {
    pub image_dir: PathBuf,
    pub tdx: Option<TdxRequest>,
    pub snp: Option<SnpRequest>,
    pub image: String,
    pub release: u64,
    pub not_after: String,
    pub config_digests: Vec<String>,
}

fn hex48(name: &str, value: &str) -> Result<String> {
    let lower = value.trim().to_ascii_lowercase();
    match hex::decode(&lower) {
        Ok(b) if b.len() == 48 => Ok(lower),
        _ => Err(Error::Usage(format!(
            "{name} '{value}' is not 48 bytes of hex"
        ))),
    }
}

/// Computes the reference values and returns a manifest that passed `validate()`.
pub fn build(req: &ManifestRequest) -> Result<Manifest> {
    if req.tdx.is_none() && req.snp.is_none() {
        return Err(Error::Usage(
            "give --tdx-firmware and/or --snp-ovmf: a manifest must pin at least one TEE".into(),
        ));
    }
    let dir = ImageDir::open(&req.image_dir)?;
    let tdx = req
        .tdx
        .as_ref()
        .map(|t| tdx_reference(&dir, t))
        .transpose()?;
    let sev_snp = req
        .snp
        .as_ref()
        .map(|s| snp_reference(&dir, s))
        .transpose()?;
    let config_digests = req
        .config_digests
        .iter()
        .map(|d| hex48("--config-digest", d))
        .collect::<Result<_>>()?;
    let manifest = Manifest {
        version: MANIFEST_VERSION,
        image: req.image.clone(),
        release: req.release,
        not_after: req.not_after.clone(),
        tdx,
        sev_snp,
        config_digests,
    };
    manifest.validate()?;
    Ok(manifest)
}

fn tdx_reference(dir: &ImageDir, t: &TdxRequest) -> Result<TdxReference> {
    let rtmr0 = match &t.rtmr0 {
        Some(v) => hex48("--tdx-rtmr0", v)?,
        None => return Err(Error::Rtmr0NotPredicted(rtmr::RTMR0_NOT_PREDICTED)),
    };
    let kernel = read_file("kernel", &dir.kernel)?;
    let initrd = read_file("initrd", &dir.initrd)?;
    let boot = rtmr::DirectBoot {
        kernel: &kernel,
        initrd: Some(&initrd),
        cmdline: &dir.cmdline,
        header: t.header,
    };
    let (p, _) = tdx::predict(&t.firmware, Some(&boot), t.order)?;
    let missing = || Error::Usage("internal: a direct boot always predicts RTMR1/RTMR2".into());
    Ok(TdxReference {
        mrtd: p.mrtd,
        rtmr0,
        rtmr1: p.rtmr1.ok_or_else(missing)?,
        rtmr2: p.rtmr2.ok_or_else(missing)?,
        td_attributes: None,
        xfam: None,
    })
}

fn snp_reference(dir: &ImageDir, s: &SnpRequest) -> Result<SnpReference> {
    if s.vcpus.is_empty() || s.vcpu_types.is_empty() {
        return Err(Error::Usage(
            "--snp-ovmf needs at least one --snp-vcpus count and one --snp-vcpu-type".into(),
        ));
    }
    let mut measurements = Vec::new();
    for vcpu_type in &s.vcpu_types {
        for vcpus in &s.vcpus {
            let digest = snp::launch_digest(&SnpInputs {
                ovmf: s.ovmf.clone(),
                vcpus: *vcpus,
                vcpu_type: vcpu_type.clone(),
                guest_features: s.guest_features,
                kernel: Some(dir.kernel.clone()),
                initrd: Some(dir.initrd.clone()),
                append: Some(dir.cmdline.clone()),
            })?;
            let digest = hex::encode(digest);
            if !measurements.contains(&digest) {
                measurements.push(digest);
            }
        }
    }
    Ok(SnpReference {
        measurements,
        min_tcb: None,
    })
}
