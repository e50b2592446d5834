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
        vtpm_pcrs: Default::default(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tdx::authenticode::tests::sample_pe;
    use crate::tdx::tdvf::tests::{image_with_sections, BFV, HOB};
    use cocoon_attestation::manifest::ManifestSigningKey;

    fn setup() -> (PathBuf, PathBuf) {
        let dir =
            std::env::temp_dir().join(format!("cocoon-measure-manifest-{}", std::process::id()));
        let image = dir.join("image");
        std::fs::create_dir_all(&image).unwrap();
        std::fs::write(image.join("vmlinuz"), sample_pe(0)).unwrap();
        std::fs::write(image.join("initrd.img"), b"initrd").unwrap();
        std::fs::write(image.join("cmdline"), "console=ttyS0 root=/dev/vda\n").unwrap();
        let fw = dir.join("tdvf.fd");
        std::fs::write(&fw, image_with_sections(&[BFV, HOB])).unwrap();
        (image, fw)
    }

    fn request(image: PathBuf, fw: PathBuf, rtmr0: Option<String>) -> ManifestRequest {
        ManifestRequest {
            image_dir: image,
            tdx: Some(TdxRequest {
                firmware: fw,
                rtmr0,
                order: PageAddOrder::SinglePass,
                header: rtmr::KernelHeader::Unpatched,
            }),
            snp: None,
            image: "cocoon-guest test".into(),
            release: 3,
            not_after: "2030-01-01T00:00:00Z".into(),
            config_digests: vec!["AB".repeat(48)],
        }
    }

    #[test]
    fn written_manifest_signs_and_verifies_with_the_library() {
        let (image, fw) = setup();
        let dir = ImageDir::open(&image).unwrap();
        assert_eq!(
            dir.cmdline, "console=ttyS0 root=/dev/vda",
            "one trailing newline stripped"
        );

        let err = build(&request(image.clone(), fw.clone(), None))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("RTMR0 is not predicted") && err.contains("--tdx-rtmr0"),
            "{err}"
        );
        let err = build(&request(image.clone(), fw.clone(), Some("12".into()))).unwrap_err();
        assert!(err.to_string().contains("not 48 bytes"), "{err}");

        let m = build(&request(image.clone(), fw.clone(), Some("CD".repeat(48)))).unwrap();
        let tdx = m.tdx.clone().unwrap();
        assert_eq!(tdx.rtmr0, "cd".repeat(48));
        assert_eq!(m.config_digests, vec!["ab".repeat(48)]);
        // What `cocoon-verify manifest sign` does with the file: from_json, sign, open.
        let json = m.to_json().unwrap();
        let parsed = Manifest::from_json(&json).unwrap();
        let (key, _) = ManifestSigningKey::generate().unwrap();
        let envelope = parsed.sign(&key).unwrap();
        let opened = Manifest::open(&envelope, &[key.public_key()]).unwrap();
        assert_eq!(opened, m);
        // The CLI writes the same manifest.
        let out = image.parent().unwrap().join("manifest.json");
        let cli = crate::cli::Cli::try_parse_from_args(&[
            "manifest",
            "--image-dir",
            image.to_str().unwrap(),
            "--tdx-firmware",
            fw.to_str().unwrap(),
            "--tdx-rtmr0",
            &"cd".repeat(48),
            "--image",
            "cocoon-guest test",
            "--release",
            "3",
            "--not-after",
            "2030-01-01T00:00:00Z",
            "--config-digest",
            &"ab".repeat(48),
            "-o",
            out.to_str().unwrap(),
        ]);
        crate::cli::run(cli).unwrap();
        assert_eq!(
            Manifest::from_json(&std::fs::read(&out).unwrap()).unwrap(),
            m
        );
        std::fs::remove_dir_all(image.parent().unwrap()).unwrap();
    }
}
