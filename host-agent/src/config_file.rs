//! What both config files (`vm run`'s and the agent's) share: TOML parsing whose errors
//! name the file, relative paths anchored at the file's directory, and value checks that
//! name the key. One place, so the two files behave alike for an operator.

use std::path::{Path, PathBuf};

use cocoon_client::args::{CollateralArgs, PolicyArgs};
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};

/// Parses `text` (read from `file`); unknown keys are errors when `T` says
/// `deny_unknown_fields`, and the parser's message names the key and the line.
fn parse_toml<T: DeserializeOwned>(file: &Path, text: &str) -> Result<T> {
    toml::from_str(text).map_err(|e| Error::ConfigSyntax {
        file: file.to_path_buf(),
        message: e.to_string().trim_end().to_string(),
    })
}

/// Reads `file` to a string, naming it in the error.
fn read_config(file: &Path) -> Result<String> {
    std::fs::read_to_string(file).map_err(|source| Error::ConfigRead {
        file: file.to_path_buf(),
        source,
    })
}

/// A config file's contents: how its relative paths are anchored and its values checked.
pub trait ConfigFile: DeserializeOwned {
    /// Anchors every relative path at `base` (the file's directory).
    fn resolve_paths(&mut self, base: &Path);
    /// Refuses values the program cannot run with, naming the key.
    fn validate(&self, check: &Checker<'_>) -> Result<()>;
}

/// A loaded, checked config and where it came from.
#[derive(Debug, Clone)]
pub struct Loaded<C> {
    pub file: PathBuf,
    pub config: C,
}

impl<C: ConfigFile> Loaded<C> {
    /// Reads, parses, anchors relative paths and validates `file`.
    pub fn load(file: &Path) -> Result<Self> {
        Self::parse(file, &read_config(file)?)
    }

    /// Like [`Loaded::load`] for text already read (`file` names it in errors and anchors
    /// relative paths).
    pub fn parse(file: &Path, text: &str) -> Result<Self> {
        let mut config: C = parse_toml(file, text)?;
        let base = file.parent().unwrap_or(Path::new("."));
        config.resolve_paths(base);
        config.validate(&Checker { file })?;
        Ok(Self {
            file: file.to_path_buf(),
            config,
        })
    }

    /// Checks more values of this file (those checked when they are used, like files).
    pub fn checker(&self) -> Checker<'_> {
        Checker { file: &self.file }
    }

    /// Names a key of this file in an error.
    pub fn bad(&self, key: &str, message: impl Into<String>) -> Error {
        Checker { file: &self.file }.bad(key, message)
    }
}

/// Builds [`Error::ConfigValue`] for one file.
pub struct Checker<'a> {
    pub(crate) file: &'a Path,
}

impl Checker<'_> {
    pub(crate) fn bad(&self, key: &str, message: impl Into<String>) -> Error {
        Error::ConfigValue {
            file: self.file.to_path_buf(),
            key: key.to_string(),
            message: message.into(),
        }
    }

    pub(crate) fn require(&self, ok: bool, key: &str, message: &str) -> Result<()> {
        if ok {
            Ok(())
        } else {
            Err(self.bad(key, message))
        }
    }

    /// Each `(key, value)` must be at least 1.
    pub(crate) fn positive(&self, values: &[(&str, u64)]) -> Result<()> {
        for (key, value) in values {
            self.require(*value >= 1, key, "must be at least 1")?;
        }
        Ok(())
    }
}

/// Anchors a relative path at `base`.
pub(crate) fn anchor(base: &Path, path: &mut PathBuf) {
    if path.is_relative() {
        *path = base.join(&*path);
    }
}

/// Anchors every path of an attestation policy and its collateral settings at `base`.
pub(crate) fn anchor_policy(base: &Path, policy: &mut PolicyArgs, collateral: &mut CollateralArgs) {
    for path in [&mut policy.policy, &mut policy.manifest]
        .into_iter()
        .flatten()
    {
        anchor(base, path);
    }
    for path in policy
        .dangerous_trust_tdx_root
        .iter_mut()
        .chain(policy.dangerous_trust_amd_ark.iter_mut())
        .chain(policy.gpu_rim.iter_mut())
        .chain(collateral.collateral.iter_mut())
        .chain(collateral.cache_dir.iter_mut())
    {
        anchor(base, path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn policy_paths_are_taken_from_the_config_files_directory() {
        let mut policy = PolicyArgs {
            policy: Some(PathBuf::from("policy.toml")),
            gpu_rim: vec![
                PathBuf::from("rims/driver.swidtag"),
                PathBuf::from("/abs/vbios.swidtag"),
            ],
            dangerous_trust_amd_ark: vec![PathBuf::from("ark.pem")],
            ..Default::default()
        };
        let mut collateral = CollateralArgs::default();
        anchor_policy(Path::new("/etc/cocoon"), &mut policy, &mut collateral);
        assert_eq!(
            policy.policy,
            Some(PathBuf::from("/etc/cocoon/policy.toml"))
        );
        assert_eq!(
            policy.gpu_rim,
            vec![
                PathBuf::from("/etc/cocoon/rims/driver.swidtag"),
                PathBuf::from("/abs/vbios.swidtag")
            ]
        );
        assert_eq!(
            policy.dangerous_trust_amd_ark,
            vec![PathBuf::from("/etc/cocoon/ark.pem")]
        );
    }
}
