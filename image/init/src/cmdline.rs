//! What the measured kernel command line tells init.
//!
//! `cocoon.root=` and `cocoon.model=` give the dm-verity parameters of the root and
//! model disks ([`VeritySpec`]), `cocoon.model_path=` the model's path inside the model
//! disk, `cocoon.net=` the guest's address, and everything after `--` is passed to
//! `cocoon-guest` after the image's own flags. Since the command line is measured, so is
//! every one of these: a host that changes them changes the measurement a client checks.
//! Unknown `cocoon.*` keys are errors, not ignored, so a typo cannot silently drop a
//! setting.

use std::net::Ipv4Addr;

use crate::verity::VeritySpec;
use crate::{Error, Result};

/// The address QEMU's user-mode network gives the first guest.
pub const DEFAULT_ADDRESS: (Ipv4Addr, u8) = (Ipv4Addr::new(10, 0, 2, 15), 24);

/// The boot parameters init acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootParams {
    pub root: VeritySpec,
    pub model: Option<ModelDisk>,
    /// IPv4 address and prefix length of `eth0`.
    pub address: (Ipv4Addr, u8),
    /// Extra `cocoon-guest` flags (after `--`).
    pub guest_args: Vec<String>,
}

/// The model disk and where the model is on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelDisk {
    pub verity: VeritySpec,
    /// Relative path of the model file or directory inside the disk.
    pub path: String,
}

fn check_model_path(path: &str) -> Result<String> {
    let ok = !path.is_empty()
        && !path.starts_with('/')
        && path
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..")
        && path
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-/+".contains(&b));
    if ok {
        Ok(path.to_string())
    } else {
        Err(Error::Cmdline(format!(
            "cocoon.model_path={path}: must be a relative path of [A-Za-z0-9._+-] components"
        )))
    }
}

fn parse_address(value: &str) -> Result<(Ipv4Addr, u8)> {
    let bad = || Error::Cmdline(format!("cocoon.net={value}: expected IPV4/PREFIX"));
    let (ip, prefix) = value.split_once('/').ok_or_else(bad)?;
    let ip: Ipv4Addr = ip.parse().map_err(|_| bad())?;
    let prefix: u8 = prefix.parse().map_err(|_| bad())?;
    if !(1..=32).contains(&prefix) {
        return Err(bad());
    }
    Ok((ip, prefix))
}

impl BootParams {
    /// Parses the contents of `/proc/cmdline`.
    pub fn parse(cmdline: &str) -> Result<Self> {
        let mut words = cmdline.split_whitespace();
        let (mut root, mut model, mut model_path, mut address) = (None, None, None, None);
        for word in words.by_ref() {
            if word == "--" {
                break;
            }
            let Some(rest) = word.strip_prefix("cocoon.") else {
                continue;
            };
            let (key, value) = rest.split_once('=').ok_or_else(|| {
                Error::Cmdline(format!("{word}: cocoon.* parameters need a value"))
            })?;
            if value.contains('"') {
                return Err(Error::Cmdline(format!("{word}: quotes are not supported")));
            }
            let slot = match key {
                "root" => &mut root,
                "model" => &mut model,
                "model_path" => &mut model_path,
                "net" => &mut address,
                _ => {
                    return Err(Error::Cmdline(format!(
                        "unknown parameter cocoon.{key} (known: root, model, model_path, net)"
                    )))
                }
            };
            if slot.replace(value).is_some() {
                return Err(Error::Cmdline(format!("cocoon.{key} given twice")));
            }
        }
        let guest_args = words.map(str::to_string).collect();
        let root = VeritySpec::parse(
            "cocoon.root",
            root.ok_or_else(|| Error::Cmdline("cocoon.root= is missing".into()))?,
        )?;
        let model = match (model, model_path) {
            (Some(spec), Some(path)) => Some(ModelDisk {
                verity: VeritySpec::parse("cocoon.model", spec)?,
                path: check_model_path(path)?,
            }),
            (None, None) => None,
            _ => {
                return Err(Error::Cmdline(
                    "cocoon.model= and cocoon.model_path= go together".into(),
                ))
            }
        };
        let address = address
            .map(parse_address)
            .transpose()?
            .unwrap_or(DEFAULT_ADDRESS);
        Ok(Self {
            root,
            model,
            address,
            guest_args,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const R: &str = "4392712ba01368efdf14b05c76f9e4df0d53664630b5d48632ed17a137f39076";

    fn spec(blocks: u64) -> String {
        format!("{R},{R},{blocks},{blocks}")
    }

    #[test]
    fn a_full_command_line_parses() {
        let line = format!(
            "console=ttyS0 ro cocoon.root={} cocoon.model={} cocoon.model_path=m/x.gguf \
             cocoon.net=192.168.7.2/16 -- --san example.org --max-tokens 5\n",
            spec(10),
            spec(20)
        );
        let p = BootParams::parse(&line).unwrap();
        assert_eq!(p.root.data_blocks, 10);
        let model = p.model.unwrap();
        assert_eq!(model.verity.data_blocks, 20);
        assert_eq!(model.path, "m/x.gguf");
        assert_eq!(p.address, (Ipv4Addr::new(192, 168, 7, 2), 16));
        assert_eq!(p.guest_args, ["--san", "example.org", "--max-tokens", "5"]);
    }

    #[test]
    fn defaults_without_model_or_network() {
        let p = BootParams::parse(&format!("cocoon.root={}", spec(1))).unwrap();
        assert_eq!(p.model, None);
        assert_eq!(p.address, DEFAULT_ADDRESS);
        assert!(p.guest_args.is_empty());
    }

    #[test]
    fn mistakes_are_refused_with_the_reason() {
        let root = format!("cocoon.root={}", spec(1));
        for (line, needle) in [
            ("quiet".to_string(), "cocoon.root= is missing"),
            (
                format!("{root} cocoon.rot=1"),
                "unknown parameter cocoon.rot",
            ),
            (format!("{root} {root}"), "given twice"),
            (format!("{root} cocoon.model={}", spec(2)), "go together"),
            (
                format!("{root} cocoon.model={} cocoon.model_path=../x", spec(2)),
                "relative path",
            ),
            (format!("{root} cocoon.net=10.0.0.1"), "IPV4/PREFIX"),
            (format!("{root} cocoon.net=10.0.0.1/33"), "IPV4/PREFIX"),
            (format!("{root} cocoon.root"), "need a value"),
        ] {
            let err = BootParams::parse(&line).unwrap_err().to_string();
            assert!(err.contains(needle), "{line}: {err}");
        }
    }

    #[test]
    fn parameters_after_the_separator_belong_to_the_guest() {
        let p = BootParams::parse(&format!("cocoon.root={} -- cocoon.net=x", spec(1))).unwrap();
        assert_eq!(p.address, DEFAULT_ADDRESS);
        assert_eq!(p.guest_args, ["cocoon.net=x"]);
    }
}
