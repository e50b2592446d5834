//! The command-line arguments that select what a client accepts, shared by
//! `cocoon-verify` and `cocoon-client` so both read policies and manifests the same way.

use std::path::PathBuf;

use crate::manifest::{load_policy, Manifest, ManifestPublicKey};
use crate::policy::Policy;
use crate::Result;

/// `--policy`, `--manifest`, `--manifest-key`, `--allow-debug`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct PolicyArgs {
    /// Reference-value policy (TOML or JSON); default: debug off, UpToDate only, any
    /// measurement.
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
}

impl PolicyArgs {
    /// The policy these arguments select, and the manifest it came from (if any); the
    /// manifest must be unexpired now and at least `--min-release`.
    pub fn load(&self) -> Result<(Policy, Option<Manifest>)> {
        let keys = ManifestPublicKey::from_args(&self.manifest_key)?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let (mut policy, manifest) = load_policy(
            self.policy.as_deref(),
            self.manifest.as_deref().map(|m| (m, keys.as_slice())),
            now,
            self.min_release,
        )?;
        policy.allow_debug |= self.allow_debug;
        Ok((policy, manifest))
    }
}
