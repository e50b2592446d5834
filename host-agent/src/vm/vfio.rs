//! Pre-flight for GPU passthrough: is each configured GPU ready for `vfio-pci`?
//!
//! QEMU's own failure here is late and vague (after memory is allocated, with an errno).
//! Worse, passing a device whose IOMMU group holds other devices would hand those to the
//! guest's domain too, or fail. So before launching, the agent reads sysfs and refuses,
//! naming the fix: the device exists, its driver is `vfio-pci`, its IOMMU group holds no
//! device that is not also being passed through (strict: bridges included, each listed),
//! and the group's `/dev/vfio/<group>` node exists. The roots are parameters so the tests
//! can build a fake tree.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Where sysfs and /dev are (`/sys`, `/dev` on a real host).
#[derive(Debug, Clone)]
pub struct HostPaths {
    pub sysfs: PathBuf,
    pub dev: PathBuf,
}

impl Default for HostPaths {
    fn default() -> Self {
        Self {
            sysfs: PathBuf::from("/sys"),
            dev: PathBuf::from("/dev"),
        }
    }
}

/// What the check found for one device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadyDevice {
    pub address: String,
    pub iommu_group: String,
}

/// Checks every device in `addresses`; the first problem is the error.
pub fn preflight(addresses: &[String], paths: &HostPaths) -> Result<Vec<ReadyDevice>> {
    addresses
        .iter()
        .map(|address| check_device(address, addresses, paths))
        .collect()
}

fn check_device(
    address: &str,
    passed_through: &[String],
    paths: &HostPaths,
) -> Result<ReadyDevice> {
    let fail = |message: String| Error::Vfio {
        address: address.to_string(),
        message,
    };
    let device = paths.sysfs.join("bus/pci/devices").join(address);
    if !device.exists() {
        return Err(fail(format!(
            "no such PCI device ({} does not exist)",
            device.display()
        )));
    }
    match link_name(&device.join("driver")) {
        Some(driver) if driver == "vfio-pci" => {}
        Some(driver) => {
            return Err(fail(format!(
                "bound to driver {driver:?}, not vfio-pci; unbind it and bind vfio-pci \
                 (e.g. driverctl set-override {address} vfio-pci)"
            )))
        }
        None => {
            return Err(fail(
                "bound to no driver; bind vfio-pci (e.g. driverctl set-override ADDRESS vfio-pci)"
                    .replace("ADDRESS", address),
            ))
        }
    }
    let group = link_name(&device.join("iommu_group")).ok_or_else(|| {
        fail("has no IOMMU group: is the IOMMU on (intel_iommu=on / amd_iommu=on)?".into())
    })?;
    let members = device.join("iommu_group/devices");
    let mut others: Vec<String> = std::fs::read_dir(&members)
        .map_err(|e| fail(format!("cannot list {}: {e}", members.display())))?
        .filter_map(|entry| entry.ok())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .filter(|member| member != address && !passed_through.contains(member))
        .collect();
    if !others.is_empty() {
        others.sort();
        return Err(fail(format!(
            "IOMMU group {group} also holds {}, which would go to the guest with it; \
             pass them through too, or move the GPU to a slot with its own group",
            others.join(", ")
        )));
    }
    let node = paths.dev.join("vfio").join(&group);
    if !node.exists() {
        return Err(fail(format!(
            "{} does not exist (is the vfio-pci module loaded?)",
            node.display()
        )));
    }
    Ok(ReadyDevice {
        address: address.to_string(),
        iommu_group: group,
    })
}

/// The last component of a symlink's target (`.../drivers/vfio-pci` → `vfio-pci`).
fn link_name(link: &Path) -> Option<String> {
    let target = std::fs::read_link(link).ok()?;
    Some(target.file_name()?.to_string_lossy().into_owned())
}

#[cfg(test)]
#[path = "vfio_tests.rs"]
mod tests;
