//! The command-line arguments that select what a client accepts and where it gets
//! collateral, shared by `cocoon-verify` and `cocoon-client` so both build their
//! [`Verifier`] the same way.

use std::path::PathBuf;
use std::sync::Arc;

use cocoon_attestation::fetch::{AMD_KDS_URL, INTEL_PCS_URL};
use cocoon_attestation::manifest::{load_policy, Manifest, ManifestPublicKey};
use cocoon_attestation::snp::verify::TrustedArk;
use cocoon_attestation::tdx::dcap::TdxRoot;
use cocoon_attestation::{CollateralStore, Policy, Result, TrustAnchors, Verifier};

use cocoon_billing::ton_http::{TonHttpClient, TonHttpConfig};

use crate::fetcher::CollateralFetcher;
use crate::registry::RegistrySource;
use crate::session::Attestor;

/// `--policy`, `--manifest`, `--manifest-key`, `--allow-debug`, `--accept-any-image`,
/// `--allow-simulated`. Also read from configuration files (the host agent's
/// `[attestation]` section), with the same names in snake_case.
#[derive(Debug, Clone, Default, clap::Args, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyArgs {
    /// Reference-value policy (TOML or JSON); default: debug off, UpToDate only, and
    /// nothing accepted until the image and config are pinned (here or by --manifest).
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// Signed image manifest (DSSE envelope written by the image build): accept only the
    /// measurements and runtime configs it lists. Needs --manifest-key.
    #[arg(long, value_name = "FILE", requires = "manifest_key")]
    pub manifest: Option<PathBuf>,
    /// Public key trusted to sign manifests: ed25519:BASE64, or a file holding it.
    /// Repeat to trust several publishers.
    #[arg(long, value_name = "KEY", requires = "manifest")]
    pub manifest_key: Vec<String>,
    /// Refuse a manifest whose release number is below N (the newest release you have
    /// seen), so an old, withdrawn image cannot be served with its old manifest.
    #[arg(long, value_name = "N", requires = "manifest")]
    pub min_release: Option<u64>,
    /// Accept a guest launched with the DEBUG attribute (its memory is readable by the host).
    #[arg(long)]
    pub allow_debug: bool,
    /// DANGER: accept any image and any config in a genuine TEE when no manifest or policy
    /// pins them (an operator's own prompt-logging image would pass).
    #[arg(long)]
    pub accept_any_image: bool,
    /// Also trust the development roots (SIMULATED evidence, no TEE). Development only.
    #[arg(long)]
    pub allow_simulated: bool,
    /// DANGER: also trust this TDX DCAP root certificate (PEM or DER) as if it were
    /// Intel's, e.g. a test PKI. Evidence it verifies is reported as not vendor-rooted.
    #[arg(long, value_name = "FILE")]
    pub dangerous_trust_tdx_root: Vec<PathBuf>,
    /// DANGER: also trust this AMD root key certificate (PEM or DER) as if it were AMD's.
    #[arg(long, value_name = "FILE")]
    pub dangerous_trust_amd_ark: Vec<PathBuf>,
    /// Refuse a guest whose evidence binds no GPU evidence (one serving from the CPU).
    /// GPU evidence that is bound is verified either way.
    #[arg(long)]
    pub require_gpu: bool,
    /// Refuse evidence without a vTPM quote (a guest started without --vtpm).
    #[arg(long)]
    pub require_vtpm: bool,
    /// A SHA-256 PCR the vTPM quote must cover, INDEX, or with the value it must have,
    /// INDEX=HEX (repeatable; one index repeated with several values accepts any of
    /// them). Implies --require-vtpm.
    #[arg(long, value_name = "INDEX[=HEX]")]
    pub vtpm_pcr: Vec<String>,
    /// NVIDIA reference-integrity manifest (driver or VBIOS RIM, signed SWID XML) the
    /// GPUs' measurements must match (repeatable); without one they are verified as signed
    /// but not compared.
    #[arg(long, value_name = "FILE")]
    pub gpu_rim: Vec<PathBuf>,
    /// A publisher's on-chain registry (billing/REGISTRY.md; raw 0:HEX or user-friendly
    /// address) as a source of reference values: the guest's image (TDX MRTD+RTMR0-2 or
    /// SEV-SNP MEASUREMENT), model SHA-256 (and dm-verity root) and price table must all
    /// be registered there now, else it is refused naming the registry and what is
    /// missing. Alone it pins the image and config (no --manifest or --policy needed);
    /// with them, both must accept. Not read from configuration files.
    #[arg(long, value_name = "ADDRESS")]
    #[serde(skip)]
    pub registry: Option<String>,
    /// The TON HTTP API (toncenter v2 routes) --registry is read through: toncenter, or
    /// the host agent's loopback API over its local chain (`[billing.local_chain]
    /// api_listen`). Default: $COCOON_TON_API, else https://toncenter.com (mainnet).
    #[arg(long, value_name = "URL", requires = "registry")]
    #[serde(skip)]
    pub registry_api: Option<String>,
}

impl PolicyArgs {
    /// The policy these arguments select, and the manifest it came from (if any); the
    /// manifest must be unexpired now and at least `--min-release`.
    pub fn load(&self) -> Result<(Policy, Option<Manifest>)> {
        let keys = ManifestPublicKey::from_args(&self.manifest_key)?;
        let (mut policy, manifest) = load_policy(
            self.policy.as_deref(),
            self.manifest.as_deref().map(|m| (m, keys.as_slice())),
            crate::fetcher::unix_now(),
            self.min_release,
        )?;
        policy.allow_debug |= self.allow_debug;
        policy.accept_any_image |= self.accept_any_image;
        policy.require_gpu |= self.require_gpu;
        policy.vtpm.require |= self.require_vtpm;
        for rule in &self.vtpm_pcr {
            let (index, value) = match rule.split_once('=') {
                Some((i, v)) => (i, Some(v.to_ascii_lowercase())),
                None => (rule.as_str(), None),
            };
            let accepted = policy.vtpm.pcrs.entry(index.to_string()).or_default();
            accepted.extend(value);
        }
        policy.validate()?;
        Ok((policy, manifest))
    }

    /// The registry of `--registry`, read through `--registry-api` (`None` without it).
    pub fn registry_source(&self) -> Result<Option<Arc<RegistrySource>>> {
        let Some(text) = &self.registry else {
            return Ok(None);
        };
        let address = cocoon_billing::address::parse_address(text).map_err(|e| {
            cocoon_attestation::Error::Malformed {
                what: "--registry address",
                detail: format!("'{text}': {e}"),
            }
        })?;
        let url = self
            .registry_api
            .clone()
            .or_else(|| std::env::var("COCOON_TON_API").ok())
            .unwrap_or_else(|| "https://toncenter.com".to_string());
        let chain = TonHttpClient::new(TonHttpConfig::new(url.clone())).map_err(|e| {
            cocoon_attestation::Error::Malformed {
                what: "--registry-api",
                detail: format!("{url}: {e}"),
            }
        })?;
        Ok(Some(Arc::new(RegistrySource::new(
            address,
            Arc::new(chain),
        ))))
    }

    /// The RIM files of `--gpu-rim`, read (their signatures are checked at each
    /// verification, at its time).
    pub fn gpu_rims(&self) -> Result<Vec<(String, Vec<u8>)>> {
        self.gpu_rim
            .iter()
            .map(|path| {
                let xml =
                    std::fs::read(path).map_err(|e| cocoon_attestation::Error::Malformed {
                        what: "GPU RIM file",
                        detail: format!("cannot read {}: {e}", path.display()),
                    })?;
                cocoon_attestation::gpu::Rim::parse(&xml)?;
                Ok((path.display().to_string(), xml))
            })
            .collect()
    }

    /// The anchors: Intel's, AMD's and NVIDIA's, plus the development roots with
    /// --allow-simulated.
    pub fn anchors(&self) -> Result<TrustAnchors> {
        let mut anchors = TrustAnchors::vendor();
        if self.allow_simulated {
            anchors = anchors.with(cocoon_attestation_dev::anchors()?);
        }
        for path in &self.dangerous_trust_tdx_root {
            anchors = anchors.with_tdx_root(TdxRoot {
                der: read_certificate(path)?,
                simulated: true,
            });
        }
        for path in &self.dangerous_trust_amd_ark {
            anchors = anchors.with_snp_ark(TrustedArk {
                product: "operator-supplied root",
                der: read_certificate(path)?,
                simulated: true,
            });
        }
        Ok(anchors)
    }
}

/// A certificate file, PEM (the first certificate) or DER.
fn read_certificate(path: &std::path::Path) -> Result<Vec<u8>> {
    let bytes = std::fs::read(path).map_err(|e| cocoon_attestation::Error::Malformed {
        what: "trust anchor file",
        detail: format!("cannot read {}: {e}", path.display()),
    })?;
    let der = cocoon_attestation::pem::der_or_pem(bytes);
    x509_parser::parse_x509_certificate(&der).map_err(|e| {
        cocoon_attestation::Error::Malformed {
            what: "trust anchor file",
            detail: format!("{} is not an X.509 certificate: {e}", path.display()),
        }
    })?;
    Ok(der)
}

/// `--pccs`, `--kds`, `--collateral`, `--cache-dir`: where an endpoint check gets the
/// collateral its evidence needs. Also read from configuration files (the host agent's
/// `[collateral]` section), with the same names in snake_case and the same defaults.
#[derive(Debug, Clone, clap::Args, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CollateralArgs {
    /// Intel PCS or a PCCS to fetch TDX collateral (TCB info, QE identity, CRLs) from.
    #[arg(long, value_name = "URL", default_value = INTEL_PCS_URL)]
    pub pccs: String,
    /// AMD KDS (or a mirror) for SEV-SNP certificates a guest did not attach.
    #[arg(long, value_name = "URL", default_value = AMD_KDS_URL)]
    pub kds: String,
    /// TDX collateral bundle files (dcap-qvl JSON) to use before fetching (repeatable).
    #[arg(long, value_name = "FILE")]
    pub collateral: Vec<PathBuf>,
    /// Cache fetched collateral here until its earliest nextUpdate.
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Never fetch: refuse evidence whose collateral is not in a --collateral bundle.
    #[arg(long)]
    pub offline: bool,
}

impl Default for CollateralArgs {
    /// What the command line defaults to: Intel PCS and AMD KDS, no bundles, no cache.
    fn default() -> Self {
        Self {
            pccs: INTEL_PCS_URL.to_string(),
            kds: AMD_KDS_URL.to_string(),
            collateral: Vec::new(),
            cache_dir: None,
            offline: false,
        }
    }
}

/// The verifier and fetcher an endpoint check runs with, and the manifest its policy came
/// from (loaded and its signature checked once).
pub fn attestor(
    policy: &PolicyArgs,
    collateral: &CollateralArgs,
) -> Result<(Attestor, Option<Manifest>)> {
    let (mut policy_value, manifest) = policy.load()?;
    let registry = policy.registry_source()?;
    if registry.is_some() {
        // The registry pins the image and the config: the session check refuses a guest
        // whose values it does not list (see `crate::registry`).
        policy_value.accept_any_image = true;
    }
    let store = Arc::new(CollateralStore::new());
    for file in &collateral.collateral {
        store.add_tdx_bundle_file(file)?;
    }
    let mut verifier =
        Verifier::new(policy.anchors()?, policy_value).with_collateral(store.clone());
    if policy.allow_simulated {
        verifier = verifier.with_collateral(Arc::new(cocoon_attestation_dev::DevCollateral));
    }
    let fetcher = (!collateral.offline).then(|| {
        Arc::new(CollateralFetcher {
            pccs: collateral.pccs.clone(),
            kds: collateral.kds.clone(),
            cache_dir: collateral.cache_dir.clone(),
            store,
        })
    });
    let attestor = Attestor {
        verifier: Arc::new(verifier),
        fetcher,
        gpu_rims: Arc::new(policy.gpu_rims()?),
        registry,
    };
    Ok((attestor, manifest))
}

impl Attestor {
    /// [`any_image_warning`] for this attestor: none when a registry pins the image and
    /// config (its `accept_any_image` is the registry's doing, not the user's).
    pub fn any_image_warning(&self) -> Option<String> {
        if self.registry.is_some() {
            return None;
        }
        any_image_warning(self.verifier.policy())
    }
}

/// The warning to print when `--accept-any-image` lifts the reference-value rule while
/// something is indeed unpinned (`None` otherwise).
pub fn any_image_warning(policy: &Policy) -> Option<String> {
    if !policy.accept_any_image {
        return None;
    }
    let mut open: Vec<&str> = Vec::new();
    for name in ["tdx", "sev-snp"]
        .into_iter()
        .flat_map(|tee| policy.unpinned(tee))
    {
        if !open.contains(&name) {
            open.push(name);
        }
    }
    (!open.is_empty()).then(|| {
        format!(
            "WARNING: --accept-any-image: nothing pins {}; ANY software in a genuine TEE will \
             be accepted (an operator's own image that logs prompts included)",
            open.join(", ")
        )
    })
}
